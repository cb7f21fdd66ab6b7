import http2 from 'node:http2';
import { describeError, type StallguardError } from '../errors.js';
import type { UpstreamIdentity } from '../upstream/identity.js';
import type { AcquireOptions } from '../upstream/pool.js';
import type { StreamTenant, UpstreamSession } from '../upstream/session.js';
import { VERSION } from '../version.js';

/** The one pool method the client uses, so tests and wiring can pass the pool itself. */
export interface SessionSource {
  acquire(options: AcquireOptions): Promise<UpstreamSession>;
}

export interface ApiClientOptions {
  pool: SessionSource;
  /** Sessions of this identity carry the requests: the warm one, so no extra dial is needed. */
  identity: UpstreamIdentity;
  /** Deadline for getting a session and the response headers, and for a whole GET. */
  timeoutMs: number;
  /** Largest response body of a GET, and largest watch event line, in bytes. */
  maxBodyBytes: number;
}

export interface ApiResponse {
  status: number;
  body: Buffer;
  /** Id of the endpoint that sent the response, for logs. */
  endpoint: string;
}

/**
 * Why a watch stream ended:
 * - `ended`: the server ended the response (its timeoutSeconds passed, or it shut down cleanly);
 * - `retired`: the session's endpoint was removed or its credentials rotated;
 * - `goaway`: the server sent GOAWAY on the session;
 * - `session_lost`: the session was evicted (PING timeout, reset, EOF);
 * - `failed`: no session, no response headers in time, a stream error or an oversized event;
 * - `stopped`: the caller aborted it.
 */
export type WatchEndReason = 'ended' | 'retired' | 'goaway' | 'session_lost' | 'failed' | 'stopped';

export type WatchOutcome =
  | { kind: 'status'; response: ApiResponse }
  | { kind: 'end'; reason: WatchEndReason; endpoint: string | undefined; detail: string };

/**
 * A small client for stallguard's own reads of the API, such as endpoint discovery: each request
 * is a stream on a pool session, picked by the same health rules as forwarded requests, with no
 * downstream request behind it.
 */
export class PoolApiClient {
  readonly #options: ApiClientOptions;

  constructor(options: ApiClientOptions) {
    this.#options = options;
  }

  /** Sends GET `path` and reads the whole response; rejects on any failure before the body's end. */
  async get(path: string): Promise<ApiResponse> {
    const deadline = Date.now() + this.#options.timeoutMs;
    const session = await this.#acquire(deadline);

    return new Promise<ApiResponse>((resolve, reject) => {
      let settled = false;
      let stream: http2.ClientHttp2Stream | undefined;
      let status = 0;
      const body = new BoundedBuffer(this.#options.maxBodyBytes);

      const finish = (err: Error | undefined) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err !== undefined) {
          if (stream !== undefined && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
          reject(err);
          return;
        }
        resolve({ status, body: body.contents(), endpoint: session.endpoint.id });
      };

      const tenant: StreamTenant = {
        onSessionLost: (_reason, err) => finish(err),
        onGoaway: (lastStreamId) => {
          if (stream?.id !== undefined && stream.id > lastStreamId) finish(new Error(`${session.endpoint.id} sent GOAWAY before it processed the request`));
        },
      };

      const timer = setTimeout(() => finish(new Error(`no complete response from ${session.endpoint.id} within ${this.#options.timeoutMs}ms`)), Math.max(deadline - Date.now(), 1));
      timer.unref();

      try {
        stream = session.openStream(tenant, requestHeaders(session, path), { endStream: true, waitForTrailers: false });
      } catch (err) {
        finish(err as Error);
        return;
      }

      stream.on('response', (headers) => {
        session.noteRead();
        status = Number(headers[':status']);
      });
      stream.on('data', (chunk: Buffer) => {
        session.noteRead();
        if (!body.append(chunk)) finish(new Error(`the response from ${session.endpoint.id} is larger than ${this.#options.maxBodyBytes} bytes`));
      });
      stream.on('end', () => finish(undefined));
      stream.on('error', (err) => finish(err));
      stream.on('close', () => finish(new Error(`the stream to ${session.endpoint.id} closed before the response ended`)));
    });
  }

