import fs from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { UpstreamConfig } from '../src/config/types.js';
import { ConfigError } from '../src/errors.js';
import { connectH2, h2Request, type ClientTls } from '../src/testbed/client.js';
import { createTestPki, type TestPki } from '../src/testbed/pki.js';
import { UpstreamTlsReloader, type ReloadOutcome } from '../src/tls/reloader.js';
import type { UpstreamTlsMaterial } from '../src/tls/upstream-material.js';
import { issueCertificate, readCertificateInfo, type PemPair } from '../src/tls/x509.js';
import { LogCapture, PINO_WARN, startHarness, type Harness, type Whoami } from './helpers/harness.js';
import { sleep, waitFor } from './helpers/wait.js';

const NODE_SUBJECT = { commonName: 'system:node:n1', organizations: ['system:nodes'] };

let pki: TestPki;
let pkiDir: string;

beforeAll(async () => {
  pkiDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-rotation-pki-'));
  pki = await createTestPki(pkiDir);
  return () => fs.rmSync(pkiDir, { recursive: true, force: true });
});

/** Issues a node client certificate as kubelet's certificate manager would: same subject, new key and serial. */
function issueNodePair(validityDays = 30, notBefore?: Date): Promise<PemPair> {
  return issueCertificate(pki.ca, NODE_SUBJECT, { usage: 'client', validityDays, notBefore });
}

function combined(pair: PemPair): string {
  return `${pair.certPem.trimEnd()}\n${pair.keyPem.trimEnd()}\n`;
}

function serialOf(pair: PemPair): string {
  return readCertificateInfo(pair.certPem).serialNumber;
}

/**
 * kubelet's layout: kubelet-client-current.pem is a symlink to a timestamped combined file, and a
 * rotation writes the new file, then renames a new symlink over the old one in one step.
 */
class KubeletCertificateDirectory {
  readonly current: string;
  #generation = 0;

  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    this.current = path.join(dir, 'kubelet-client-current.pem');
  }

  rotate(contents: string): void {
    this.#generation++;
    const target = path.join(this.dir, `kubelet-client-${this.#generation}.pem`);
    fs.writeFileSync(target, contents, { mode: 0o600 });
    const temporary = path.join(this.dir, `.kubelet-client-current.pem.${this.#generation}`);
    fs.symlinkSync(target, temporary);
    fs.renameSync(temporary, this.current);
  }
}

/** Replaces a file in one step, as a careful writer does. */
function replaceFile(file: string, contents: string): void {
  fs.writeFileSync(`${file}.tmp`, contents, { mode: 0o600 });
  fs.renameSync(`${file}.tmp`, file);
}

function tlsConfig(cert: string, key: string, overrides: Partial<UpstreamConfig['tls']> = {}): UpstreamConfig['tls'] {
  return { ca: pki.ca.certPath, cert, key, serverName: '', insecureSkipVerify: false, expiryWarningMs: 72 * 3_600_000, ...overrides };
}

interface ReloaderProbe {
  reloader: UpstreamTlsReloader;
  logs: LogCapture;
  materials: UpstreamTlsMaterial[];
  outcomes: ReloadOutcome[];
}

function startReloader(config: UpstreamConfig['tls'], options: { expiryWarningIntervalMs?: number; start?: boolean } = {}): ReloaderProbe {
  const logs = new LogCapture();
  const materials: UpstreamTlsMaterial[] = [];
  const outcomes: ReloadOutcome[] = [];
  const reloader = new UpstreamTlsReloader({
    tls: config,
    log: logs.logger,
    onMaterial: (material) => materials.push(material),
    onReload: (outcome) => outcomes.push(outcome),
    expiryWarningIntervalMs: options.expiryWarningIntervalMs,
  });
  if (options.start !== false) reloader.start();
  reloaders.push(reloader);
  return { reloader, logs, materials, outcomes };
}

const reloaders: UpstreamTlsReloader[] = [];
const directories: string[] = [];

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-rotation-'));
  directories.push(dir);
  return dir;
}

