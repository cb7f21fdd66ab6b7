/**
 * Runs h2load (nghttp2's HTTP/2 load generator) against one URL and reads its figures. The totals
 * come from the summary lines of its output. Per-request latencies come from its --log-file,
 * which has one tab-separated line per request: start time (µs since the epoch), status and
 * duration (µs).
 */
import { readFileSync, rmSync } from 'node:fs';
import { ChildProcessError } from './errors.js';
import type { ProcessSupervisor } from './processes.js';
import { percentile } from './stats.js';

export interface H2loadOptions {
  binary: string;
  url: string;
  requests: number;
  /** Concurrent connections (-c). */
  clients: number;
  /** Maximum concurrent streams per connection (-m). */
  streams: number;
  headers: Record<string, string>;
  /** Path of h2load's per-request log; removed after reading. */
  logFile: string;
  /** Name of the process record. */
  name: string;
}

export interface H2loadCounts {
  total: number;
  started: number;
  done: number;
  succeeded: number;
  failed: number;
  errored: number;
  timeout: number;
}

export interface H2loadResult {
  counts: H2loadCounts;
  status: { '2xx': number; '3xx': number; '4xx': number; '5xx': number };
  durationS: number;
  requestsPerSecond: number;
  latencyMs: { p50: number | undefined; p99: number | undefined; max: number | undefined };
}

export async function runH2load(supervisor: ProcessSupervisor, options: H2loadOptions, signal?: AbortSignal): Promise<H2loadResult> {
  const headerArgs = Object.entries(options.headers).flatMap(([name, value]) => ['-H', `${name}: ${value}`]);
  const args = [
    '-n', String(options.requests),
    '-c', String(options.clients),
    '-m', String(options.streams),
    '-t', '1',
    `--log-file=${options.logFile}`,
    ...headerArgs,
    options.url,
  ];

  const stdout = await supervisor.run(options.name, options.binary, args, signal);
  try {
    const summary = parseH2loadOutput(stdout);
    const durationsUs = parseH2loadLog(readFileSync(options.logFile, 'utf8'));
    const toMs = (us: number | undefined) => (us === undefined ? undefined : Math.round(us) / 1000);
    return {
      ...summary,
      latencyMs: { p50: toMs(percentile(durationsUs, 50)), p99: toMs(percentile(durationsUs, 99)), max: toMs(Math.max(...durationsUs)) },
    };
  } catch (err) {
    throw new ChildProcessError(options.name, `its output could not be read: ${(err as Error).message}`, stdout);
  } finally {
    rmSync(options.logFile, { force: true });
  }
}

/** Reads the "finished in", "requests:" and "status codes:" lines of h2load's output. */
export function parseH2loadOutput(stdout: string): Omit<H2loadResult, 'latencyMs'> {
  const finished = /finished in ([\d.]+)(ms|s), ([\d.]+) req\/s/.exec(stdout);
  const requests = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(stdout);
  const status = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  if (finished === null || requests === null || status === null) {
    throw new Error('the "finished in", "requests:" or "status codes:" line is missing');
  }

  const [total, started, done, succeeded, failed, errored, timeout] = requests.slice(1).map(Number) as [number, number, number, number, number, number, number];
  return {
    counts: { total, started, done, succeeded, failed, errored, timeout },
    status: { '2xx': Number(status[1]), '3xx': Number(status[2]), '4xx': Number(status[3]), '5xx': Number(status[4]) },
    durationS: Number(finished[1]) / (finished[2] === 'ms' ? 1000 : 1),
    requestsPerSecond: Number(finished[3]),
  };
}

/** Returns the duration column (µs) of every line of an h2load --log-file. */
export function parseH2loadLog(text: string): number[] {
  const durations: number[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;

    const columns = line.split('\t');
    const duration = Number(columns[2]);
    if (columns.length < 3 || !Number.isFinite(duration)) throw new Error(`invalid h2load log line ${JSON.stringify(line)}`);
    durations.push(duration);
  }
  return durations;
}
