import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';

export interface ClientTls {
  ca: string;
  cert?: string;
  key?: string;
}

export interface ClientResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  trailers: Record<string, string | string[] | undefined>;
}

export interface ClientRequest {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** Gives up after this many ms with an error whose code is ETIMEDOUT. */
  timeoutMs?: number;
}

/** Opens an HTTP/2 session to a TLS URL and waits for the handshake. */
export function connectH2(url: string, tls: ClientTls): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, { ca: tls.ca, cert: tls.cert, key: tls.key });
    session.once('connect', () => {
      session.off('error', reject);
      session.on('error', () => {
        // Reported through the requests that fail.
      });
      resolve(session);
    });
    session.once('error', reject);
  });
}

/** Sends one request on an HTTP/2 session and collects the whole response. */
export function h2Request(session: http2.ClientHttp2Session, request: ClientRequest): Promise<ClientResponse> {
  return new Promise((resolve, reject) => {
    const stream = session.request(
      { ':method': request.method ?? 'GET', ':path': request.path, ...(request.headers ?? {}) },
      { endStream: request.body === undefined },
    );
    const chunks: Buffer[] = [];
    let status = 0;
    let headers: ClientResponse['headers'] = {};
    let trailers: ClientResponse['trailers'] = {};
    let ended = false;

    const timer = request.timeoutMs !== undefined ? setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(Object.assign(new Error(`request ${request.path} timed out after ${request.timeoutMs}ms`), { code: 'ETIMEDOUT' }));
    }, request.timeoutMs) : undefined;

    stream.on('response', (h) => {
      status = Number(h[':status']);
      headers = h;
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('trailers', (t) => {
      trailers = t;
    });
    stream.on('end', () => {
      ended = true;
    });
    stream.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    stream.on('close', () => {
      clearTimeout(timer);
      if (ended && status !== 0 && stream.rstCode === http2.constants.NGHTTP2_NO_ERROR) resolve({ status, headers, body: Buffer.concat(chunks), trailers });
      else reject(Object.assign(new Error(`stream closed with RST code ${stream.rstCode} before the response ended`), { code: 'ERR_STREAM_RESET', rstCode: stream.rstCode }));
    });

    if (request.body !== undefined) stream.end(request.body);
  });
}

/** Sends one HTTP/1.1 request over TLS (ALPN http/1.1) and collects the whole response. */
export function h1Request(url: string, tls: ClientTls, request: ClientRequest): Promise<ClientResponse> {
  return new Promise((resolve, reject) => {
    const target = new URL(request.path, url);
    const req = https.request(target, {
      method: request.method ?? 'GET',
      headers: request.headers,
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      agent: false,
      timeout: request.timeoutMs,
      ...({ ALPNProtocols: ['http/1.1'] } as object),
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.on('response', (res: http.IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('aborted', () => reject(Object.assign(new Error('response aborted'), { code: 'ECONNRESET' })));
      res.on('end', () => {
        if (!res.complete) {
          reject(Object.assign(new Error('response incomplete'), { code: 'ECONNRESET' }));
          return;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), trailers: res.trailers });
      });
    });
    req.end(request.body);
  });
}
