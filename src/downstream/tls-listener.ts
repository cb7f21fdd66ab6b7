import type http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics/metrics.js';
import type { DownstreamRequest, DownstreamResponse } from '../proxy/respond.js';
import { RepeatLimiter } from '../log/logger.js';
import { hasPeerCertificate } from './admission.js';

export interface RequestHandlers {
  onRequest(req: DownstreamRequest, res: DownstreamResponse, socket: TLSSocket | undefined): void;
  onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
}

export interface TlsListenerOptions {
  cert: Buffer;
  key: Buffer;
  /** Verifies local clients' certificates; a certificate is requested, never required. */
  clientCA: Buffer | undefined;
  log: Logger;
  metrics: Metrics;
  handlers: RequestHandlers;
}

// Streams per client connection: kubelet keeps a watch per resource type it follows on one
// connection, well below this; the cap bounds what one local client can hold open.
const DOWNSTREAM_MAX_CONCURRENT_STREAMS = 1000;

/**
 * The local TLS listener: HTTP/2 and HTTP/1.1 on one port by ALPN. A client certificate that does
 * not verify against clientCA ends the connection right after the handshake, with one log line
 * naming the peer and the reason; a client without a certificate goes on to per-request admission.
 */
export function createTlsListener(options: TlsListenerOptions): http2.Http2SecureServer {
  const { log, metrics, handlers } = options;
  const rejections = new RepeatLimiter();

  const server = http2.createSecureServer({
    allowHTTP1: true,
    noDelay: true,
    cert: options.cert,
    key: options.key,
    ca: options.clientCA,
    requestCert: true,
    rejectUnauthorized: false,
    settings: { maxConcurrentStreams: DOWNSTREAM_MAX_CONCURRENT_STREAMS, enablePush: false },
  });

  server.on('secureConnection', (socket: TLSSocket) => {
    socket.on('error', () => {
      // Client resets are normal; the request handlers see the effect.
    });

    const protocol = socket.alpnProtocol === 'h2' ? 'h2' : 'http/1.1';
    if (hasPeerCertificate(socket) && !socket.authorized) {
      metrics.downstreamConnections.inc({ protocol, tls: 'rejected' });
      // A client retries with the same bad certificate; the reason is logged at powers of two.
      const reason = String(socket.authorizationError);
      const decision = rejections.record(reason);
      if (decision.log) log.warn({ peer: peerAddress(socket), reason, occurrence: decision.occurrence, suppressed: decision.suppressed }, 'client certificate rejected');
      socket.destroy();
      return;
    }
    metrics.downstreamConnections.inc({ protocol, tls: 'ok' });
  });

  server.on('tlsClientError', (err, socket) => {
    log.debug({ peer: peerAddress(socket), err: err.message }, 'client TLS handshake failed');
  });

  server.on('request', (req: DownstreamRequest, res: DownstreamResponse) => {
    handlers.onRequest(req, res, req.socket as TLSSocket);
  });

  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    metrics.downstreamConnections.inc({ protocol: 'upgrade', tls: 'ok' });
    handlers.onUpgrade(req, socket, head);
  });

  server.on('sessionError', (err) => log.debug({ err: err.message }, 'client session error'));
  return server;
}

export function peerAddress(socket: net.Socket): string {
  return `${socket.remoteAddress ?? 'unknown'}:${socket.remotePort ?? 0}`;
}