afterEach(() => {
  for (const reloader of reloaders.splice(0)) reloader.stop();
  for (const dir of directories.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function clientSerial(probe: ReloaderProbe): string | undefined {
  return probe.reloader.certificates().find((certificate) => certificate.role === 'upstream-client')?.serialNumber;
}

describe('UpstreamTlsReloader', () => {
  it('reports the loaded certificates', async () => {
    const first = await issueNodePair();
    const kubelet = new KubeletCertificateDirectory(tempDir());
    kubelet.rotate(combined(first));

    const probe = startReloader(tlsConfig(kubelet.current, kubelet.current), { start: false });

    const certificates = probe.reloader.certificates();
    expect(certificates.map((certificate) => certificate.role).sort()).toEqual(['upstream-ca', 'upstream-client']);
    const client = certificates.find((certificate) => certificate.role === 'upstream-client')!;
    expect(client.path).toBe(kubelet.current);
    expect(client.serialNumber).toBe(serialOf(first));
    expect(client.notAfter).toEqual(readCertificateInfo(first.certPem).notAfter);
    expect(probe.reloader.clientSubject()).toEqual(NODE_SUBJECT);
    const loaded = probe.logs.withMessage('certificate loaded');
    expect(loaded.map((line) => line.role).sort()).toEqual(['upstream-ca', 'upstream-client']);
    expect(loaded.every((line) => typeof line.notAfter === 'string')).toBe(true);
    expect(probe.logs.text()).not.toContain('PRIVATE KEY');
  });

  it('reloads a symlink swapped by rename, found by the file watch', async () => {
    const [first, second] = await Promise.all([issueNodePair(), issueNodePair()]);
    const kubelet = new KubeletCertificateDirectory(tempDir());
    kubelet.rotate(combined(first));
    const probe = startReloader(tlsConfig(kubelet.current, kubelet.current));

    kubelet.rotate(combined(second));

    // The periodic check runs every 5 s, so a reload well before that came from fs.watch.
    await waitFor(() => probe.materials.length === 1, 3000, 'the reload after the symlink swap');
    expect(clientSerial(probe)).toBe(serialOf(second));
    expect(probe.reloader.current()).toBe(probe.materials[0]);
    expect(probe.materials[0]!.cert!.toString()).toContain(second.certPem.trim().split('\n')[1]!);
    expect(probe.outcomes).toEqual(['success']);
    expect(probe.logs.withMessage('certificate reloaded').map((line) => line.serialNumber)).toContain(serialOf(second));
  });

  it('rejects a mismatched pair and keeps the previous material', async () => {
    const [first, second] = await Promise.all([issueNodePair(), issueNodePair()]);
    const dir = tempDir();
    const certPath = path.join(dir, 'client.crt');
    const keyPath = path.join(dir, 'client.key');
    fs.writeFileSync(certPath, first.certPem);
    fs.writeFileSync(keyPath, first.keyPem);
    const probe = startReloader(tlsConfig(certPath, keyPath), { start: false });
    const before = probe.reloader.current();

    replaceFile(certPath, second.certPem);
    const mismatched = probe.reloader.check();
    const again = probe.reloader.check();
    replaceFile(keyPath, second.keyPem);
    const matched = probe.reloader.check();

    expect(mismatched).toBe('rejected');
    expect(again).toBe('unchanged');
    expect(matched).toBe('success');
    expect(probe.outcomes).toEqual(['rejected', 'success']);
    expect(probe.materials).toHaveLength(1);
    expect(probe.materials[0]).not.toBe(before);
    const rejected = probe.logs.withMessage('TLS material reload rejected; the previous material stays in use');
    expect(rejected).toHaveLength(1);
    expect(rejected[0]!.level).toBe(PINO_WARN);
    expect(String(rejected[0]!.reason)).toContain('does not belong to the certificate');
    expect(probe.logs.text()).not.toContain('PRIVATE KEY');
  });

  it('keeps the previous material while the pair is mismatched', async () => {
    const [first, second] = await Promise.all([issueNodePair(), issueNodePair()]);
    const dir = tempDir();
    const certPath = path.join(dir, 'client.crt');
    const keyPath = path.join(dir, 'client.key');
    fs.writeFileSync(certPath, first.certPem);
    fs.writeFileSync(keyPath, first.keyPem);
    const probe = startReloader(tlsConfig(certPath, keyPath), { start: false });
    const before = probe.reloader.current();

    replaceFile(certPath, second.certPem);
    probe.reloader.check();

    expect(probe.reloader.current()).toBe(before);
    expect(clientSerial(probe)).toBe(serialOf(first));
  });

  it('rejects a half-written file, then takes the finished one', async () => {
    const [first, second] = await Promise.all([issueNodePair(), issueNodePair()]);
    const dir = tempDir();
    const file = path.join(dir, 'client.pem');
    fs.writeFileSync(file, combined(first));
    const probe = startReloader(tlsConfig(file, file), { start: false });
    const text = combined(second);

    fs.writeFileSync(file, text.slice(0, Math.floor(text.length * 0.8)));
    const half = probe.reloader.check();
    fs.writeFileSync(file, text);
    const whole = probe.reloader.check();

    expect(half).toBe('rejected');
    expect(String(probe.logs.withMessage('TLS material reload rejected; the previous material stays in use')[0]!.reason)).toContain(
      'contains no PEM private key',
    );
    expect(whole).toBe('success');
    expect(clientSerial(probe)).toBe(serialOf(second));
  });

  it('logs a missing file once and recovers when it is back', async () => {
    const first = await issueNodePair();
    const dir = tempDir();
    const file = path.join(dir, 'client.pem');
    fs.writeFileSync(file, combined(first));
    const probe = startReloader(tlsConfig(file, file), { start: false });

    fs.renameSync(file, `${file}.away`);
    const missing = [probe.reloader.check(), probe.reloader.check()];
    fs.renameSync(`${file}.away`, file);
    const back = probe.reloader.check();
    fs.rmSync(file);
    const missingAgain = probe.reloader.check();

    expect(missing).toEqual(['rejected', 'unchanged']);
    expect(back).toBe('unchanged');
    expect(missingAgain).toBe('rejected');
    expect(String(probe.logs.withMessage('TLS material reload rejected; the previous material stays in use')[0]!.reason)).toContain('ENOENT');
    expect(probe.materials).toHaveLength(0);
  });

  it('fails at start on a mismatched pair', async () => {
    const [first, second] = await Promise.all([issueNodePair(), issueNodePair()]);
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'client.crt'), first.certPem);
    fs.writeFileSync(path.join(dir, 'client.key'), second.keyPem);

    const start = () => startReloader(tlsConfig(path.join(dir, 'client.crt'), path.join(dir, 'client.key')));

    expect(start).toThrow(ConfigError);
    expect(start).toThrow(/upstream\.tls\.key: .* does not belong to the certificate/);
  });

  it('warns about expiring and expired certificates on every interval', async () => {
    const expiring = await issueNodePair(1);
    const expired = await issueCertificate(pki.ca, { commonName: 'old-ca-member' }, { usage: 'client', validityDays: 1, notBefore: new Date(Date.now() - 3 * 86_400_000) });
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'client.pem'), combined(expiring));
    fs.writeFileSync(path.join(dir, 'ca.pem'), `${pki.ca.certPem.trimEnd()}\n${expired.certPem}`);

    const probe = startReloader(tlsConfig(path.join(dir, 'client.pem'), path.join(dir, 'client.pem'), { ca: path.join(dir, 'ca.pem') }), {
      expiryWarningIntervalMs: 50,
    });
    await sleep(400);

    const soon = probe.logs.withMessage('certificate expires soon');
    const gone = probe.logs.withMessage('certificate expired');
    expect(soon.length).toBeGreaterThanOrEqual(3);
    expect(soon.every((line) => line.role === 'upstream-client' && line.level === PINO_WARN)).toBe(true);
    expect(soon[0]!.remainingHours).toBeLessThanOrEqual(24);
    expect(gone.length).toBeGreaterThanOrEqual(3);
    expect(gone.every((line) => line.role === 'upstream-ca')).toBe(true);
  });

  it('does not warn about a certificate far from expiry', async () => {
    const first = await issueNodePair(30);
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'client.pem'), combined(first));

    const probe = startReloader(tlsConfig(path.join(dir, 'client.pem'), path.join(dir, 'client.pem')), { expiryWarningIntervalMs: 50 });
    await sleep(200);

    expect(probe.logs.withMessage('certificate expires soon')).toHaveLength(0);
    expect(probe.logs.withMessage('certificate expired')).toHaveLength(0);
  });
});

