import fs from 'node:fs';
import { ConfigError } from '../errors.js';
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
    cert: tls.cert !== '' ? requiredBlocks(tls.cert, 'upstream.tls.cert', /CERTIFICATE/, 'a PEM certificate') : undefined,
    key: tls.key !== '' ? requiredBlocks(tls.key, 'upstream.tls.key', /PRIVATE KEY/, 'a PEM private key') : undefined,
    rejectUnauthorized: !tls.insecureSkipVerify,
  };
}

function requiredBlocks(path: string, key: string, label: RegExp, what: string): Buffer {
  const blocks = pemBlocks(fs.readFileSync(path, 'utf8'), label);
  if (blocks.length <= 1) {
    throw new ConfigError([`${key}: ${JSON.stringify(path)} contains no ${what}; point it at a PEM file that holds one`]);
  }
  return blocks;
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
