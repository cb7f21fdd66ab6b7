/**
 * nginx as a fast stand-in API server for the latency scenario: it serves fixed JSON documents
 * over HTTP/2 and TLS from one worker process, so the proxies in front of it, not the backend,
 * set the figures. It runs in the foreground as a child process and listens on 127.0.0.1 only.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ChildProcessError } from './errors.js';
import { reserveLoopbackPort, waitForListener } from './ports.js';
import type { ManagedProcess, ProcessSupervisor } from './processes.js';

export interface NginxOptions {
  binary: string;
  /** Directory for the configuration, pid file, temp paths and documents. */
  dir: string;
  certPath: string;
  keyPath: string;
  /** URL path → JSON body. */
  documents: Record<string, string>;
}

export interface RunningNginx {
  port: number;
  process: ManagedProcess;
  stop(): Promise<void>;
}

/**
 * Renders nginx.conf. keepalive_requests is raised from nginx's default of 1000, after which it
 * sends GOAWAY, so that long runs measure the proxies rather than reconnects.
 */
export function renderNginxConfig(options: NginxOptions, port: number): string {
  const prefix = options.dir;
  return [
    'worker_processes 1;',
    'daemon off;',
    `pid ${path.join(prefix, 'nginx.pid')};`,
    'error_log stderr warn;',
    'events { worker_connections 1024; }',
    'http {',
    '  access_log off;',
    `  client_body_temp_path ${path.join(prefix, 'client_body')};`,
    `  proxy_temp_path ${path.join(prefix, 'proxy')};`,
    `  fastcgi_temp_path ${path.join(prefix, 'fastcgi')};`,
    `  uwsgi_temp_path ${path.join(prefix, 'uwsgi')};`,
    `  scgi_temp_path ${path.join(prefix, 'scgi')};`,
    '  keepalive_requests 10000000;',
    '  keepalive_timeout 300s;',
    '  server {',
    `    listen 127.0.0.1:${port} ssl http2;`,
    `    ssl_certificate ${options.certPath};`,
    `    ssl_certificate_key ${options.keyPath};`,
    '    default_type application/json;',
    `    location / { root ${path.join(prefix, 'www')}; }`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** Writes the documents and the configuration, starts nginx and resolves once it listens. */
export async function startNginx(supervisor: ProcessSupervisor, options: NginxOptions): Promise<RunningNginx> {
  const port = await reserveLoopbackPort();
  writeDocuments(options);
  const configPath = path.join(options.dir, 'nginx.conf');
  writeFileSync(configPath, renderNginxConfig(options, port));

  // -e stderr keeps nginx from opening its compiled-in error log before it reads the configuration.
  const process = supervisor.start('nginx', options.binary, ['-e', 'stderr', '-p', options.dir, '-c', configPath]);
  try {
    await waitForListener(port, 5000, () => !process.running);
  } catch (err) {
    await process.stop();
    throw new ChildProcessError('nginx', (err as Error).message, process.output());
  }
  return { port, process, stop: () => process.stop() };
}

/**
 * Writes the documents world-readable: when the benchmark runs as root, nginx's worker runs as
 * an unprivileged user and must still read them and traverse the temporary directory.
 */
function writeDocuments(options: NginxOptions): void {
  const root = path.join(options.dir, 'www');
  chmodSync(options.dir, 0o755);
  for (const [urlPath, body] of Object.entries(options.documents)) {
    const file = path.join(root, ...urlPath.split('/').filter((segment) => segment !== ''));
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
    writeFileSync(file, body, { mode: 0o644 });
  }
}
