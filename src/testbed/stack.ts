import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import type { Config } from '../config/types.js';
import { startStallguard, type RunningStallguard } from '../server.js';
import { FakeApiServer } from './fake-apiserver.js';
import { FaultRelay } from './fault-relay.js';
import { createTestPki, type TestPki } from './pki.js';
import { ReplicatedStores } from './replicated-store.js';

/** A partial configuration: any subset of keys, nested. */
export type ConfigOverrides = DeepPartial<Config>;

type DeepPartial<T> = { [K in keyof T]?: T[K] extends readonly unknown[] ? T[K] : T[K] extends object ? DeepPartial<T[K]> : T[K] };

export interface StackOptions {
  /** Fake API-server replicas (default 1). */
  replicas?: number;
  /**
   * How stallguard reaches the replicas: `relays` puts one fault relay in front of each replica and
   * lists the relays as endpoints (default); `balancer` puts one relay in front of replica 0 and
   * lists only it, as a load balancer; `direct` lists the replicas themselves.
   */
  topology?: 'relays' | 'balancer' | 'direct';
  config?: ConfigOverrides;
  tokens?: Record<string, { name: string; groups?: string[] }>;
  maxConcurrentStreams?: number;
  /** Share state between the replicas, as etcd does for real ones (default false). */
  replicate?: boolean;
  /** How often stallguard re-reads its TLS files, in ms (its default is 5 s). */
  tlsPollIntervalMs?: number;
  /** The logger stallguard writes to; silent unless given. */
  logger?: Logger;
}

export interface Stack {
  dir: string;
  pki: TestPki;
  servers: FakeApiServer[];
  relays: FaultRelay[];
  stallguard: RunningStallguard;
  config: Config;
  /** https://host:port of stallguard's TLS listener. */
  url: string;
  /** TLS options for a client that verifies stallguard and presents the node certificate. */
  clientTls: { ca: string; cert: string; key: string };
  close(): Promise<void>;
}

/**
 * Starts fake API servers, optional fault relays and an in-process stallguard in front of them, all
 * on 127.0.0.1 with ports chosen by the kernel. stallguard serves with a certificate from the test
 * CA, so one CA verifies both sides.
 */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-stack-'));
  const pki = await createTestPki(path.join(dir, 'pki'));

  const servers: FakeApiServer[] = [];
  for (let i = 0; i < (options.replicas ?? 1); i++) {
    const server = new FakeApiServer({
      cert: pki.server.certPem,
      key: pki.server.keyPem,
      clientCa: pki.ca.certPem,
      tokens: options.tokens,
      maxConcurrentStreams: options.maxConcurrentStreams,
    });
    await server.listen(0, '127.0.0.1');
    servers.push(server);
  }

  const replication = options.replicate === true ? new ReplicatedStores(servers.map((server) => server.store)) : undefined;

  const topology = options.topology ?? 'relays';
  const relays: FaultRelay[] = [];
  if (topology === 'relays' || topology === 'balancer') {
    const targets = topology === 'relays' ? servers : servers.slice(0, 1);
    for (const server of targets) {
      const relay = new FaultRelay({ target: { host: '127.0.0.1', port: server.port } });
      await relay.listen(0);
      relays.push(relay);
    }
  }

  const endpoints = topology === 'direct' ? servers.map((server) => server.url) : relays.map((relay) => `https://127.0.0.1:${relay.port}`);
  const config = buildConfig(dir, pki, endpoints, options.config ?? {});
  const logger = options.logger ?? pino({ level: 'silent' });
  const stallguard = await startStallguard(config, logger, { tlsPollIntervalMs: options.tlsPollIntervalMs });

  return {
    dir,
    pki,
    servers,
    relays,
    stallguard,
    config,
    url: `https://${stallguard.addresses.listen}`,
    clientTls: { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem },
    async close() {
      await stallguard.close();
      await Promise.all(relays.map((relay) => relay.close()));
      replication?.stop();
      await Promise.all(servers.map((server) => server.close()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Builds the configuration contract's defaults, pointed at test files and ephemeral ports. */
export function buildConfig(dir: string, pki: TestPki, endpoints: string[], overrides: ConfigOverrides): Config {
  const base: Config = {
    mode: 'http2',
    listen: {
      address: '127.0.0.1:0',
      allowRemote: false,
      allowAnonymous: false,
      tls: { cert: pki.server.certPath, key: pki.server.keyPath, clientCA: pki.ca.certPath },
      plaintext: '',
    },
    upstream: {
      endpoints,
      fallback: [],
      discovery: 'none',
      resolveIntervalMs: 30_000,
      tls: { ca: pki.ca.certPath, cert: pki.node.certPath, key: pki.node.keyPath, serverName: '', insecureSkipVerify: false, expiryWarningMs: 72 * 3_600_000 },
      identity: 'static',
      frontProxy: { usernameHeader: 'X-Remote-User', groupHeader: 'X-Remote-Group', extraHeaderPrefix: 'X-Remote-Extra-' },
      connectTimeoutMs: 2000,
      reconnectBackoff: { baseMs: 250, maxMs: 5000 },
      maxSessionsPerEndpoint: 8,
      warmEndpoints: 2,
    },
    health: {
      pingIntervalMs: 1000,
      pingTimeoutMs: 1000,
      writeFreshnessMs: 250,
      readyPath: '/readyz',
      readyIntervalMs: 10_000,
      ejectionTimeMs: 5000,
      maxEjectionTimeMs: 60_000,
      maxEjectionPercent: 50,
    },
    retry: { maxAttempts: 3, budgetMs: 10_000, maxBodyBytes: 1024 * 1024 },
    metrics: { address: '127.0.0.1:0' },
    log: { level: 'silent' },
    shutdown: { drainTimeoutMs: 2000 },
    stateDir: path.join(dir, 'state'),
  };

  const merged = deepMerge(base as unknown as Record<string, unknown>, overrides as Record<string, unknown>);
  return merged as unknown as Config;
}

function deepMerge(base: Record<string, unknown>, overrides: Record<string, unknown>): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(overrides)) {
    const current = base[key];
    const bothObjects = isPlainObject(value) && isPlainObject(current);
    merged[key] = bothObjects ? deepMerge(current as Record<string, unknown>, value as Record<string, unknown>) : value;
  }
  return merged;
}

function isPlainObject(value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
