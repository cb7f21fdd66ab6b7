import type { Logger } from 'pino';
import { describeError } from '../errors.js';
import { readCertificateInfo } from '../tls/x509.js';
import type { CertificateRole } from './labels.js';

/** A certificate file that stallguard loaded, as /state shows it and the expiry gauge reports it. */
export interface LoadedCertificate {
  role: CertificateRole;
  /** File the PEM was read from. */
  path: string;
  /** Subject of the first certificate in the file (the leaf, for a certificate and its chain). */
  subject: string;
  commonName: string | undefined;
  organizations: string[];
  /** Earliest notAfter among the certificates in the file: the first one to break the chain or the bundle. */
  notAfter: Date;
  certificates: number;
}

const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Reads every certificate in a PEM file's text. Throws when it contains none or one fails to parse. */
export function describeCertificateFile(role: CertificateRole, path: string, pem: string | Buffer): LoadedCertificate {
  const blocks = pem.toString().match(CERTIFICATE_BLOCK) ?? [];
  if (blocks.length === 0) throw new Error(`${path} contains no PEM certificate`);

  const infos = blocks.map((block) => readCertificateInfo(block));
  const leaf = infos[0]!;
  const earliest = infos.reduce((soonest, info) => (info.notAfter < soonest ? info.notAfter : soonest), leaf.notAfter);

  return {
    role,
    path,
    subject: leaf.subject.split('\n').join(', '),
    commonName: leaf.commonName,
    organizations: leaf.organizations,
    notAfter: earliest,
    certificates: infos.length,
  };
}

/** A configured certificate file and the bytes stallguard loaded from it; undefined when not configured. */
export interface CertificateSource {
  role: CertificateRole;
  path: string;
  pem: string | Buffer | undefined;
}

/**
 * Describes every configured certificate file. A file that cannot be parsed is logged and left
 * out, because the TLS stack that loaded it is the authority on whether it works.
 */
export function describeCertificateFiles(sources: readonly CertificateSource[], log: Logger): LoadedCertificate[] {
  const loaded: LoadedCertificate[] = [];
  for (const source of sources) {
    if (source.pem === undefined) continue;
    try {
      loaded.push(describeCertificateFile(source.role, source.path, source.pem));
    } catch (err) {
      log.warn({ role: source.role, path: source.path, err: describeError(err) }, 'certificate expiry unknown: the file could not be parsed');
    }
  }
  return loaded;
}
