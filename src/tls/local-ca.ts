/**
 * The local listener's own CA and serving certificate, kept in `<stateDir>/tls/`. kubelet's
 * kubeconfig trusts this CA, so the CA is kept across restarts and only the serving certificate
 * is reissued when it nears expiry. Both are regenerated when a file is missing, unreadable or
 * does not match its key or issuer.
 */
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StateDirError } from '../errors.js';
import { createCa, issueCertificate, type PemPair } from './x509.js';

export interface LocalServingMaterial {
  caPath: string;
  certPath: string;
  keyPath: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  /** True when the CA or the serving certificate was created by this call. */
  generated: boolean;
}

const CA_VALIDITY_DAYS = 3650;
const SERVING_VALIDITY_DAYS = 365;
const RENEW_BEFORE_MS = 30 * 24 * 60 * 60 * 1000;
const SERVING_DNS_NAMES = ['localhost'];
const SERVING_IPS = ['127.0.0.1', '::1'];

const CA_CERT_FILE = 'ca.crt';
const CA_KEY_FILE = 'ca.key';
const SERVING_CERT_FILE = 'serving.crt';
const SERVING_KEY_FILE = 'serving.key';

/** Returns the local CA and serving certificate from `<stateDir>/tls/`, creating or renewing them as needed. */
export async function ensureLocalServingMaterial(stateDir: string): Promise<LocalServingMaterial> {
  const dir = join(stateDir, 'tls');
  await prepareDirectory(dir);

  const paths = {
    caCert: join(dir, CA_CERT_FILE),
    caKey: join(dir, CA_KEY_FILE),
    servingCert: join(dir, SERVING_CERT_FILE),
    servingKey: join(dir, SERVING_KEY_FILE),
  };

  let generated = false;
  let ca = await readPair(paths.caCert, paths.caKey);
  if (!ca || !isUsableCa(ca)) {
    ca = await createCa('stallguard-local-ca', { validityDays: CA_VALIDITY_DAYS });
    await writePrivateFile(dir, paths.caKey, ca.keyPem);
    await writePrivateFile(dir, paths.caCert, ca.certPem);
    generated = true;
  }

  let serving = generated ? undefined : await readPair(paths.servingCert, paths.servingKey);
  if (!serving || !isUsableServingCertificate(serving, ca)) {
    serving = await issueCertificate(ca, { commonName: 'stallguard-local' }, {
      usage: 'server',
      dnsNames: SERVING_DNS_NAMES,
      ipAddresses: SERVING_IPS,
      validityDays: SERVING_VALIDITY_DAYS,
    });
    await writePrivateFile(dir, paths.servingKey, serving.keyPem);
    await writePrivateFile(dir, paths.servingCert, serving.certPem);
    generated = true;
  }

  return {
    caPath: paths.caCert,
    certPath: paths.servingCert,
    keyPath: paths.servingKey,
    caPem: ca.certPem,
    certPem: serving.certPem,
    keyPem: serving.keyPem,
    generated,
  };
}

async function prepareDirectory(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });

    // mkdir leaves the mode of an existing directory alone, and the umask may have narrowed a new one.
    await chmod(dir, 0o700);
  } catch (err) {
    throw new StateDirError(dir, 'create the directory with mode 0700', err);
  }
}

// Writes through a temporary file and a rename, so that a crash never leaves a truncated PEM behind.
async function writePrivateFile(dir: string, path: string, contents: string): Promise<void> {
  const temporaryPath = `${path}.tmp-${process.pid}`;
  try {
    await writeFile(temporaryPath, contents, { mode: 0o600 });
    await chmod(temporaryPath, 0o600);
    await rename(temporaryPath, path);
  } catch (err) {
    throw new StateDirError(dir, `write ${path}`, err);
  }
}

async function readPair(certPath: string, keyPath: string): Promise<PemPair | undefined> {
  try {
    const [certPem, keyPem] = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')]);
    return { certPem, keyPem };
  } catch {
    // Missing or unreadable material is regenerated; a directory that cannot be written fails later, on the write.
    return undefined;
  }
}

function isUsableCa(pair: PemPair): boolean {
  const cert = parseCertificate(pair.certPem);
  return cert !== undefined && cert.ca && keyMatches(cert, pair.keyPem) && !expiresSoon(cert);
}

function isUsableServingCertificate(pair: PemPair, ca: PemPair): boolean {
  const cert = parseCertificate(pair.certPem);
  const caCert = parseCertificate(ca.certPem);
  if (!cert || !caCert || !keyMatches(cert, pair.keyPem) || expiresSoon(cert)) {
    return false;
  }
  if (!cert.checkIssued(caCert) || !cert.verify(caCert.publicKey)) {
    return false;
  }
  return SERVING_IPS.every((ip) => cert.checkIP(ip) !== undefined) && SERVING_DNS_NAMES.every((name) => cert.checkHost(name) !== undefined);
}

function parseCertificate(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

function keyMatches(cert: X509Certificate, keyPem: string): boolean {
  try {
    const publicFromKey = createPublicKey(createPrivateKey(keyPem)).export({ format: 'der', type: 'spki' });
    return publicFromKey.equals(cert.publicKey.export({ format: 'der', type: 'spki' }));
  } catch {
    return false;
  }
}

function expiresSoon(cert: X509Certificate): boolean {
  return Date.parse(cert.validTo) - Date.now() < RENEW_BEFORE_MS;
}
