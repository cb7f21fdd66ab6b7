import { X509Certificate, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import { ConfigError, describeError } from '../errors.js';
import type { UpstreamConfig } from '../config/types.js';
import type { UpstreamIdentity } from '../upstream/identity.js';
import { readCertificateInfo } from './x509.js';

/**
 * The TLS material that upstream sessions are dialled with, read from the configured files at
 * start and again whenever they change (see reloader.ts).
 * cert and key may name the same combined PEM file (kubelet's kubelet-client-current.pem): Node's
 * TLS picks the certificate blocks for `cert` and the private-key block for `key`.
 */
export interface UpstreamTlsMaterial {
  ca: Buffer | undefined;
  cert: Buffer | undefined;
  key: Buffer | undefined;
  rejectUnauthorized: boolean;
}

/** Reads and checks the configured files; throws ConfigError listing every problem found. */
export function loadUpstreamTlsMaterial(tls: UpstreamConfig['tls']): UpstreamTlsMaterial {
  const loaded = loadUpstreamTls(tls);
  if (!loaded.ok) throw new ConfigError(loaded.problems);
  return loaded.material;
}

/** Reads the configured files and checks them (see buildUpstreamTlsMaterial). */
export function loadUpstreamTls(tls: UpstreamConfig['tls']): UpstreamTlsReadResult {
  const { files, problems } = readUpstreamTlsFiles(tls);
  if (problems.length > 0) return { ok: false, problems };
  return buildUpstreamTlsMaterial(tls, files);
}

/**
 * Keeps only the PEM blocks whose label matches, one per line, so a combined file works for both
 * `cert` and `key` whatever else it holds and however its blocks were joined.
 */
export function pemBlocks(text: string, label: RegExp): Buffer {
  const blocks = text.match(/-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g) ?? [];
  return Buffer.from(blocks.filter((block) => label.test(block.slice(0, 40))).join('\n') + '\n');
}

/** Returns the tls.connect options for one identity: `anonymous` never presents a certificate. */
export function tlsOptionsFor(material: UpstreamTlsMaterial, identity: UpstreamIdentity) {
  return {
    ca: material.ca,
    cert: identity === 'client-cert' ? material.cert : undefined,
    key: identity === 'client-cert' ? material.key : undefined,
    rejectUnauthorized: material.rejectUnauthorized,
  };
}

/** One certificate file of the upstream material, as logs, metrics and `stallguard status` show it. */
export interface LoadedUpstreamCertificate {
  role: 'upstream-client' | 'upstream-ca';
  /** The configured path, which may be a symlink (kubelet-client-current.pem is one). */
  path: string;
  /** Subject of the first certificate in the file, attributes joined by ", ". */
  subject: string;
  commonName: string | undefined;
  organizations: string[];
  /** Earliest notAfter of the certificates in the file: the first one whose expiry breaks the file. */
  notAfter: Date;
  /** Number of certificates in the file. */
  certificates: number;
  /** Serial number of the first certificate, upper-case hexadecimal; it distinguishes two issues of one subject. */
  serialNumber: string;
}

/** The file contents one load read, by path; a path named twice (a combined cert and key file) is read once. */
export type UpstreamTlsFiles = ReadonlyMap<string, Buffer>;

export type UpstreamTlsReadResult =
  | { ok: true; material: UpstreamTlsMaterial; certificates: LoadedUpstreamCertificate[] }
  | { ok: false; problems: string[] };

/** Reads the configured files once. A file that cannot be read becomes a problem, never an exception. */
export function readUpstreamTlsFiles(config: UpstreamConfig['tls']): { files: Map<string, Buffer>; problems: string[] } {
  const files = new Map<string, Buffer>();
  const problems: string[] = [];
  const paths: Array<[string, string]> = [
    ['upstream.tls.ca', config.ca],
    ['upstream.tls.cert', config.cert],
    ['upstream.tls.key', config.key],
  ];
  for (const [key, path] of paths) {
    if (path === '' || files.has(path)) continue;
    try {
      files.set(path, fs.readFileSync(path));
    } catch (err) {
      problems.push(`${key}: ${JSON.stringify(path)} cannot be read (${describeError(err)}); check the path and its permissions`);
    }
  }
  return { files, problems };
}

/**
 * Checks the upstream TLS material in `files` and builds it: every certificate must parse, the key
 * must belong to the first certificate of upstream.tls.cert, and Node's TLS must accept the three
 * together. A half-written file or a certificate and key from two different pairs fail here, so
 * they never reach a session.
 */
export function buildUpstreamTlsMaterial(config: UpstreamConfig['tls'], files: UpstreamTlsFiles): UpstreamTlsReadResult {
  const problems: string[] = [];
  const certificates: LoadedUpstreamCertificate[] = [];
  const text = (path: string) => files.get(path)?.toString('utf8') ?? '';

  let ca: Buffer | undefined;
  if (config.ca !== '') {
    const parsed = parseCertificateFile('upstream.tls.ca', config.ca, text(config.ca), problems);
    if (parsed !== undefined) {
      ca = parsed.pem;
      certificates.push(describeFile('upstream-ca', config.ca, parsed.certificates));
    }
  }

  let cert: Buffer | undefined;
  let key: Buffer | undefined;
  if (config.cert !== '') {
    const parsed = parseCertificateFile('upstream.tls.cert', config.cert, text(config.cert), problems);
    key = parsePrivateKey(config.key, text(config.key), problems);
    if (parsed !== undefined) {
      cert = parsed.pem;
      certificates.push(describeFile('upstream-client', config.cert, parsed.certificates));
      if (key !== undefined && !keyBelongsTo(parsed.certificates[0]!, key)) {
        problems.push(
          `upstream.tls.key: ${JSON.stringify(config.key)} does not belong to the certificate in ${JSON.stringify(config.cert)} ` +
            '(a half-finished rotation, or a certificate and key from two different pairs); write the matching pair',
        );
      }
    }
  }

  if (problems.length === 0) {
    try {
      tls.createSecureContext({ ca, cert, key });
    } catch (err) {
      problems.push(`upstream.tls: Node's TLS rejects the certificate, key and CA together: ${describeError(err)}`);
    }
  }

  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, material: { ca, cert, key, rejectUnauthorized: !config.insecureSkipVerify }, certificates };
}