/** Runs a watch that re-opens whenever it ends cleanly, as client-go's reflector does. */
class RewatchingClient {
  opened = 0;
  cleanEnds = 0;
  errors: string[] = [];
  #stopped = false;
  #stream: http2.ClientHttp2Stream | undefined;

  constructor(private readonly session: http2.ClientHttp2Session) {
    this.#open();
  }

  #open(): void {
    this.opened++;
    const stream = this.session.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/pods?watch=1' });
    this.#stream = stream;
    stream.resume();
    stream.on('error', (err) => this.errors.push(err.message));
    stream.on('close', () => {
      if (this.#stopped) return;
      if (stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
        this.errors.push(`watch reset with code ${stream.rstCode}`);
        return;
      }
      this.cleanEnds++;
      this.#open();
    });
  }

  stop(): void {
    this.#stopped = true;
    this.#stream?.close(http2.constants.NGHTTP2_CANCEL);
  }
}

interface LoopResult {
  serial: string | undefined;
  status: number | undefined;
  error: string | undefined;
  startedAt: number;
}

/** Sends GET /testbed/whoami back to back until stopped, recording which certificate each request went with. */
class RequestLoop {
  readonly results: LoopResult[] = [];
  #stopped = false;
  readonly done: Promise<void>;

  constructor(session: http2.ClientHttp2Session) {
    this.done = (async () => {
      while (!this.#stopped) {
        const startedAt = Date.now();
        try {
          const response = await h2Request(session, { path: '/testbed/whoami', timeoutMs: 5000 });
          const body = response.status === 200 ? (JSON.parse(response.body.toString()) as Whoami) : undefined;
          this.results.push({ serial: body?.clientCertificate?.serialNumber, status: response.status, error: undefined, startedAt });
        } catch (err) {
          this.results.push({ serial: undefined, status: undefined, error: (err as Error).message, startedAt });
        }
        await sleep(10);
      }
    })();
  }

