/**
 * stallguard as a child process, started from the built CLI (`stallguard run --config FILE`), so
 * that it has an event loop of its own, a crash ends only that process, and /proc shows its own
 * memory and CPU time. The latency, footprint and scale scenarios and the profile command use it.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChildProcessError } from './errors.js';
import { reserveLoopbackPort, waitForListener } from './ports.js';
import type { ManagedProcess, ProcessSupervisor } from './processes.js';

export interface StallguardProcessOptions {
  /** Directory for stallguard's configuration file and state. */
  dir: string;
  certPath: string;
  keyPath: string;
  /** CA of client certificates on the listener and of the API server's certificate. */
  caPath: string;
  endpoints: string[];
  /** Client certificate and key stallguard presents upstream; none unless given. */
  upstreamClient?: { certPath: string; keyPath: string };
  /** Node.js options placed before the script, such as --cpu-prof. */
  nodeArgs?: string[];
  /** Name of the process record; "stallguard" unless given. */
  name?: string;
}

export interface RunningStallguardProcess {
  port: number;
  metricsPort: number;
  /** The configuration file the process was started with. */
  configPath: string;
  process: ManagedProcess;
  stop(): Promise<void>;
}

// dist/bench/ and dist/cli/ are siblings, so this resolves in the build; the runner always runs from dist.
const CLI_PATH = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/**
 * Writes a JSON configuration with stallguard's defaults for everything but addresses and
 * certificates, starts `stallguard run --config FILE` and resolves once it listens.
 */
export async function startStallguardProcess(supervisor: ProcessSupervisor, options: StallguardProcessOptions): Promise<RunningStallguardProcess> {
  const port = await reserveLoopbackPort();
  const metricsPort = await reserveLoopbackPort();
  const name = options.name ?? 'stallguard';
  const configPath = path.join(options.dir, `${name}.json`);
  writeFileSync(configPath, `${JSON.stringify(renderStallguardConfig(options, port, metricsPort), null, 2)}\n`);

  const child = supervisor.start(name, process.execPath, [...(options.nodeArgs ?? []), CLI_PATH, 'run', '--config', configPath]);
  try {
    await waitForListener(port, 10_000, () => !child.running);
  } catch (err) {
    await child.stop();
    throw new ChildProcessError(name, (err as Error).message, child.output());
  }
  // SIGTERM starts a drain of at most shutdown.drainTimeout (10 s by default) before the exit.
  return { port, metricsPort, configPath, process: child, stop: () => child.stop(12_000) };
}

/** The configuration file's content: loopback listeners, the test PKI, defaults otherwise. */
export function renderStallguardConfig(options: StallguardProcessOptions, port: number, metricsPort: number): object {
  const upstreamTls: Record<string, string> = { ca: options.caPath };
  if (options.upstreamClient !== undefined) {
    upstreamTls.cert = options.upstreamClient.certPath;
    upstreamTls.key = options.upstreamClient.keyPath;
  }

  return {
    listen: {
      address: `127.0.0.1:${port}`,
      tls: { cert: options.certPath, key: options.keyPath, clientCA: options.caPath },
    },
    upstream: { endpoints: options.endpoints, tls: upstreamTls },
    metrics: { address: `127.0.0.1:${metricsPort}` },
    log: { level: 'warn' },
    stateDir: path.join(options.dir, `${options.name ?? 'stallguard'}-state`),
  };
}
