/**
 * The servers of the latency scenario: nginx as the API server, stallguard (child process) and
 * HAProxy (child process) in front of it, all on 127.0.0.1.
 *
 * A stallguard process that exits is recorded with its last output and replaced, so the remaining
 * runs still measure it and the result file shows every exit. nginx and HAProxy are the reference
 * paths, and the scenario fails when one of them exits.
 */
import path from 'node:path';
import { createTestPki } from '../testbed/pki.js';
import { ChildProcessError } from './errors.js';
import { joinPem } from './failover-testbed.js';
import { startHaproxy, type RunningHaproxy } from './haproxy.js';
import { startNginx, type RunningNginx } from './nginx.js';
import type { ProcessSupervisor } from './processes.js';
import { startStallguardProcess, type RunningStallguardProcess, type StallguardProcessOptions } from './stallguard-process.js';

export type LatencyPath = 'direct' | 'stallguard' | 'haproxy';

/** A stallguard process that exited while the scenario ran. */
export interface StallguardExit {
  /** The h2load run during or right after which the exit was noticed. */
  noticedAfter: string;
  exitCode: number | null;
  signal: string | null;
  /** The end of its stdout and stderr: the stack trace of a crash. */
  output: string;
}

// The end of a crash's output is the stack trace; the rest is log lines.
const EXIT_OUTPUT_LIMIT = 2000;

export class LatencyTestbed {
  readonly stallguardExits: StallguardExit[] = [];

  private constructor(
    private readonly supervisor: ProcessSupervisor,
    private readonly nginx: RunningNginx,
    private readonly haproxy: RunningHaproxy,
    private stallguard: RunningStallguardProcess,
    private readonly stallguardOptions: StallguardProcessOptions,
  ) {}

  /** Starts nginx serving `documents` (URL path → body), then stallguard and HAProxy in front of it. */
  static async start(
    supervisor: ProcessSupervisor,
    options: { dir: string; nginxBinary: string; haproxyBinary: string; documents: Record<string, string> },
  ): Promise<LatencyTestbed> {
    const pki = await createTestPki(path.join(options.dir, 'pki'));
    const nginx = await startNginx(supervisor, {
      binary: options.nginxBinary,
      dir: options.dir,
      certPath: pki.server.certPath,
      keyPath: pki.server.keyPath,
      documents: options.documents,
    });
    const stallguardOptions: StallguardProcessOptions = {
      dir: options.dir,
      certPath: pki.server.certPath,
      keyPath: pki.server.keyPath,
      caPath: pki.ca.certPath,
      endpoints: [`https://127.0.0.1:${nginx.port}`],
    };
    const stallguard = await startStallguardProcess(supervisor, stallguardOptions);
    const haproxy = await startHaproxy(supervisor, {
      binary: options.haproxyBinary,
      dir: options.dir,
      frontendPem: joinPem(pki.server.certPem, pki.server.keyPem),
      backend: { ports: [nginx.port], caPath: pki.ca.certPath },
      timeoutServerMs: 20_000,
    });
    return new LatencyTestbed(supervisor, nginx, haproxy, stallguard, stallguardOptions);
  }

  /** Returns the https origin (no path) of a path. */
  origin(pathName: LatencyPath): string {
    const port = { direct: this.nginx.port, stallguard: this.stallguard.port, haproxy: this.haproxy.port }[pathName];
    return `https://127.0.0.1:${port}`;
  }

  /**
   * Checks the servers after the h2load run `runName`: throws when nginx or HAProxy exited, and
   * records and replaces a stallguard that exited.
   */
  async checkAfter(runName: string): Promise<void> {
    for (const [server, instance] of [['nginx', this.nginx], ['haproxy', this.haproxy]] as const) {
      if (instance.process.running) continue;
      throw new ChildProcessError(server, `exited during ${runName}`, instance.process.output());
    }
    if (this.stallguard.process.running) return;

    const { record } = this.stallguard.process;
    const output = this.stallguard.process.output();
    this.stallguardExits.push({
      noticedAfter: runName,
      exitCode: record.exitCode,
      signal: record.signal,
      output: output.slice(Math.max(0, output.length - EXIT_OUTPUT_LIMIT)),
    });
    this.stallguard = await startStallguardProcess(this.supervisor, this.stallguardOptions);
  }

  async close(): Promise<void> {
    await this.haproxy.stop();
    await this.stallguard.stop();
    await this.nginx.stop();
  }
}
