import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StateDirError } from '../src/errors.js';
import { ensureLocalServingMaterial } from '../src/tls/local-ca.js';
import { createCa, issueCertificate } from '../src/tls/x509.js';

const DAY_MS = 24 * 3600 * 1000;

/** Connects to a TLS server that uses the material and verifies it with the local CA, as kubelet would. */
async function verifyServing(material: { certPem: string; keyPem: string; caPem: string }, host: string): Promise<boolean> {
  const server = tls.createServer({ cert: material.certPem, key: material.keyPem }, (socket) => socket.end());
  server.listen(0, host);
  await once(server, 'listening');
  try {
    const socket = tls.connect({ host, port: (server.address() as AddressInfo).port, ca: material.caPem });
    const [outcome] = await Promise.race([once(socket, 'secureConnect').then(() => ['ok']), once(socket, 'error').then(([err]) => [String(err)])]);
    socket.destroy();
    return outcome === 'ok';
  } finally {
    server.close();
  }
}

describe('ensureLocalServingMaterial', () => {
  let stateDir: string;

  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'stallguard-state-'));
  });

  afterEach(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  it('generates private files in a private directory', async () => {
    const material = await ensureLocalServingMaterial(stateDir);

    expect(material.generated).toBe(true);
    expect((await stat(join(stateDir, 'tls'))).mode & 0o777).toBe(0o700);
    for (const path of [material.caPath, material.certPath, material.keyPath, join(stateDir, 'tls', 'ca.key')]) {
      expect((await stat(path)).mode & 0o777).toBe(0o600);
    }
    expect(await readFile(material.certPath, 'utf8')).toBe(material.certPem);
  });

  it('serves on 127.0.0.1, ::1 and localhost', async () => {
    const material = await ensureLocalServingMaterial(stateDir);
    const cert = new X509Certificate(material.certPem);

    expect(await verifyServing(material, '127.0.0.1')).toBe(true);
    expect(await verifyServing(material, '::1')).toBe(true);
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(Date.parse(cert.validTo) - Date.now()).toBeGreaterThan(360 * DAY_MS);
    expect(Date.parse(new X509Certificate(material.caPem).validTo) - Date.now()).toBeGreaterThan(3600 * DAY_MS);
  });

  it('reuses existing material', async () => {
    const first = await ensureLocalServingMaterial(stateDir);
    const second = await ensureLocalServingMaterial(stateDir);

    expect(second.generated).toBe(false);
    expect(second.caPem).toBe(first.caPem);
    expect(second.certPem).toBe(first.certPem);
    expect(second.keyPem).toBe(first.keyPem);
  });

  it('reissues a missing serving certificate with the same CA', async () => {
    const first = await ensureLocalServingMaterial(stateDir);
    await unlink(first.certPath);

    const second = await ensureLocalServingMaterial(stateDir);

    expect(second.generated).toBe(true);
    expect(second.caPem).toBe(first.caPem);
    expect(second.certPem).not.toBe(first.certPem);
    expect(await verifyServing(second, '127.0.0.1')).toBe(true);
  });

  it('reissues a serving key that does not match', async () => {
    const first = await ensureLocalServingMaterial(stateDir);
    const stranger = await createCa('stranger');
    await writeFile(first.keyPath, stranger.keyPem);

    const second = await ensureLocalServingMaterial(stateDir);

    expect(second.generated).toBe(true);
    expect(second.caPem).toBe(first.caPem);
    expect(second.keyPem).not.toBe(stranger.keyPem);
    expect(await verifyServing(second, '127.0.0.1')).toBe(true);
  });

  it('reissues a serving certificate from another CA', async () => {
    const first = await ensureLocalServingMaterial(stateDir);
    const stranger = await createCa('stranger');
    const foreign = await issueCertificate(stranger, { commonName: 'x' }, { usage: 'server', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'] });
    await writeFile(first.certPath, foreign.certPem);
    await writeFile(first.keyPath, foreign.keyPem);

    const second = await ensureLocalServingMaterial(stateDir);

    expect(second.generated).toBe(true);
    expect(await verifyServing(second, '127.0.0.1')).toBe(true);
  });

  it('renews a serving certificate expiring within 30 days', async () => {
    const first = await ensureLocalServingMaterial(stateDir);
    const ca = { certPem: first.caPem, keyPem: await readFile(join(stateDir, 'tls', 'ca.key'), 'utf8') };
    const expiring = await issueCertificate(ca, { commonName: 'stallguard-local' }, {
      usage: 'server',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1', '::1'],
      notBefore: new Date(Date.now() - 340 * DAY_MS),
      validityDays: 365,
    });
    await writeFile(first.certPath, expiring.certPem);
    await writeFile(first.keyPath, expiring.keyPem);

    const second = await ensureLocalServingMaterial(stateDir);

    expect(second.generated).toBe(true);
    expect(second.caPem).toBe(first.caPem);
    expect(Date.parse(new X509Certificate(second.certPem).validTo) - Date.now()).toBeGreaterThan(360 * DAY_MS);
  });

  it('keeps a serving certificate expiring in 31 days or more', async () => {
    const first = await ensureLocalServingMaterial(stateDir);
    const ca = { certPem: first.caPem, keyPem: await readFile(join(stateDir, 'tls', 'ca.key'), 'utf8') };
    const stillValid = await issueCertificate(ca, { commonName: 'stallguard-local' }, {
      usage: 'server',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1', '::1'],
      notBefore: new Date(Date.now() - 300 * DAY_MS),
      validityDays: 365,
    });
    await writeFile(first.certPath, stillValid.certPem);
    await writeFile(first.keyPath, stillValid.keyPem);

    const second = await ensureLocalServingMaterial(stateDir);

    expect(second.generated).toBe(false);
    expect(second.certPem).toBe(stillValid.certPem);
  });

  it('regenerates everything when the CA is corrupt', async () => {
    const first = await ensureLocalServingMaterial(stateDir);
    await writeFile(first.caPath, '-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n');

    const second = await ensureLocalServingMaterial(stateDir);

    expect(second.generated).toBe(true);
    expect(second.caPem).not.toBe(first.caPem);
    expect(second.certPem).not.toBe(first.certPem);
    expect(await verifyServing(second, '::1')).toBe(true);
  });

  it('reports a state directory that cannot be created', async () => {
    const blocker = join(stateDir, 'not-a-directory');
    await writeFile(blocker, 'x');

    const failure = await ensureLocalServingMaterial(blocker).catch((err: unknown) => err);

    expect(failure).toBeInstanceOf(StateDirError);
    expect((failure as StateDirError).code).toBe('SG_ERR_STATE_DIR');
    expect((failure as StateDirError).message).toContain(join(blocker, 'tls'));
    expect((failure as StateDirError).message).toContain('set stateDir to a writable directory');
  });
});
