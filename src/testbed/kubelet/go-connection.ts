import http2 from 'node:http2';
import type { ClientTls } from '../client.js';
import {
  KubeletRequestError,
  type ConnectionCloseReason,
  type KubeletEventListener,
  type KubeletOperation,
} from './events.js';
import { ReadIdleHealthCheck } from './health-check.js';
import type { GoHealthCheck } from './timings.js';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants;

export interface GoConnectionOptions {
  /** The client's name in events. */
  client: string;
  /** https://host:port of the API server, the balancer or stallguard. */
  url: string;
  tls: ClientTls;
  /** client-go's health check; undefined sends no PING at all. */
  healthCheck: GoHealthCheck | undefined;
  /** Bounds TCP, TLS and the server's SETTINGS together. */
  dialTimeoutMs: number;
  userAgent: string;
  emit: KubeletEventListener;
}

export interface UnaryRequest {
  operation: KubeletOperation;
  method: string;
  path: string;
  contentType?: string;
  body?: string;
  /** The client's deadline, dial included; undefined waits for as long as the connection lives. */
  timeoutMs?: number;
  /** Statuses outside 2xx that the caller expects, such as 404 for a GET before a create. */
  expectedStatuses?: number[];
}

export interface UnaryResponse {
  status: number;
  body: Buffer;
}

export interface WatchStream {
  /** Settles when the response ends: `clean` when the server ended it (END_STREAM). */
  ended: Promise<{ clean: boolean; reason: string }>;
  /** Resets the stream with CANCEL, as a client that stops watching does. */
  cancel(): void;
}

/** One HTTP/2 connection with the state this client keeps for it. */
interface LiveSession {
  id: number;
  h2: http2.ClientHttp2Session;
  /** False after GOAWAY or once it closes: new requests go to a new connection. */
  usable: boolean;
  closeReason: ConnectionCloseReason | undefined;
  closeDetail: string;
  healthCheck: ReadIdleHealthCheck | undefined;
}

let nextConnectionId = 1;

/**
 * The connection handling of Go's HTTP/2 transport as kubelet uses it: every request shares one
 * connection, dialled when the first request needs it and again only after it closed. A request
 * that reaches its deadline is cancelled with RST_STREAM while the connection stays in use, so the
 * requests after it land on the same connection. Only the health check, a GOAWAY, the network or
 * closeAll() end a connection.
 */
export class GoHttp2Connection {
  readonly #options: GoConnectionOptions;
  #current: LiveSession | undefined;
  #dialing: Promise<LiveSession> | undefined;
  /** Ends the dial in progress; stop() calls it so that no dial outlives the client. */
  #abortDial: (() => void) | undefined;
  #stopped = false;

  constructor(options: GoConnectionOptions) {
    this.#options = options;
  }

  /**
   * Sends one request and reads the whole response, whatever its status; rejects with
   * KubeletRequestError when no response arrived. A status outside 2xx and `expectedStatuses` is
   * reported as a failed request.
   */
  async request(request: UnaryRequest): Promise<UnaryResponse> {
    const startedAt = Date.now();
    const deadline = request.timeoutMs !== undefined ? startedAt + request.timeoutMs : undefined;

    try {
      const response = await this.#sendWithReconnect(request, deadline);
      const ok = (response.status >= 200 && response.status < 300) || (request.expectedStatuses ?? []).includes(response.status);
      this.#emitRequest(request, startedAt, ok ? undefined : statusError(response), response.status);
      return response;
    } catch (err) {
      const failure = asRequestError(err);
      this.#emitRequest(request, startedAt, failure, undefined);
      throw failure;
    }
  }

  /**
   * Opens a watch and resolves once its response headers arrive with 200. Each complete line of
   * the body goes to `onLine`. Rejects with KubeletRequestError when the watch cannot start.
   */
  async openWatch(path: string, onLine: (line: string) => void): Promise<WatchStream> {
    const request: UnaryRequest = { operation: 'pod-watch', method: 'GET', path };
    const startedAt = Date.now();

    try {
      const session = await this.#acquire(undefined);
      const watch = await this.#startWatch(session, path, onLine);
      this.#emitRequest(request, startedAt, undefined, 200);
      return watch;
    } catch (err) {
      const failure = asRequestError(err);
      this.#emitRequest(request, startedAt, failure, failure.status);
      throw failure;
    }
  }

  /**
   * Closes the open connection at once, failing every request on it, as kubelet's
   * OnHeartbeatFailure (closeAllConns) does; the next request dials a new one.
   */
  closeAll(reason: ConnectionCloseReason, detail: string): void {
    const session = this.#current;
    if (session === undefined) return;
    this.#close(session, reason, detail);
  }