  /**
   * Opens a watch (GET `path` with watch=1 in it) and calls `onLine` for each newline-delimited
   * event until the stream ends. Resolves with the response when its status is not 200, or with
   * why the stream ended; never rejects. A retired session or a GOAWAY ends the watch at once, so
   * that it never keeps a draining session open, and the caller re-watches on another session.
   */
  async watch(path: string, onLine: (line: string) => void, signal: AbortSignal): Promise<WatchOutcome> {
    let session: UpstreamSession;
    try {
      session = await this.#acquire(Date.now() + this.#options.timeoutMs);
    } catch (err) {
      return { kind: 'end', reason: 'failed', endpoint: undefined, detail: describeError(err) };
    }

    return new Promise<WatchOutcome>((resolve) => {
      let settled = false;
      let stream: http2.ClientHttp2Stream | undefined;
      let status = 0;
      let pendingLine = '';
      const body = new BoundedBuffer(this.#options.maxBodyBytes);
      const endpoint = session.endpoint.id;

      const finish = (outcome: WatchOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(headersTimer);
        signal.removeEventListener('abort', onAbort);
        if (stream !== undefined && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
        resolve(outcome);
      };
      const end = (reason: WatchEndReason, detail: string) => finish({ kind: 'end', reason, endpoint, detail });

      const tenant: StreamTenant = {
        onSessionLost: (reason, err: StallguardError) => end('session_lost', `${reason}: ${err.message}`),
        onGoaway: () => end('goaway', 'the server sent GOAWAY'),
        onRetire: () => end('retired', 'the session was retired'),
      };

      const onAbort = () => end('stopped', 'stopped');
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort);

      const headersTimer = setTimeout(() => end('failed', `no response headers within ${this.#options.timeoutMs}ms`), this.#options.timeoutMs);
      headersTimer.unref();

      try {
        stream = session.openStream(tenant, requestHeaders(session, path), { endStream: true, waitForTrailers: false });
      } catch (err) {
        end('failed', describeError(err));
        return;
      }

      stream.on('response', (headers) => {
        session.noteRead();
        clearTimeout(headersTimer);
        status = Number(headers[':status']);
      });
      stream.on('data', (chunk: Buffer) => {
        session.noteRead();
        if (status !== 200) {
          if (!body.append(chunk)) end('failed', `the ${status} response is larger than ${this.#options.maxBodyBytes} bytes`);
          return;
        }

        pendingLine += chunk.toString('utf8');
        const lines = pendingLine.split('\n');
        pendingLine = lines.pop()!;
        if (Buffer.byteLength(pendingLine) > this.#options.maxBodyBytes) {
          end('failed', `a watch event is larger than ${this.#options.maxBodyBytes} bytes`);
          return;
        }
        for (const line of lines) {
          if (settled) return;
          if (line.trim() !== '') onLine(line);
        }
      });
      stream.on('end', () => {
        if (status !== 200) finish({ kind: 'status', response: { status, body: body.contents(), endpoint } });
        else end('ended', 'the server ended the watch');
      });
      stream.on('error', (err) => end('failed', describeError(err)));
      stream.on('close', () => end('failed', 'the stream closed before the response ended'));
    });
  }

  #acquire(deadline: number): Promise<UpstreamSession> {
    return this.#options.pool.acquire({ identity: this.#options.identity, exclude: new Set(), deadline });
  }
}

function requestHeaders(session: UpstreamSession, path: string): http2.OutgoingHttpHeaders {
  return {
    ':method': 'GET',
    ':path': path,
    ':scheme': 'https',
    ':authority': session.endpoint.authority,
    accept: 'application/json',
    'user-agent': `stallguard/${VERSION} (endpoint discovery)`,
  };
}

/** Collects chunks up to a byte limit. */
class BoundedBuffer {
  readonly #chunks: Buffer[] = [];
  #size = 0;

  constructor(readonly limit: number) {}

  /** Adds a chunk; returns false, keeping nothing more, once the limit is passed. */
  append(chunk: Buffer): boolean {
    this.#size += chunk.length;
    if (this.#size > this.limit) return false;
    this.#chunks.push(chunk);
    return true;
  }

  contents(): Buffer {
    return Buffer.concat(this.#chunks);
  }
}
