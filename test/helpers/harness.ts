/**
 * One fake API server and an in-process stallguard in front of it, both on 127.0.0.1, with the
 * test PKI, a front-proxy client certificate and stallguard's log lines kept for assertions.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import type { Config } from '../../src/config/types.js';
import { startStallguard, type RunningStallguard, type StartOptions } from '../../src/server.js';
import { FakeApiServer } from '../../src/testbed/fake-apiserver.js';
import { createTestPki, type PkiEntry, type TestPki } from '../../src/testbed/pki.js';
import { buildConfig, type ConfigOverrides } from '../../src/testbed/stack.js';
import { issueCertificate, type CertificateSubject, type PemPair } from '../../src/tls/x509.js';

export type LogLine = Record<string, unknown> & { level: number; msg: string };

/** Collects pino's JSON lines; `lines()` parses what has been written so far. */
export class LogCapture {
  readonly #chunks: string[] = [];
  readonly logger = pino(
    { level: 'debug' },
    new Writable({
      write: (chunk, _encoding, callback) => {
        this.#chunks.push(String(chunk));
        callback();
      },
    }),
  );

  lines(): LogLine[] {
    return this.#chunks
      .join('')
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as LogLine);
  }

  /** Raw text of every line, for checks that no secret was written. */
  text(): string {
    return this.#chunks.join('');
  }

  withMessage(message: string): LogLine[] {
    return this.lines().filter((line) => line.msg === message);
  }
}

export const PINO_WARN = 40;

export interface Harness {
  dir: string;
  pki: TestPki;
  /** Client certificate for front-proxy mode: CN front-proxy-client, signed by the cluster CA. */
  frontProxy: PkiEntry;
  server: FakeApiServer;
  stallguard: RunningStallguard;
  config: Config;
  logs: LogCapture;
  /** https://host:port of stallguard's TLS listener. */
  url: string;
  close(): Promise<void>;
}

export interface HarnessOptions {
  config?: ConfigOverrides;
  tokens?: Record<string, { name: string; groups?: string[] }>;
  start?: StartOptions;
  /** Changes the configuration after the PKI exists, for paths that depend on it. */
  adjust?(config: Config, pki: TestPki, frontProxy: PkiEntry, dir: string): void | Promise<void>;
}

export const TOKENS = { 'token-abc': { name: 'kube-proxy', groups: ['system:node-proxier'] } };

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-identity-'));
  const pki = await createTestPki(path.join(dir, 'pki'));
  const frontProxy = await writePair(dir, 'front-proxy-client', await issueCertificate(pki.ca, { commonName: 'front-proxy-client' }, { usage: 'client', validityDays: 30 }));

  const server = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem, tokens: options.tokens ?? TOKENS });
  await server.listen(0, '127.0.0.1');

  const config = buildConfig(dir, pki, [server.url], options.config ?? {});
  await options.adjust?.(config, pki, frontProxy, dir);
  const logs = new LogCapture();
  let stallguard: RunningStallguard;
  try {
    stallguard = await startStallguard(config, logs.logger, options.start);
  } catch (err) {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  return {
    dir,
    pki,
    frontProxy,
    server,
    stallguard,
    config,
    logs,
    url: `https://${stallguard.addresses.listen}`,
    async close() {
      await stallguard.close();
      await server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Issues a client certificate from the cluster CA and writes it next to the others. */
export async function issueClient(harnessDir: string, ca: PemPair, name: string, subject: CertificateSubject, validityDays = 30): Promise<PkiEntry> {
  return writePair(harnessDir, name, await issueCertificate(ca, subject, { usage: 'client', validityDays }));
}

export async function writePair(dir: string, name: string, pair: PemPair): Promise<PkiEntry> {
  const certPath = path.join(dir, `${name}.crt`);
  const keyPath = path.join(dir, `${name}.key`);
  fs.writeFileSync(certPath, pair.certPem, { mode: 0o644 });
  fs.writeFileSync(keyPath, pair.keyPem, { mode: 0o600 });
  return { ...pair, certPath, keyPath };
}

/** The JSON that the fake API server's /testbed/whoami returns. */
export interface Whoami {
  user: { name: string; groups: string[] };
  headers: Record<string, string[]>;
  clientCertificate: { subject: Record<string, string | string[]>; serialNumber: string } | null;
}