  stop(): Promise<void> {
    this.#stopped = true;
    return this.done;
  }
}

describe('client certificate rotation through stallguard', () => {
  let harness: Harness | undefined;
  let session: http2.ClientHttp2Session | undefined;

  afterEach(async () => {
    session?.close();
    session = undefined;
    await harness?.close();
    harness = undefined;
  });

  function nodeClient(h: Harness): ClientTls {
    return { ca: h.pki.ca.certPem, cert: h.pki.node.certPem, key: h.pki.node.keyPem };
  }

  // The fake API server trusts the harness's own cluster CA, so rotated certificates come from it.
  function issueFrom(ca: PemPair): Promise<PemPair> {
    return issueCertificate(ca, NODE_SUBJECT, { usage: 'client', validityDays: 30 });
  }

  it('moves new sessions to the new certificate without a failed request', async () => {
    const kubelet = new KubeletCertificateDirectory(tempDir());
    let first!: PemPair;
    let second!: PemPair;
    harness = await startHarness({
      adjust: async (config, harnessPki) => {
        [first, second] = await Promise.all([issueFrom(harnessPki.ca), issueFrom(harnessPki.ca)]);
        kubelet.rotate(combined(first));
        config.upstream.tls.cert = kubelet.current;
        config.upstream.tls.key = kubelet.current;
      },
    });
    session = await connectH2(harness.url, nodeClient(harness));
    const watch = new RewatchingClient(session);
    const loop = new RequestLoop(session);
    await waitFor(() => loop.results.length >= 20, 5000, 'requests before the rotation');

    const rotatedAt = Date.now();
    kubelet.rotate(combined(second));
    // The periodic check runs every 5 s, so a switch well before that came from fs.watch.
    await waitFor(() => loop.results.some((result) => result.serial === serialOf(second)), 4000, 'a request with the new certificate');
    const firstNew = loop.results.find((result) => result.serial === serialOf(second))!;
    await waitFor(() => loop.results.filter((result) => result.startedAt > firstNew.startedAt).length >= 20, 5000, 'requests after the rotation');
    await loop.stop();
    watch.stop();

    expect(loop.results.filter((result) => result.error !== undefined || result.status !== 200)).toEqual([]);
    expect(loop.results[0]!.serial).toBe(serialOf(first));
    // Every request sent after the first one on the new certificate went with the new certificate.
    const later = loop.results.filter((result) => result.startedAt > firstNew.startedAt);
    expect(later.every((result) => result.serial === serialOf(second))).toBe(true);
    expect(firstNew.startedAt - rotatedAt).toBeLessThan(4000);
    expect(watch.errors).toEqual([]);
    expect(watch.cleanEnds).toBe(1);
    expect(harness.server.requests.filter((request) => request.path.includes('watch=1'))).toHaveLength(2);
    const reloads = await harness.stallguard.metrics.tlsReloads.get();
    expect(reloads.values.find((sample) => sample.labels.outcome === 'success')?.value).toBe(1);
    expect(harness.stallguard.tlsReloader.certificates().find((c) => c.role === 'upstream-client')?.serialNumber).toBe(serialOf(second));
  });

  it('keeps serving with the old pair while the new one is mismatched', async () => {
    const dir = tempDir();
    const certPath = path.join(dir, 'client.crt');
    const keyPath = path.join(dir, 'client.key');
    let first!: PemPair;
    let second!: PemPair;
    harness = await startHarness({
      adjust: async (config, harnessPki) => {
        [first, second] = await Promise.all([issueFrom(harnessPki.ca), issueFrom(harnessPki.ca)]);
        fs.writeFileSync(certPath, first.certPem);
        fs.writeFileSync(keyPath, first.keyPem);
        config.upstream.tls.cert = certPath;
        config.upstream.tls.key = keyPath;
      },
    });
    session = await connectH2(harness.url, nodeClient(harness));
    const loop = new RequestLoop(session);
    await waitFor(() => loop.results.length >= 10, 5000, 'requests before the change');

    replaceFile(certPath, second.certPem);
    await waitFor(() => harness!.logs.withMessage('TLS material reload rejected; the previous material stays in use').length === 1, 4000, 'the rejected reload');
    const rejectedAt = Date.now();
    await waitFor(() => loop.results.filter((result) => result.startedAt > rejectedAt).length >= 10, 5000, 'requests after the rejection');
    replaceFile(keyPath, second.keyPem);
    await waitFor(() => loop.results.some((result) => result.serial === serialOf(second)), 4000, 'a request with the new pair');
    await loop.stop();

    expect(loop.results.filter((result) => result.error !== undefined || result.status !== 200)).toEqual([]);
    const whileRejected = loop.results.filter((result) => result.startedAt > rejectedAt && result.serial !== serialOf(second));
    expect(whileRejected.length).toBeGreaterThanOrEqual(10);
    expect(whileRejected.every((result) => result.serial === serialOf(first))).toBe(true);
    const reloads = await harness.stallguard.metrics.tlsReloads.get();
    expect(reloads.values.find((sample) => sample.labels.outcome === 'failure')?.value).toBe(1);
    expect(reloads.values.find((sample) => sample.labels.outcome === 'success')?.value).toBe(1);
  });

  it('verifies local clients against the reloaded CA bundle', async () => {
    const caPath = path.join(tempDir(), 'ca.pem');
    harness = await startHarness({
      adjust: (config, harnessPki) => {
        fs.writeFileSync(caPath, harnessPki.ca.certPem);
        config.upstream.tls.ca = caPath;
        config.listen.tls.clientCA = '';
      },
    });
    const foreign = { ca: harness.pki.ca.certPem, cert: harness.pki.foreignClient.certPem, key: harness.pki.foreignClient.keyPem };
    const before = await attemptRequest(harness.url, foreign);

    // A CA rotation publishes a bundle with the old and the new CA first.
    replaceFile(caPath, `${harness.pki.ca.certPem.trimEnd()}\n${harness.pki.otherCa.certPem}`);
    await waitFor(() => harness!.logs.withMessage('certificate reloaded').length > 0, 4000, 'the CA reload');
    const after = await attemptRequest(harness.url, foreign);

    expect(before).toMatch(/^error /);
    // The foreign CA's certificate carries the node's subject, so static mode lets it through.
    expect(after).toBe('status 200');
  });
});

