/**
 * HAProxy as the comparison proxy: it terminates the client's TLS (h2) and sends every request to
 * one of its backend servers over TLS (h2), round robin, as an HTTP/2-aware load balancer on the
 * node would. It runs as a child process in the foreground (-db), listens on 127.0.0.1 only, and
 * reports its backend servers' states through a stats socket in the run's temporary directory.
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ChildProcessError } from './errors.js';
import { reserveLoopbackPort, waitForListener } from './ports.js';
import type { ManagedProcess, ProcessSupervisor } from './processes.js';
import { sleep } from './abort.js';

export interface HaproxyOptions {
  binary: string;
  /** Directory for the configuration, the frontend PEM and the stats socket. */
  dir: string;
  /** Frontend certificate chain followed by its key, PEM. */
  frontendPem: string;
  backend: {
    /** One backend server per port, named "api" when there is one and "api1", "api2", ... otherwise. */
    ports: number[];
    /** CA bundle that verifies the backend's certificate. */
    caPath: string;
    /** Client certificate and key in one PEM file, presented to the backend. */
    clientPemPath?: string;
  };
  /** `timeout server`: how long HAProxy waits for the backend's response to one request. */
  timeoutServerMs: number;
  /** Name of the process record, to distinguish several instances. */
  name?: string;
}

/** One backend server as `show stat` reports it. */
export interface HaproxyServerStat {
  /** UP, DOWN, MAINT, or a transition such as "UP 1/2". */
  status: string;
  /** Result of the last health check, e.g. L6OK (TLS handshake passed) or L4TOUT. */
  checkStatus: string;
  /** Failed health checks so far. */
  checkFailures: number;
  /** Number of UP to DOWN transitions so far. */
  checkDowns: number;
  /** Requests sent to the server so far. */
  sessionsTotal: number;
  /** Responses with a 5xx status, HAProxy's own 502/503/504 included. */
  responses5xx: number;
}

export interface RunningHaproxy {
  port: number;
  process: ManagedProcess;
  configPath: string;
  /** Backend server names, in the order of `backend.ports`. */
  serverNames: string[];
  /** Returns the state of one backend server; the first one unless named. */
  serverStat(server?: string): Promise<HaproxyServerStat>;
  stop(): Promise<void>;
}

/** Returns the backend server names for `count` servers. */
export function haproxyServerNames(count: number): string[] {
  return count === 1 ? ['api'] : Array.from({ length: count }, (_, index) => `api${index + 1}`);
}

/**
 * Renders haproxy.cfg. The server line is the one an operator would write for API servers. It
 * verifies TLS and offers ALPN h2. Its health check runs every second and marks the server down
 * after two failures and up after one success. `on-marked-down shutdown-sessions` makes marking it
 * down also close the connections it holds.
 */
export function renderHaproxyConfig(options: HaproxyOptions, frontendPort: number): string {
  const { backend } = options;
  if (backend.ports.length === 0) throw new RangeError('HAProxy needs at least one backend port');
  const clientCert = backend.clientPemPath !== undefined ? ` crt ${backend.clientPemPath}` : '';
  const names = haproxyServerNames(backend.ports.length);
  return [
    'global',
    // One thread, as stallguard has one event loop: the latency scenario compares one core each.
    '  nbthread 1',
    `  stats socket ${path.join(options.dir, 'haproxy.sock')} mode 600 level admin`,
    '',
    'defaults',
    '  mode http',
    '  timeout connect 2s',
    '  timeout client 120s',
    `  timeout server ${options.timeoutServerMs}ms`,
    '  timeout http-keep-alive 120s',
    '',
    'frontend kubelet',
    `  bind 127.0.0.1:${frontendPort} ssl crt ${path.join(options.dir, 'frontend.pem')} alpn h2,http/1.1`,
    '  default_backend apiserver',
    '',
    'backend apiserver',
    ...backend.ports.map(
      (port, index) =>
        `  server ${names[index]} 127.0.0.1:${port} ssl verify required ca-file ${backend.caPath}${clientCert} alpn h2 check inter 1s fall 2 rise 1 on-marked-down shutdown-sessions`,
    ),
    '',
  ].join('\n');
}

