/**
 * Certificate generation for the local listener's CA and for the testbed PKI. Keys are ECDSA
 * P-256 (fast to generate, accepted by Node's tls and by Go clients such as kubelet and kubectl),
 * signatures are ECDSA with SHA-256, and private keys are written as PKCS#8 PEM.
 */
import { X509Certificate as NodeX509Certificate, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';

const crypto = webcrypto as unknown as Crypto;
x509.cryptoProvider.set(crypto);

const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 60 * 60 * 1000;

// Certificates start a little in the past so that a peer whose clock runs slightly behind
// still accepts a certificate generated a moment ago.
const CLOCK_SKEW_MS = 5 * 60 * 1000;

/** A certificate and its private key, both PEM encoded (the key as PKCS#8). */
export interface PemPair {
  certPem: string;
  keyPem: string;
}

export interface CertificateSubject {
  commonName: string;
  /** O attributes; Kubernetes reads them as the user's groups. */
  organizations?: string[];
}

export interface IssueOptions {
  /** serverAuth, clientAuth, or both in extKeyUsage. */
  usage: 'server' | 'client' | 'both';
  dnsNames?: string[];
  /** IPv4 or IPv6 literals such as 127.0.0.1 or ::1. */
  ipAddresses?: string[];
  /** Validity from notBefore; 365 days unless given. */
  validityDays?: number;
  /** Start of validity; now minus five minutes unless given. */
  notBefore?: Date;
}

export interface CertificateInfo {
  /** The subject distinguished name as Node prints it, one attribute per line. */
  subject: string;
  commonName?: string;
  organizations: string[];
  notAfter: Date;
  /** Upper-case hexadecimal, as Node's X509Certificate reports it. */
  serialNumber: string;
}

/** Creates a self-signed CA certificate (basicConstraints CA, keyCertSign and cRLSign). */
export async function createCa(commonName: string, options: { validityDays?: number } = {}): Promise<PemPair> {
  const keys = await generateKeyPair();
  const notBefore = new Date(Date.now() - CLOCK_SKEW_MS);
  const notAfter = new Date(notBefore.getTime() + (options.validityDays ?? 3650) * DAY_MS);

  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialNumber(),
    name: buildName({ commonName }),
    notBefore,
    notAfter,
    signingAlgorithm: SIGNING_ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });

  return { certPem: cert.toString('pem'), keyPem: await exportPrivateKey(keys.privateKey) };
}

/** Issues a leaf certificate signed by `issuer`, for TLS server use, client use or both. */
export async function issueCertificate(issuer: PemPair, subject: CertificateSubject, options: IssueOptions): Promise<PemPair> {
  const issuerCert = new x509.X509Certificate(issuer.certPem);
  const issuerKey = await importPrivateKey(issuer.keyPem);
  const keys = await generateKeyPair();

  const notBefore = options.notBefore ?? new Date(Date.now() - CLOCK_SKEW_MS);
  const notAfter = new Date(notBefore.getTime() + (options.validityDays ?? 365) * DAY_MS);

  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(extendedKeyUsages(options.usage), false),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(issuerCert.publicKey),
  ];
  const alternativeNames = subjectAlternativeNames(options);
  if (alternativeNames.length > 0) {
    extensions.push(new x509.SubjectAlternativeNameExtension(alternativeNames, false));
  }

  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialNumber(),
    subject: buildName(subject),
    issuer: issuerCert.subjectName,
    notBefore,
    notAfter,
    signingAlgorithm: SIGNING_ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: issuerKey,
    extensions,
  });

  return { certPem: cert.toString('pem'), keyPem: await exportPrivateKey(keys.privateKey) };
}

/** Reads the subject, validity end and serial number of the first certificate in a PEM string. */
export function readCertificateInfo(pem: string): CertificateInfo {
  const cert = new NodeX509Certificate(pem);
  const attributes = parseSubject(cert.subject);

  return {
    subject: cert.subject,
    commonName: attributes.find(([key]) => key === 'CN')?.[1],
    organizations: attributes.filter(([key]) => key === 'O').map(([, value]) => value),
    notAfter: new Date(cert.validTo),
    serialNumber: cert.serialNumber,
  };
}

function extendedKeyUsages(usage: IssueOptions['usage']): x509.ExtendedKeyUsage[] {
  switch (usage) {
    case 'server':
      return [x509.ExtendedKeyUsage.serverAuth];
    case 'client':
      return [x509.ExtendedKeyUsage.clientAuth];
    case 'both':
      return [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth];
  }
}

function subjectAlternativeNames(options: IssueOptions): x509.JsonGeneralName[] {
  const names: x509.JsonGeneralName[] = [];
  for (const dnsName of options.dnsNames ?? []) {
    names.push({ type: 'dns', value: dnsName });
  }
  for (const ip of options.ipAddresses ?? []) {
    if (isIP(ip) === 0) {
      throw new TypeError(`invalid IP address for a certificate SAN: ${JSON.stringify(ip)}`);
    }
    names.push({ type: 'ip', value: ip });
  }
  return names;
}

// The JSON form of a name avoids escaping problems with commas or plus signs in attribute values.
function buildName(subject: CertificateSubject): x509.JsonName {
  const name: x509.JsonName = [{ CN: [subject.commonName] }];
  for (const organization of subject.organizations ?? []) {
    name.push({ O: [organization] });
  }
  return name;
}

// Node prints the subject one "KEY=value" attribute per line, with multi-valued attributes repeated.
function parseSubject(subject: string): Array<[string, string]> {
  const attributes: Array<[string, string]> = [];
  for (const line of subject.split('\n')) {
    const separator = line.indexOf('=');
    if (separator > 0) {
      attributes.push([line.slice(0, separator), line.slice(separator + 1)]);
    }
  }
  return attributes;
}

async function generateKeyPair(): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function exportPrivateKey(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

// node:crypto reads every PEM key flavour (PKCS#8, SEC1 "EC PRIVATE KEY"); webcrypto only PKCS#8 DER.
async function importPrivateKey(pem: string): Promise<CryptoKey> {
  const der = createPrivateKey(pem).export({ format: 'der', type: 'pkcs8' });
  return crypto.subtle.importKey('pkcs8', der, KEY_ALGORITHM, false, ['sign']);
}

// 16 random bytes with the top bit cleared, so the DER INTEGER stays positive without padding.
function randomSerialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] & 0x7f) | 0x01;
  return bytes.toString('hex');
}
