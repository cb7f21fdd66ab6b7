/**
 * stallguard as a child process, started from the built CLI (`stallguard run`), so that it has an
 * event loop of its own and a crash ends only that process. The latency scenario uses it, because
 * h2load's load would otherwise be shared with the runner's own event loop.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChildProcessError } from './errors.js';
import { reserveLoopbackPort, waitForListener } from './ports.js';
import type { ManagedProcess, ProcessSupervisor } from './processes.js';

export interface StallguardProcessOptions {
  /** Directory for stallguard's state. */
  dir: string;
  certPath: string;
  keyPath: string;
  /** CA of client certificates on the listener and of the API server's certificate. */
  caPath: string;
  endpoints: string[];
}

export interface RunningStallguardProcess {
  port: number;
  process: ManagedProcess;
  stop(): Promise<void>;
}

// dist/bench/ and dist/cli/ are siblings, so this resolves in the build; the runner always runs from dist.
const CLI_PATH = fileURLToPath(new URL('../cli/main.js', import.meta.url));

export async function startStallguardProcess(supervisor: ProcessSupervisor, options: StallguardProcessOptions): Promise<RunningStallguardProcess> {
  const port = await reserveLoopbackPort();
  const metricsPort = await reserveLoopbackPort();
  const args = [
    CLI_PATH,
    'run',
    `--listen-address=127.0.0.1:${port}`,
    `--listen-tls-cert=${options.certPath}`,
    `--listen-tls-key=${options.keyPath}`,
    `--listen-tls-client-ca=${options.caPath}`,
    `--upstream-endpoints=${options.endpoints.join(',')}`,
    `--upstream-tls-ca=${options.caPath}`,
    `--metrics-address=127.0.0.1:${metricsPort}`,
    `--state-dir=${path.join(options.dir, 'stallguard-state')}`,
    '--log-level=warn',
  ];

  const child = supervisor.start('stallguard', process.execPath, args);
  try {
    await waitForListener(port, 10_000, () => !child.running);
  } catch (err) {
    await child.stop();
    throw new ChildProcessError('stallguard', (err as Error).message, child.output());
  }
  // SIGTERM starts a drain of at most shutdown.drainTimeout (10 s by default) before the exit.
  return { port, process: child, stop: () => child.stop(12_000) };
}
