/**
 * Starts and stops the benchmark's child processes (haproxy, nginx, h2load) and keeps a record of
 * each, so that a result file can show that every process it started has ended.
 *
 * Invariant: every child started here is either still in `running` or has an exit status in its
 * record. `stopAll()` ends the running ones (SIGTERM, then SIGKILL after a grace period), and
 * `killAllSync()` is the last resort for a process 'exit' handler, where nothing can be awaited.
 *
 * Each child leads its own process group and signals go to the whole group, because nginx's
 * master forks a worker that outlives a master killed with SIGKILL. A terminal's Ctrl-C then no
 * longer reaches the children directly; the runner's SIGINT handler stops them instead.
 * NOTE: a runner killed with SIGKILL cannot stop anything, so its children keep running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { ChildProcessError } from './errors.js';

/** The result file's record of one child process. */
export interface ProcessRecord {
  name: string;
  pid: number | undefined;
  command: string;
  args: string[];
  startedAt: string;
  /** Exit code, or null when a signal ended it or it is still running. */
  exitCode: number | null;
  signal: string | null;
  ended: boolean;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

// Keeps the end of a child's output for error messages; haproxy and nginx print little.
const OUTPUT_LIMIT_BYTES = 16 * 1024;

export class ManagedProcess {
  readonly record: ProcessRecord;
  readonly exited: Promise<ExitStatus>;
  #stdout = '';
  #stderr = '';
  /** True once stop() sent the final SIGKILL to the group after the leader exited. */
  #swept = false;

  constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    command: string,
    args: string[],
  ) {
    this.record = {
      name,
      pid: child.pid,
      command,
      args,
      startedAt: new Date().toISOString(),
      exitCode: null,
      signal: null,
      ended: false,
    };

    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (this.#stdout = keepTail(this.#stdout + chunk)));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.#stderr = keepTail(this.#stderr + chunk)));

    this.exited = new Promise((resolve) => {
      child.once('error', (err) => {
        // spawn failed (ENOENT, EACCES): no 'exit' follows.
        this.#stderr = keepTail(`${this.#stderr}${err.message}\n`);
        this.markEnded(null, null);
        resolve({ code: null, signal: null });
      });
      child.once('exit', (code, signal) => {
        this.markEnded(code, signal);
        resolve({ code, signal });
      });
    });
  }

  get running(): boolean {
    return !this.record.ended;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The retained stdout (its last 16 KiB). */
  get stdout(): string {
    return this.#stdout;
  }

  /** Returns the retained stdout and stderr, for error messages. */
  output(): string {
    return `${this.#stdout}${this.#stderr}`;
  }

  /**
   * Sends SIGTERM to the process group, then SIGKILL if the leader is still running after
   * `graceMs`, and finally SIGKILL to whatever is left of the group.
   */
  async stop(graceMs = 3000): Promise<void> {
    if (this.#swept) return;
    if (this.running) {
      this.#signalGroup('SIGTERM');
      const timer = setTimeout(() => {
        if (this.running) this.#signalGroup('SIGKILL');
      }, graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    // The group id cannot be reused while a member is alive, so this reaches only our leftovers.
    this.#signalGroup('SIGKILL');
    this.#swept = true;
  }

  /** Sends SIGKILL to the process group of a running leader without waiting; for exit handlers. */
  killNow(): void {
    if (this.running) this.#signalGroup('SIGKILL');
  }

  #signalGroup(signal: NodeJS.Signals): void {
    if (this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, signal);
    } catch (err) {
      // ESRCH: the group has no member left.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  private markEnded(code: number | null, signal: NodeJS.Signals | null): void {
    this.record.exitCode = code;
    this.record.signal = signal;
    this.record.ended = true;
  }
}

export class ProcessSupervisor {
  readonly #processes: ManagedProcess[] = [];

  constructor(private readonly log: Logger) {}

  /** Every process started so far, in start order, with its exit status when it ended. */
  get records(): ProcessRecord[] {
    return this.#processes.map((managed) => ({ ...managed.record }));
  }

  get running(): ManagedProcess[] {
    return this.#processes.filter((managed) => managed.running);
  }

  /** Starts a long-running process with stdin closed and its output retained. */
  start(name: string, command: string, args: string[], options: { cwd?: string } = {}): ManagedProcess {
    const child = spawn(command, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const managed = new ManagedProcess(name, child, command, args);
    this.#processes.push(managed);

    // Arguments are paths and counts, never secrets, so they are logged whole.
    this.log.info({ process: name, pid: child.pid, command, args }, 'child process started');
    void managed.exited.then((status) => this.log.info({ process: name, pid: child.pid, ...status }, 'child process ended'));
    return managed;
  }

  /**
   * Runs a process to completion and returns its stdout; rejects with ChildProcessError on a
   * non-zero exit, and kills the process when `signal` aborts.
   */
  async run(name: string, command: string, args: string[], signal?: AbortSignal): Promise<string> {
    const managed = this.start(name, command, args);
    const onAbort = () => void managed.stop(1000);
    signal?.addEventListener('abort', onAbort, { once: true });

    try {
      const status = await managed.exited;
      if (status.code !== 0) {
        throw new ChildProcessError(name, describeExit(status), managed.output());
      }
      return managed.stdout;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      await managed.stop();
    }
  }

  /** Stops every process group started here and waits until each leader has exited. */
  async stopAll(graceMs = 3000): Promise<void> {
    await Promise.all(this.#processes.map((managed) => managed.stop(graceMs)));
  }

  /** SIGKILLs the process group of every process started, synchronously; for a process 'exit' handler. */
  killAllSync(): void {
    for (const managed of this.#processes) managed.killNow();
  }
}

function keepTail(text: string): string {
  return text.length > OUTPUT_LIMIT_BYTES ? text.slice(text.length - OUTPUT_LIMIT_BYTES) : text;
}

function describeExit(status: ExitStatus): string {
  if (status.signal !== null) return `was ended by ${status.signal}`;
  if (status.code === null) return 'could not be started';
  return `exited with status ${status.code}`;
}
