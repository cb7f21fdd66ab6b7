/**
 * Memory and CPU time of a running process from Linux's /proc: VmRSS and VmHWM from
 * /proc/<pid>/status, and utime + stime from /proc/<pid>/stat (see proc(5)).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface ProcessUsage {
  /** Resident set size, KiB. */
  rssKiB: number;
  /** Peak resident set size so far, KiB. */
  peakRssKiB: number;
  /** User plus system CPU time so far, in ms. */
  cpuMs: number;
}

let clockTicksPerSecond: number | undefined;

/** Returns the kernel's clock ticks per second (the unit of utime and stime), from `getconf CLK_TCK`. */
export function clockTicks(): number {
  if (clockTicksPerSecond === undefined) {
    const result = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 });
    const value = Number(result.stdout?.trim());
    // 100 is the value on every Linux architecture that Node.js supports, used when getconf fails.
    clockTicksPerSecond = Number.isInteger(value) && value > 0 ? value : 100;
  }
  return clockTicksPerSecond;
}

export function readProcessUsage(pid: number): ProcessUsage {
  const status = parseProcStatus(readFileSync(`/proc/${pid}/status`, 'utf8'));
  const ticks = parseProcStatTicks(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  return { rssKiB: status.rssKiB, peakRssKiB: status.peakRssKiB, cpuMs: (ticks / clockTicks()) * 1000 };
}

/** Reads VmRSS and VmHWM (in kB, which the kernel means as KiB) from /proc/<pid>/status. */
export function parseProcStatus(text: string): { rssKiB: number; peakRssKiB: number } {
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text);
    if (match === null) throw new Error(`/proc status has no ${name} line`);
    return Number(match[1]);
  };
  return { rssKiB: field('VmRSS'), peakRssKiB: field('VmHWM') };
}

/**
 * Returns utime + stime in clock ticks from /proc/<pid>/stat. The command name (field 2) is in
 * parentheses and may contain spaces, so the fields are counted from the last ")": utime and
 * stime are fields 14 and 15.
 */
export function parseProcStatTicks(text: string): number {
  const end = text.lastIndexOf(')');
  if (end === -1) throw new Error('/proc stat has no command name in parentheses');

  const fields = text.slice(end + 2).trim().split(/\s+/);
  // fields[0] is field 3 (state), so field n is fields[n - 3].
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isInteger(utime) || !Number.isInteger(stime)) throw new Error(`/proc stat has no utime and stime: ${text.slice(0, 200)}`);
  return utime + stime;
}