function parseCertificateFile(
  key: string,
  path: string,
  text: string,
  problems: string[],
): { pem: Buffer; certificates: X509Certificate[] } | undefined {
  const pem = pemBlocks(text, /CERTIFICATE/);
  const blocks = pem.toString().match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) {
    problems.push(`${key}: ${JSON.stringify(path)} contains no PEM certificate; point it at a PEM file that holds one`);
    return undefined;
  }

  const certificates: X509Certificate[] = [];
  for (const [index, block] of blocks.entries()) {
    try {
      certificates.push(new X509Certificate(block));
    } catch (err) {
      problems.push(`${key}: certificate ${index + 1} in ${JSON.stringify(path)} is invalid (${describeError(err)}); the file may be half-written`);
      return undefined;
    }
  }
  return { pem, certificates };
}

function parsePrivateKey(path: string, text: string, problems: string[]): Buffer | undefined {
  const pem = pemBlocks(text, /PRIVATE KEY/);
  if (pem.length <= 1) {
    problems.push(`upstream.tls.key: ${JSON.stringify(path)} contains no PEM private key; point it at a PEM file that holds one`);
    return undefined;
  }
  try {
    createPrivateKey(pem);
    return pem;
  } catch (err) {
    // The key's bytes never go into the message, only the parser's reason.
    problems.push(`upstream.tls.key: the private key in ${JSON.stringify(path)} is invalid (${describeError(err)}); the file may be half-written`);
    return undefined;
  }
}

function keyBelongsTo(certificate: X509Certificate, keyPem: Buffer): boolean {
  try {
    return certificate.checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

function describeFile(role: LoadedUpstreamCertificate['role'], path: string, certificates: X509Certificate[]): LoadedUpstreamCertificate {
  const leaf = readCertificateInfo(certificates[0]!.toString());
  const notAfter = certificates.reduce((soonest, certificate) => {
    const validTo = new Date(certificate.validTo);
    return validTo < soonest ? validTo : soonest;
  }, leaf.notAfter);

  return {
    role,
    path,
    subject: leaf.subject.split('\n').join(', '),
    commonName: leaf.commonName,
    organizations: leaf.organizations,
    notAfter,
    certificates: certificates.length,
    serialNumber: leaf.serialNumber,
  };
}
