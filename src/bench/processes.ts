/**
 * Starts and stops the benchmark's child processes (haproxy, nginx, h2load) and keeps a record of
 * each, so that a result file can show that every process it started has ended.
 *
 * Invariant: every child started here is either still in `running` or has an exit status in its
 * record. `stopAll()` ends the running ones (SIGTERM, then SIGKILL after a grace period), and
 * `killAllSync()` is the last resort for a process 'exit' handler, where nothing can be awaited.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { ChildProcessError } from './errors.js';

/** What the result file records about one child process. */
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

  /** The retained stdout and stderr, for error messages. */
  output(): string {
    return `${this.#stdout}${this.#stderr}`;
  }

  /** Sends SIGTERM, then SIGKILL if the process is still running after `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    if (!this.running) return;

    this.child.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (this.running) this.child.kill('SIGKILL');
    }, graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Sends SIGKILL without waiting; for exit handlers. */
  killNow(): void {
    if (this.running) this.child.kill('SIGKILL');
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
    return this.#processes.map((process) => ({ ...process.record }));
  }

  get running(): ManagedProcess[] {
    return this.#processes.filter((process) => process.running);
  }

  /** Starts a long-running process with stdin closed and its output retained. */
  start(name: string, command: string, args: string[], options: { cwd?: string } = {}): ManagedProcess {
    const child = spawn(command, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const process = new ManagedProcess(name, child, command, args);
    this.#processes.push(process);

    this.log.info({ process: name, pid: child.pid, command }, 'child process started');
    void process.exited.then((status) => this.log.info({ process: name, pid: child.pid, ...status }, 'child process ended'));
    return process;
  }

  /**
   * Runs a process to completion and returns its stdout; rejects with ChildProcessError on a
   * non-zero exit, and kills the process when `signal` aborts.
   */
  async run(name: string, command: string, args: string[], signal?: AbortSignal): Promise<string> {
    const process = this.start(name, command, args);
    const onAbort = () => void process.stop(1000);
    signal?.addEventListener('abort', onAbort, { once: true });

    try {
      const status = await process.exited;
      if (status.code !== 0) {
        const how = status.signal !== null ? `was ended by ${status.signal}` : status.code === null ? 'could not be started' : `exited with status ${status.code}`;
        throw new ChildProcessError(name, how, process.output());
      }
      return process.stdout;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Stops every running process and waits until each has exited. */
  async stopAll(graceMs = 3000): Promise<void> {
    await Promise.all(this.running.map((process) => process.stop(graceMs)));
  }

  /** SIGKILLs every running process synchronously; for a process 'exit' handler. */
  killAllSync(): void {
    for (const process of this.running) process.killNow();
  }
}

function keepTail(text: string): string {
  return text.length > OUTPUT_LIMIT_BYTES ? text.slice(text.length - OUTPUT_LIMIT_BYTES) : text;
}
