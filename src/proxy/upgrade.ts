import type http from 'node:http';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { IdentityHeaders } from '../downstream/identity-headers.js';
import { describeError } from '../errors.js';
import type { UpstreamTlsMaterial } from '../tls/upstream-material.js';
import { tlsOptionsFor } from '../tls/upstream-material.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { UpstreamIdentity } from '../upstream/identity.js';
import { statusBody } from './status.js';

/** TCP keepalive for tunnels, which have no PING: the first probe after 15 s of silence. */
const TUNNEL_KEEPALIVE_MS = 15_000;

const TUNNEL_HOP_BY_HOP = new Set(['host', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer']);

export interface UpgradeOptions {
  endpoint: Endpoint;
  identity: UpstreamIdentity;
  tls: UpstreamTlsMaterial;
  connectTimeoutMs: number;
  log: Logger;
  tunnels: TunnelRegistry;
  identityHeaders?: IdentityHeaders;
}

/**
 * Relays an HTTP/1.1 Upgrade request (SPDY or WebSocket: kubectl exec, attach, port-forward) over
 * a dedicated TLS connection that speaks HTTP/1.1 to the endpoint. After the request line and
 * headers, bytes pass both ways untouched, the server's 101 response included, until either side
 * closes.
 */
export function relayUpgrade(req: http.IncomingMessage, client: Duplex, head: Buffer, options: UpgradeOptions): void {
  const { endpoint, log } = options;

  const upstream = tls.connect({
    host: endpoint.connectHost ?? endpoint.host,
    port: endpoint.port,
    servername: endpoint.serverName,
    ALPNProtocols: ['http/1.1'],
    ...tlsOptionsFor(options.tls, options.identity),
  });

  upstream.setNoDelay(true);

  const timer = setTimeout(() => {
    upstream.destroy();
    rejectUpgrade(client, 504, `connect to ${endpoint.id} for the upgrade timed out after ${options.connectTimeoutMs}ms`);
  }, options.connectTimeoutMs);
  timer.unref();

  client.on('error', () => upstream.destroy());
  upstream.on('error', (err) => {
    clearTimeout(timer);
    log.info({ endpoint: endpoint.id, err: describeError(err) }, 'upgrade tunnel failed');
    if (client.writable && upstream.bytesRead === 0) {
      rejectUpgrade(client, 502, `the upgrade connection to ${endpoint.id} failed: ${describeError(err)}`);
    } else {
      client.destroy();
    }
  });

  upstream.once('secureConnect', () => {
    clearTimeout(timer);
    upstream.setKeepAlive(true, TUNNEL_KEEPALIVE_MS);
    if ('setKeepAlive' in client && typeof client.setKeepAlive === 'function') client.setKeepAlive(true, TUNNEL_KEEPALIVE_MS);

    upstream.write(requestHead(req, endpoint.authority, options.identityHeaders));
    if (head.length > 0) upstream.write(head);
    upstream.pipe(client);
    client.pipe(upstream);

    const untrack = options.tunnels.add(endpoint.id, () => {
      upstream.destroy();
      client.destroy();
    });
    upstream.once('close', () => {
      untrack();
      client.destroy();
    });
    client.once('close', () => upstream.destroy());
    log.debug({ endpoint: endpoint.id }, 'upgrade tunnel open');
  });
}

function requestHead(req: http.IncomingMessage, authority: string, identity: IdentityHeaders | undefined): string {
  const lines = [`${req.method} ${req.url} HTTP/1.1`, `Host: ${authority}`];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!;
    if (TUNNEL_HOP_BY_HOP.has(name.toLowerCase()) || identity?.isIdentityHeader(name.toLowerCase())) continue;
    lines.push(`${name}: ${req.rawHeaders[i + 1]}`);
  }
  for (const [name, value] of Object.entries(identity?.set ?? {})) {
    for (const entry of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${entry}`);
  }
  return `${lines.join('\r\n')}\r\n\r\n`;
}

export function rejectUpgrade(client: Duplex, status: number, message: string): void {
  if (!client.writable) return;
  const reason = status === 401 ? 'Unauthorized' : status === 403 ? 'Forbidden' : status === 504 ? 'Timeout' : status === 503 ? 'ServiceUnavailable' : 'InternalError';
  const body = JSON.stringify(statusBody(status, reason, message));
  client.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** Open tunnels by endpoint, so that a tunnel to an endpoint known to be bad is closed. */
export class TunnelRegistry {
  readonly #byEndpoint = new Map<string, Set<() => void>>();

  add(endpointId: string, close: () => void): () => void {
    let set = this.#byEndpoint.get(endpointId);
    if (set === undefined) {
      set = new Set();
      this.#byEndpoint.set(endpointId, set);
    }
    set.add(close);
    return () => set!.delete(close);
  }

  closeEndpoint(endpointId: string): void {
    const set = this.#byEndpoint.get(endpointId);
    if (set === undefined) return;
    for (const close of [...set]) close();
    set.clear();
  }

  closeAll(): void {
    for (const endpointId of this.#byEndpoint.keys()) this.closeEndpoint(endpointId);
  }

  get size(): number {
    let count = 0;
    for (const set of this.#byEndpoint.values()) count += set.size;
    return count;
  }
}
