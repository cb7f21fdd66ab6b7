import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics/metrics.js';
import type { RequestHandlers } from './tls-listener.js';

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/**
 * The optional plaintext listener: HTTP/1.1 and h2c with prior knowledge on one port, told apart
 * by the first bytes (the HTTP/2 connection preface). Only loopback peers are served, whatever
 * address the listener is bound to.
 */
export function createPlaintextListener(handlers: RequestHandlers, log: Logger, metrics: Metrics): net.Server {
  const h2c = http2.createServer({ settings: { enablePush: false } });
  h2c.on('request', (req, res) => handlers.onRequest(req, res, undefined));
  h2c.on('sessionError', (err) => log.debug({ err: err.message }, 'h2c client session error'));

  const h1 = http.createServer();
  h1.on('request', (req, res) => handlers.onRequest(req, res, undefined));
  h1.on('upgrade', (req, socket, head) => handlers.onUpgrade(req, socket, head));
  h1.on('clientError', (_err, socket) => socket.destroy());

  return net.createServer((socket) => {
    socket.on('error', () => {
      // A client that resets mid-request is normal.
    });
    if (!isLoopback(socket.remoteAddress)) {
      log.warn({ peer: socket.remoteAddress }, 'plaintext connection from a non-loopback peer rejected');
      socket.destroy();
      return;
    }

    socket.once('data', (first: Buffer) => {
      socket.pause();
      socket.unshift(first);
      const prefaceLength = Math.min(first.length, H2_PREFACE.length);
      const isH2 = first.subarray(0, prefaceLength).equals(H2_PREFACE.subarray(0, prefaceLength));
      metrics.downstreamConnections.inc({ protocol: isH2 ? 'h2c' : 'http/1.1', tls: 'plaintext' });
      // Node's HTTP/2 session reads a net.Socket's native handle directly and would miss the bytes
      // just put back, so it gets a stream wrapper that reads through the JavaScript stream instead.
      if (isH2) h2c.emit('connection', Duplex.from({ readable: socket, writable: socket }));
      else h1.emit('connection', socket);
      socket.resume();
    });
  });
}

export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  if (address === '::1') return true;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return net.isIPv4(v4) && v4.startsWith('127.');
}