/** Starts HAProxy and resolves once it listens and its health checks have marked every server UP. */
export async function startHaproxy(supervisor: ProcessSupervisor, options: HaproxyOptions): Promise<RunningHaproxy> {
  const port = await reserveLoopbackPort();
  const configPath = path.join(options.dir, 'haproxy.cfg');
  writeFileSync(path.join(options.dir, 'frontend.pem'), options.frontendPem, { mode: 0o600 });
  writeFileSync(configPath, renderHaproxyConfig(options, port));

  const name = options.name ?? 'haproxy';
  const process = supervisor.start(name, options.binary, ['-db', '-f', configPath]);
  const socketPath = path.join(options.dir, 'haproxy.sock');
  const serverNames = haproxyServerNames(options.backend.ports.length);
  const serverStat = (server = serverNames[0]!) => readServerStat(socketPath, server);

  try {
    await waitForListener(port, 5000, () => !process.running);
    await waitForServersUp(serverStat, serverNames, 5000);
  } catch (err) {
    await process.stop();
    throw new ChildProcessError(name, (err as Error).message, process.output());
  }

  return { port, process, configPath, serverNames, serverStat, stop: () => process.stop() };
}

/** Polls the stats socket until every server is UP; the socket itself may appear a moment after the listener. */
export async function waitForServersUp(serverStat: (server: string) => Promise<HaproxyServerStat>, serverNames: readonly string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer from the stats socket';
  while (Date.now() < deadline) {
    try {
      const stats = await Promise.all(serverNames.map((server) => serverStat(server)));
      const down = stats.map((stat, index) => ({ server: serverNames[index]!, stat })).filter((entry) => entry.stat.status !== 'UP');
      if (down.length === 0) return;
      last = down.map((entry) => `${entry.server}: status ${entry.stat.status}, check ${entry.stat.checkStatus}`).join('; ');
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`the backend servers were not all UP within ${timeoutMs}ms (last: ${last})`);
}

/** Sends `show stat` to the stats socket and returns the row of one server of backend "apiserver". */
export async function readServerStat(socketPath: string, server = 'api'): Promise<HaproxyServerStat> {
  const csv = await statsCommand(socketPath, 'show stat');
  const row = parseShowStat(csv).find((entry) => entry.pxname === 'apiserver' && entry.svname === server);
  if (row === undefined) throw new Error(`show stat on ${socketPath} has no row for server apiserver/${server}`);

  return {
    status: row.status ?? '',
    checkStatus: row.check_status ?? '',
    checkFailures: Number(row.chkfail ?? 0),
    checkDowns: Number(row.chkdown ?? 0),
    sessionsTotal: Number(row.stot ?? 0),
    responses5xx: Number(row.hrsp_5xx ?? 0),
  };
}

/** Parses `show stat` CSV (a "# name,name,..." header, then one row per proxy or server) into objects. */
export function parseShowStat(csv: string): Array<Record<string, string>> {
  const lines = csv.split('\n').filter((line) => line.trim() !== '');
  const header = lines.find((line) => line.startsWith('# '));
  if (header === undefined) return [];

  const names = header.slice(2).split(',');
  return lines
    .filter((line) => !line.startsWith('#'))
    .map((line) => {
      const values = line.split(',');
      return Object.fromEntries(names.map((name, i) => [name, values[i] ?? '']));
    });
}

function statsCommand(socketPath: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: socketPath });
    let output = '';
    socket.setEncoding('utf8');
    socket.setTimeout(2000, () => socket.destroy(new Error(`stats socket ${socketPath} sent no response to "${command}" within 2000ms`)));
    socket.on('data', (chunk: string) => (output += chunk));
    socket.once('error', reject);
    socket.once('close', () => resolve(output));
    socket.once('connect', () => socket.end(`${command}\n`));
  });
}
