/**
 * A throwaway cluster PKI for tests, the demo and the benchmark: the cluster CA, the fake API
 * server's serving certificate, kubelet's and an admin's client certificates, and an unrelated CA
 * whose client certificate every component must reject.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCa, issueCertificate, type PemPair } from '../tls/x509.js';

/** A certificate and key as PEM strings and as the files they were written to. */
export interface PkiEntry extends PemPair {
  certPath: string;
  keyPath: string;
}

export interface TestPki {
  dir: string;
  /** Cluster CA that signs the server, node and admin certificates. */
  ca: PkiEntry;
  /** Serving certificate of the fake API server. */
  server: PkiEntry;
  /** Node client certificate: CN system:node:n1, O system:nodes. */
  node: PkiEntry;
  /** The node certificate and key in one file, as kubelet keeps kubelet-client-current.pem. */
  nodeCombinedPath: string;
  nodeCombinedPem: string;
  /** Admin client certificate: CN kubernetes-admin, O system:masters. */
  admin: PkiEntry;
  /** A CA unrelated to the cluster CA. */
  otherCa: PkiEntry;
  /** Client certificate signed by otherCa (CN system:node:n1, so only the issuer is wrong). */
  foreignClient: PkiEntry;
}

export interface TestPkiOptions {
  /** Additional IP SANs for the server certificate, such as addresses inside a network namespace. */
  extraServerIps?: string[];
}

const SERVER_DNS_NAMES = ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc'];
const SERVER_IPS = ['127.0.0.1', '::1'];

/** Generates the test PKI and writes its PEM files into `dir` (created when missing, mode 0700). */
export async function createTestPki(dir: string, options: TestPkiOptions = {}): Promise<TestPki> {
  await mkdir(dir, { recursive: true, mode: 0o700 });

  const caPair = await createCa('stallguard-testbed-ca', { validityDays: 30 });
  const otherCaPair = await createCa('stallguard-testbed-other-ca', { validityDays: 30 });

  const [serverPair, nodePair, adminPair, foreignPair] = await Promise.all([
    issueCertificate(caPair, { commonName: 'kube-apiserver' }, {
      usage: 'server',
      dnsNames: SERVER_DNS_NAMES,
      ipAddresses: [...SERVER_IPS, ...(options.extraServerIps ?? [])],
      validityDays: 30,
    }),
    issueCertificate(caPair, { commonName: 'system:node:n1', organizations: ['system:nodes'] }, { usage: 'client', validityDays: 30 }),
    issueCertificate(caPair, { commonName: 'kubernetes-admin', organizations: ['system:masters'] }, { usage: 'client', validityDays: 30 }),
    issueCertificate(otherCaPair, { commonName: 'system:node:n1', organizations: ['system:nodes'] }, { usage: 'client', validityDays: 30 }),
  ]);

  const nodeCombinedPem = `${nodePair.certPem.trimEnd()}\n${nodePair.keyPem.trimEnd()}\n`;
  const nodeCombinedPath = join(dir, 'kubelet-client-current.pem');
  await writeFile(nodeCombinedPath, nodeCombinedPem, { mode: 0o600 });

  return {
    dir,
    ca: await writeEntry(dir, 'ca', caPair),
    server: await writeEntry(dir, 'apiserver', serverPair),
    node: await writeEntry(dir, 'node-n1', nodePair),
    nodeCombinedPath,
    nodeCombinedPem,
    admin: await writeEntry(dir, 'admin', adminPair),
    otherCa: await writeEntry(dir, 'other-ca', otherCaPair),
    foreignClient: await writeEntry(dir, 'foreign-client', foreignPair),
  };
}

async function writeEntry(dir: string, baseName: string, pair: PemPair): Promise<PkiEntry> {
  const certPath = join(dir, `${baseName}.crt`);
  const keyPath = join(dir, `${baseName}.key`);
  await writeFile(certPath, pair.certPem, { mode: 0o644 });
  await writeFile(keyPath, pair.keyPem, { mode: 0o600 });
  return { ...pair, certPath, keyPath };
}