  /** Closes the connection and fails whatever still waits on it; no request dials again. */
  stop(): void {
    this.#stopped = true;
    this.#abortDial?.();
    if (this.#current !== undefined) this.#close(this.#current, 'stopped', 'client stopped');
  }

  // Go's transport resends a request that never reached a connection, such as one that found
  // its connection closed: only a request that was written can fail with connection-lost.
  async #sendWithReconnect(request: UnaryRequest, deadline: number | undefined): Promise<UnaryResponse> {
    for (;;) {
      const session = await this.#acquire(deadline);
      let stream: http2.ClientHttp2Stream;
      try {
        stream = session.h2.request(this.#headers(request), { endStream: request.body === undefined });
      } catch {
        session.usable = false;
        continue;
      }
      return this.#exchange(session, stream, request, deadline);
    }
  }

  #exchange(session: LiveSession, stream: http2.ClientHttp2Stream, request: UnaryRequest, deadline: number | undefined): Promise<UnaryResponse> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let status = 0;
      let ended = false;
      let settled = false;

      const timer =
        deadline !== undefined
          ? setTimeout(() => {
              settled = true;
              stream.close(NGHTTP2_CANCEL);
              reject(new KubeletRequestError('timeout', 'timed out; stream reset with CANCEL, connection kept'));
            }, Math.max(0, deadline - Date.now()))
          : undefined;

      stream.on('response', (headers) => {
        status = Number(headers[':status']);
      });
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        ended = endStreamReceived(session);
      });
      stream.on('error', () => {
        // Decided on 'close' below.
      });
      stream.on('close', () => {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        if (ended && status > 0 && stream.rstCode === NGHTTP2_NO_ERROR) {
          resolve({ status, body: Buffer.concat(chunks) });
          return;
        }
        reject(this.#lostError(session, stream));
      });

      if (request.body !== undefined) stream.end(request.body);
    });
  }

  #startWatch(session: LiveSession, path: string, onLine: (line: string) => void): Promise<WatchStream> {
    return new Promise((resolve, reject) => {
      let stream: http2.ClientHttp2Stream;
      try {
        stream = session.h2.request(this.#headers({ operation: 'pod-watch', method: 'GET', path }));
      } catch (err) {
        session.usable = false;
        reject(new KubeletRequestError('connection-lost', `the connection could not take the watch: ${(err as Error).message}`));
        return;
      }

      let partial = '';
      let ended = false;
      let started = false;
      let finish: (outcome: { clean: boolean; reason: string }) => void = () => undefined;
      const endedPromise = new Promise<{ clean: boolean; reason: string }>((resolveEnded) => (finish = resolveEnded));

      stream.setEncoding('utf8');
      stream.on('response', (headers) => {
        const status = Number(headers[':status']);
        if (status !== 200) {
          stream.close(NGHTTP2_CANCEL);
          reject(new KubeletRequestError('http-status', `watch returned status ${status}`, status));
          return;
        }
        started = true;
        resolve({ ended: endedPromise, cancel: () => stream.close(NGHTTP2_CANCEL) });
      });
      stream.on('data', (chunk: string) => {
        const lines = (partial + chunk).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          if (line.trim() !== '') onLine(line);
        }
      });
      stream.on('end', () => {
        ended = endStreamReceived(session);
      });
      stream.on('error', () => {
        // Decided on 'close' below.
      });
      stream.on('close', () => {
        const clean = ended && stream.rstCode === NGHTTP2_NO_ERROR;
        if (!started) {
          reject(this.#lostError(session, stream));
          return;
        }
        finish({ clean, reason: clean ? 'the server ended the watch' : this.#lostError(session, stream).message });
      });
    });
  }

  #lostError(session: LiveSession, stream: http2.ClientHttp2Stream): KubeletRequestError {
    if (this.#stopped) return new KubeletRequestError('stopped', 'client stopped');
    if (session.closeReason === 'health-check') return new KubeletRequestError('connection-lost', 'connection closed by the HTTP/2 health check');
    if (session.closeReason === 'heartbeat-failure') return new KubeletRequestError('connection-lost', 'connection closed after repeated heartbeat failures');
    return new KubeletRequestError('connection-lost', `stream closed with RST code ${stream.rstCode} before the response ended`);
  }

  async #acquire(deadline: number | undefined): Promise<LiveSession> {
    for (;;) {
      if (this.#stopped) throw new KubeletRequestError('stopped', 'client stopped');
      const current = this.#current;
      if (current !== undefined && current.usable && !current.h2.destroyed && !current.h2.closed) return current;

      this.#dialing ??= this.#dial().finally(() => {
        this.#dialing = undefined;
      });
      await raceDeadline(this.#dialing, deadline, 'timed out while connecting');
    }
  }

  #dial(): Promise<LiveSession> {
    const { url, tls, dialTimeoutMs } = this.#options;
    const startedAt = Date.now();

    return new Promise<LiveSession>((resolve, reject) => {
      const h2 = http2.connect(url, { ca: tls.ca, cert: tls.cert, key: tls.key });
      let settled = false;
      const settle = () => {
        settled = true;
        clearTimeout(timer);
        if (this.#abortDial === abort) this.#abortDial = undefined;
      };
      const fail = (error: KubeletRequestError) => {
        if (settled) return;
        settle();
        h2.destroy();
        reject(error);
      };
      const abort = () => fail(new KubeletRequestError('stopped', 'client stopped'));
      const timer = setTimeout(() => fail(new KubeletRequestError('dial-failed', `connecting to ${url} timed out after ${formatMs(dialTimeoutMs)}`)), dialTimeoutMs);
      this.#abortDial = abort;

      // Stays attached after a failed dial too, so that a late socket error is not left unhandled.
      h2.on('error', (err) => fail(new KubeletRequestError('dial-failed', `connecting to ${url} failed: ${err.message}`)));
      h2.once('connect', () => {
        if (settled) return;
        settle();
        const session = this.#adopt(h2);
        this.#options.emit({ type: 'connection-opened', client: this.#options.client, at: Date.now(), connectionId: session.id, dialMs: Date.now() - startedAt });
        resolve(session);
      });
    });
  }

  #adopt(h2: http2.ClientHttp2Session): LiveSession {
    const session: LiveSession = { id: nextConnectionId++, h2, usable: true, closeReason: undefined, closeDetail: '', healthCheck: undefined };
    this.#current = session;

    h2.on('error', () => {
      // Every request on the connection fails through its stream's 'close'.
    });
    h2.on('goaway', () => {
      session.usable = false;
    });
    h2.on('close', () => {
      session.usable = false;
      session.healthCheck?.stop();
      if (this.#current === session) this.#current = undefined;
      const reason = session.closeReason ?? 'remote';
      const detail = session.closeReason === undefined ? 'closed by the server or the network' : session.closeDetail;
      this.#options.emit({ type: 'connection-closed', client: this.#options.client, at: Date.now(), connectionId: session.id, reason, detail });
    });

    const settings = this.#options.healthCheck;
    if (settings !== undefined) {
      session.healthCheck = new ReadIdleHealthCheck(h2, settings, {
        onPingSent: (idleMs) => this.#emitHealth(session, 'ping-sent', idleMs),
        onPingAck: () => this.#emitHealth(session, 'ping-ack'),
        onPingTimeout: () => {
          this.#emitHealth(session, 'ping-timeout');
          this.#close(session, 'health-check', `no PING ACK within ${formatMs(settings.pingTimeoutMs)}`);
        },
      });
      session.healthCheck.start();
    }
    return session;
  }

  #close(session: LiveSession, reason: ConnectionCloseReason, detail: string): void {
    if (session.closeReason !== undefined || session.h2.destroyed) return;
    session.closeReason = reason;
    session.closeDetail = detail;
    session.usable = false;
    session.healthCheck?.stop();
    session.h2.destroy();
  }

  #headers(request: UnaryRequest): http2.OutgoingHttpHeaders {
    const headers: http2.OutgoingHttpHeaders = {
      ':method': request.method,
      ':path': request.path,
      accept: 'application/json',
      'user-agent': this.#options.userAgent,
    };
    if (request.contentType !== undefined) headers['content-type'] = request.contentType;
    return headers;
  }

  #emitHealth(session: LiveSession, outcome: 'ping-sent' | 'ping-ack' | 'ping-timeout', idleMs?: number): void {
    this.#options.emit({ type: 'health-check', client: this.#options.client, at: Date.now(), connectionId: session.id, outcome, idleMs });
  }

  // A request that stop() cut short did not fail on its own, so it is not reported.
  #emitRequest(request: UnaryRequest, startedAt: number, failure: KubeletRequestError | undefined, status: number | undefined): void {
    if (failure?.code === 'stopped') return;
    this.#options.emit({
      type: 'request',
      client: this.#options.client,
      at: Date.now(),
      operation: request.operation,
      method: request.method,
      ok: failure === undefined,
      status,
      latencyMs: Date.now() - startedAt,
      failure: failure === undefined ? undefined : { code: failure.code, message: failure.message },
    });
  }
}

/**
 * Returns true when a stream's end came from the server's END_STREAM. Node also ends the readable
 * side, with rstCode 0, when the session is destroyed, so only an end seen while the session is
 * alive counts.
 */
function endStreamReceived(session: LiveSession): boolean {
  return !session.h2.destroyed;
}

function statusError(response: UnaryResponse): KubeletRequestError {
  let message = `returned status ${response.status}`;
  try {
    const status = JSON.parse(response.body.toString('utf8')) as { message?: unknown };
    if (typeof status.message === 'string') message += `: ${status.message}`;
  } catch {
    // Not a Status body, so the status code is the whole message.
  }
  return new KubeletRequestError('http-status', message, response.status);
}

function asRequestError(err: unknown): KubeletRequestError {
  if (err instanceof KubeletRequestError) return err;
  return new KubeletRequestError('connection-lost', err instanceof Error ? err.message : String(err));
}

function raceDeadline<T>(promise: Promise<T>, deadline: number | undefined, message: string): Promise<T> {
  if (deadline === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new KubeletRequestError('timeout', message)), Math.max(0, deadline - Date.now()));
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)} s` : `${Math.round(ms)} ms`;
}
