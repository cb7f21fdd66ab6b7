import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { beforeAll, describe, expect, it } from 'vitest';
import { createCa, issueCertificate, readCertificateInfo, type PemPair } from '../src/tls/x509.js';

interface HandshakeResult {
  clientError?: string;
  serverAuthorized?: boolean;
  serverAuthorizationError?: string;
  clientAuthorized?: boolean;
  peerCommonName?: string;
}

/**
 * Runs one TLS handshake on loopback: the server requests and verifies a client certificate
 * against `serverTrust`, the client verifies the server against `clientTrust` for `host`.
 */
async function handshake(options: {
  server: PemPair;
  serverTrust: string;
  client?: PemPair;
  clientTrust: string;
  host: string;
  servername?: string;
}): Promise<HandshakeResult> {
  const result: HandshakeResult = {};
  const server = tls.createServer({
    cert: options.server.certPem,
    key: options.server.keyPem,
    ca: options.serverTrust,
    requestCert: true,
    rejectUnauthorized: false,
  });
  server.on('secureConnection', (socket) => {
    result.serverAuthorized = socket.authorized;
    result.serverAuthorizationError = socket.authorizationError?.toString();
    result.peerCommonName = (socket.getPeerCertificate().subject as { CN?: string } | undefined)?.CN;
    socket.end('ok');
  });
  server.on('tlsClientError', () => undefined);
  server.listen(0, options.host);
  await once(server, 'listening');

  try {
    const socket = tls.connect({
      host: options.host,
      port: (server.address() as AddressInfo).port,
      ca: options.clientTrust,
      cert: options.client?.certPem,
      key: options.client?.keyPem,
      servername: options.servername,
    });
    await new Promise<void>((resolve) => {
      socket.on('secureConnect', () => {
        result.clientAuthorized = socket.authorized;
      });
      socket.on('data', () => undefined);
      socket.on('error', (err) => {
        result.clientError = (err as NodeJS.ErrnoException).code ?? err.message;
        resolve();
      });
      socket.on('close', () => resolve());
    });
  } finally {
    server.close();
  }
  return result;
}

describe('x509', () => {
  let ca: PemPair;
  let otherCa: PemPair;
  let serverPair: PemPair;
  let clientPair: PemPair;

  beforeAll(async () => {
    ca = await createCa('test-ca');
    otherCa = await createCa('other-ca', { validityDays: 2 });
    serverPair = await issueCertificate(ca, { commonName: 'server' }, { usage: 'server', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'] });
    clientPair = await issueCertificate(ca, { commonName: 'system:node:n1', organizations: ['system:nodes', 'extra'] }, { usage: 'client' });
  });

  it('creates a CA certificate with a PKCS#8 key', () => {
    const cert = new X509Certificate(ca.certPem);

    expect(cert.ca).toBe(true);
    expect(cert.checkIssued(cert)).toBe(true);
    expect(ca.keyPem.startsWith('-----BEGIN PRIVATE KEY-----')).toBe(true);
    expect(readCertificateInfo(ca.certPem).commonName).toBe('test-ca');
  });

  it('honours the CA validity', () => {
    const notAfter = readCertificateInfo(otherCa.certPem).notAfter.getTime();

    expect(notAfter).toBeGreaterThan(Date.now() + 1.9 * 24 * 3600 * 1000);
    expect(notAfter).toBeLessThan(Date.now() + 2.1 * 24 * 3600 * 1000);
  });

  it('issues a server certificate with SANs and extensions', () => {
    const cert = new X509Certificate(serverPair.certPem);

    expect(cert.ca).toBe(false);
    expect(cert.checkIssued(new X509Certificate(ca.certPem))).toBe(true);
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkIP('::1')).toBe('::1');
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkHost('example.invalid')).toBeUndefined();
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
  });

  it('reads the subject of a client certificate', () => {
    const info = readCertificateInfo(clientPair.certPem);

    expect(info.commonName).toBe('system:node:n1');
    expect(info.organizations).toEqual(['system:nodes', 'extra']);
    expect(info.serialNumber).toMatch(/^[0-9A-F]+$/);
    expect(info.notAfter.getTime()).toBeGreaterThan(Date.now() + 364 * 24 * 3600 * 1000);
  });

  it('sets clientAuth for client and both usages', async () => {
    const both = await issueCertificate(ca, { commonName: 'both' }, { usage: 'both', dnsNames: ['localhost'] });

    expect(new X509Certificate(clientPair.certPem).keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(new X509Certificate(both.certPem).keyUsage).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
  });

  it('starts validity at notBefore', async () => {
    const notBefore = new Date(Date.now() - 10 * 24 * 3600 * 1000);
    const pair = await issueCertificate(ca, { commonName: 'old' }, { usage: 'server', notBefore, validityDays: 11 });
    const cert = new X509Certificate(pair.certPem);

    expect(Math.abs(Date.parse(cert.validFrom) - notBefore.getTime())).toBeLessThan(1000);
    expect(Date.parse(cert.validTo) - Date.now()).toBeLessThan(1.1 * 24 * 3600 * 1000);
  });

  it('rejects an invalid IP address', async () => {
    await expect(issueCertificate(ca, { commonName: 'bad' }, { usage: 'server', ipAddresses: ['not-an-ip'] })).rejects.toThrow(/invalid IP address/);
  });

  it('completes mutual TLS over IPv4', async () => {
    const result = await handshake({ server: serverPair, serverTrust: ca.certPem, client: clientPair, clientTrust: ca.certPem, host: '127.0.0.1' });

    expect(result.clientError).toBeUndefined();
    expect(result.clientAuthorized).toBe(true);
    expect(result.serverAuthorized).toBe(true);
    expect(result.peerCommonName).toBe('system:node:n1');
  });

  it('completes mutual TLS over IPv6', async () => {
    const result = await handshake({ server: serverPair, serverTrust: ca.certPem, client: clientPair, clientTrust: ca.certPem, host: '::1' });

    expect(result.clientError).toBeUndefined();
    expect(result.serverAuthorized).toBe(true);
  });

  it('rejects a client certificate from another CA', async () => {
    const foreign = await issueCertificate(otherCa, { commonName: 'system:node:n1' }, { usage: 'client' });
    const result = await handshake({ server: serverPair, serverTrust: ca.certPem, client: foreign, clientTrust: ca.certPem, host: '127.0.0.1' });

    expect(result.serverAuthorized).toBe(false);
    expect(result.serverAuthorizationError).toBeDefined();
  });

  it('rejects a server certificate from another CA', async () => {
    const result = await handshake({ server: serverPair, serverTrust: ca.certPem, client: clientPair, clientTrust: otherCa.certPem, host: '127.0.0.1' });

    // The server sends its CA along (OpenSSL builds the chain from the `ca` option), so the
    // client sees an untrusted self-signed root rather than a missing issuer.
    expect(result.clientError).toBe('SELF_SIGNED_CERT_IN_CHAIN');
    expect(result.clientAuthorized).toBeUndefined();
  });

  it('rejects a client-only certificate used by a server', async () => {
    const result = await handshake({ server: clientPair, serverTrust: ca.certPem, client: clientPair, clientTrust: ca.certPem, host: '127.0.0.1', servername: 'localhost' });

    expect(result.clientError).toBeDefined();
  });
});