async function attemptRequest(url: string, clientTls: ClientTls): Promise<string> {
  try {
    const session = await connectH2(url, clientTls);
    try {
      const response = await h2Request(session, { path: '/api/v1/nodes/n1', timeoutMs: 5000 });
      return `status ${response.status}`;
    } finally {
      session.close();
    }
  } catch (err) {
    return `error ${(err as Error).message}`;
  }
}

describe('generated serving certificate renewal', () => {
  let harness: Harness | undefined;

  afterEach(async () => {
    await harness?.close();
    harness = undefined;
  });

  function servingSerial(url: string, ca: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: Number(new URL(url).port), ca, ALPNProtocols: ['h2'] });
      socket.once('secureConnect', () => {
        resolve(socket.getPeerCertificate().serialNumber);
        socket.destroy();
      });
      socket.once('error', reject);
    });
  }

  it('swaps in a renewed certificate without a restart', async () => {
    harness = await startHarness({
      start: { servingRenewalIntervalMs: 100 },
      adjust: (config) => {
        config.listen.tls.cert = '';
        config.listen.tls.key = '';
      },
    });
    const tlsDir = path.join(harness.config.stateDir, 'tls');
    const localCa = { certPem: fs.readFileSync(path.join(tlsDir, 'ca.crt'), 'utf8'), keyPem: fs.readFileSync(path.join(tlsDir, 'ca.key'), 'utf8') };
    const clientTls = { ca: localCa.certPem, cert: harness.pki.node.certPem, key: harness.pki.node.keyPem };
    const original = await servingSerial(harness.url, localCa.certPem);
    const openedBefore = await connectH2(harness.url, clientTls);

    // A certificate that expires within the 30-day renewal window, as the daily check would find one.
    const expiring = await issueCertificate(localCa, { commonName: 'stallguard-local' }, { usage: 'server', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'], validityDays: 1 });
    fs.writeFileSync(path.join(tlsDir, 'serving.key'), expiring.keyPem, { mode: 0o600 });
    fs.writeFileSync(path.join(tlsDir, 'serving.crt'), expiring.certPem, { mode: 0o600 });
    const expiringSerial = readCertificateInfo(expiring.certPem).serialNumber;

    await waitFor(() => harness!.logs.withMessage('serving certificate renewed').length > 0, 4000, 'the renewal');
    const renewed = await servingSerial(harness.url, localCa.certPem);
    const onOldConnection = await h2Request(openedBefore, { path: '/api/v1/nodes/n1' });
    openedBefore.close();

    expect(renewed).not.toBe(original);
    expect(renewed).not.toBe(expiringSerial);
    expect(renewed).toBe(readCertificateInfo(fs.readFileSync(path.join(tlsDir, 'serving.crt'), 'utf8')).serialNumber);
    expect(onOldConnection.status).toBe(200);
    expect(await attemptRequest(harness.url, clientTls)).toBe('status 200');
  });
});
