import fs from 'node:fs';
import type { UpstreamConfig } from '../config/types.js';
import type { UpstreamIdentity } from '../upstream/identity.js';

/**
 * The TLS material that upstream sessions are dialled with, read once from the configured files.
 * cert and key may name the same combined PEM file (kubelet's kubelet-client-current.pem): Node's
 * TLS picks the certificate blocks for `cert` and the private-key block for `key`.
 */
export interface UpstreamTlsMaterial {
  ca: Buffer | undefined;
  cert: Buffer | undefined;
  key: Buffer | undefined;
  rejectUnauthorized: boolean;
}

export function loadUpstreamTlsMaterial(tls: UpstreamConfig['tls']): UpstreamTlsMaterial {
  return {
    ca: tls.ca !== '' ? fs.readFileSync(tls.ca) : undefined,
    cert: tls.cert !== '' ? fs.readFileSync(tls.cert) : undefined,
    key: tls.key !== '' ? fs.readFileSync(tls.key) : undefined,
    rejectUnauthorized: !tls.insecureSkipVerify,
  };
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
