import http2 from 'node:http2';
import tls from 'node:tls';
import { ConnectError, ConnectTimeoutError, StallguardError, TlsError } from '../errors.js';
import type { Endpoint } from './endpoint.js';

export interface DialOptions {
  endpoint: Endpoint;
  tls: { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized: boolean };
  /** One deadline for TCP connect, the TLS handshake and the server's first SETTINGS frame. */
  timeoutMs: number;
}

/**
 * Opens an HTTP/2 session to an endpoint and resolves once the server's first SETTINGS frame has
 * arrived, so the session is known to speak HTTP/2 end to end and its stream limit is known.
 *
 * node:http2 `connect()` has no handshake timeout of its own (a dropped SYN takes about two
 * minutes to fail on Linux, a ClientHello into a black hole never does), so the TLS socket is
 * made here and the whole sequence runs under one timer that destroys everything on expiry.
 */
export function dialSession(options: DialOptions): Promise<http2.ClientHttp2Session> {
  const { endpoint } = options;

  return new Promise((resolve, reject) => {
    let settled = false;
    let session: http2.ClientHttp2Session | undefined;

    const socket = tls.connect({
      host: endpoint.connectHost ?? endpoint.host,
      port: endpoint.port,
      servername: endpoint.serverName,
      ALPNProtocols: ['h2'],
      ca: options.tls.ca,
      cert: options.tls.cert,
      key: options.tls.key,
      rejectUnauthorized: options.tls.rejectUnauthorized,
    });

    // Small frames (PINGs, HEADERS) must not wait for Nagle's algorithm.
    socket.setNoDelay(true);

    const fail = (err: StallguardError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session?.destroy();
      socket.destroy();
      reject(err);
    };

    const timer = setTimeout(() => fail(new ConnectTimeoutError(endpoint.id, options.timeoutMs)), options.timeoutMs);
    timer.unref();

    socket.on('error', (err: NodeJS.ErrnoException) => {
      const tlsFailure = socket.connecting === false && !socket.encrypted ? false : isTlsError(err);
      fail(tlsFailure ? new TlsError(endpoint.id, err) : new ConnectError(endpoint.id, err));
    });

    socket.once('secureConnect', () => {
      if (socket.alpnProtocol !== 'h2') {
        fail(new ConnectError(endpoint.id, new Error(`server did not negotiate h2 via ALPN (got ${String(socket.alpnProtocol)})`)));
        return;
      }

      session = http2.connect(endpoint.id, {
        createConnection: () => socket,
        settings: { enablePush: false },
      });
      session.on('error', (err) => fail(new ConnectError(endpoint.id, err)));
      session.once('close', () => fail(new ConnectError(endpoint.id, new Error('session closed before the first SETTINGS'))));
      session.once('remoteSettings', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        session!.removeAllListeners('error');
        session!.removeAllListeners('close');
        resolve(session!);
      });
    });
  });
}

function isTlsError(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || code.includes('CERT') || code === 'DEPTH_ZERO_SELF_SIGNED_CERT';
}
