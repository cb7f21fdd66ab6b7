import http2 from 'node:http2';
import type { Logger } from 'pino';
import { describeError, NoReadyEndpointError, StallguardError } from '../errors.js';
import { Metrics, statusClass } from '../metrics/metrics.js';
import type { IdentityHeaders } from '../downstream/identity-headers.js';
import type { UpstreamIdentity } from '../upstream/identity.js';
import type { UpstreamPool } from '../upstream/pool.js';
import type { EvictionReason, StreamTenant, UpstreamSession } from '../upstream/session.js';
import { forwardableTrailers, upstreamRequestHeaders } from './headers.js';
import { ResponseRelay } from './response-relay.js';
import { isIdempotent, isWatch, requestTimeoutMs } from './request-kind.js';
import { RequestBody } from './request-body.js';
import { abortResponse, sendStatus, type DownstreamRequest, type DownstreamResponse } from './respond.js';
import type { StatusReason } from './status.js';
import type { WatchRegistry } from './watch-registry.js';

const { NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL } = http2.constants;

/** How long after a 429's end a GOAWAY may still arrive and mark it as a shutdown rejection. */
const HELD_429_GOAWAY_WAIT_MS = 50;

export interface ForwardSettings {
  maxAttempts: number;
  budgetMs: number;
  maxBodyBytes: number;
  writeFreshnessMs: number;
}

export interface ForwardContext {
  pool: UpstreamPool;
  settings: ForwardSettings;
  metrics: Metrics;
  watches: WatchRegistry;
  log: Logger;
}

/**
 * The outcome of one attempt on one session:
 * - `done`: the response went to the client in full, or the client left;
 * - `unprocessed`: the server provably never processed the request (no stream was opened, it was
 *   refused with REFUSED_STREAM, or it lies above a GOAWAY's last stream id): any method may retry;
 * - `lost`: the session died with the request possibly processed: only idempotent requests retry;
 * - `cut`: the session died after response bytes reached the client: nothing may retry.
 */
type AttemptOutcome =
  | { kind: 'done' }
  | { kind: 'unprocessed' | 'lost'; reason: string; err: StallguardError | Error; timedOut: boolean }
  | { kind: 'cut'; reason: string };

/**
 * Forwards one client request over the pool, retrying on another session what is safe to retry.
 * A write (any method other than GET, HEAD, OPTIONS) is sent only on a session that read a frame
 * within health.writeFreshness. It is replayed only when the server provably did not process it,
 * so it is never applied twice, and it never fails without an error to the client.
 */
export class ForwardedRequest {
  readonly #ctx: ForwardContext;
  readonly #req: DownstreamRequest;
  readonly #res: DownstreamResponse;
  readonly #identity: UpstreamIdentity;
  readonly #identityHeaders: IdentityHeaders | undefined;
  readonly #method: string;
  readonly #path: string;
  readonly #watch: boolean;
  readonly #idempotent: boolean;
  readonly #startedAt = Date.now();
  readonly #deadline: number;
  readonly #tried = new Set<UpstreamSession>();
  #body: RequestBody | undefined;
  #clientGone = false;
  #responseStarted = false;
  #endpoint = 'none';
  #shutdown429Retried = false;
  #watchOpen = false;
  readonly #avoid = new Set<string>();

  constructor(ctx: ForwardContext, req: DownstreamRequest, res: DownstreamResponse, identity: UpstreamIdentity, identityHeaders?: IdentityHeaders) {
    this.#ctx = ctx;
    this.#req = req;
    this.#res = res;
    this.#identity = identity;
    this.#identityHeaders = identityHeaders;
    this.#method = req.method ?? 'GET';
    this.#path = req.url ?? '/';
    this.#watch = isWatch(this.#path);
    this.#idempotent = isIdempotent(this.#method);
    this.#deadline = this.#startedAt + (requestTimeoutMs(this.#path) ?? ctx.settings.budgetMs);

    if (hasRequestBody(req)) this.#body = new RequestBody(req, ctx.settings.maxBodyBytes);
    // 'close' before stallguard ended the response means the client left (RST_STREAM or a closed
    // connection). writableFinished cannot tell: the HTTP/2 compat response reports true then.
    res.once('close', () => {
      if (!res.writableEnded) this.#clientGone = true;
    });
  }

  async run(): Promise<void> {
    const { metrics } = this.#ctx;
    metrics.activeStreams.inc();
    try {
      await this.#runAttempts();
    } catch (err) {
      this.#ctx.log.error({ err: describeError(err), method: this.#method }, 'request failed unexpectedly');
      if (!this.#responseStarted) this.#reply(502, 'InternalError', `stallguard failed to forward the request: ${describeError(err)}`);
      else abortResponse(this.#req, this.#res);
    } finally {
      metrics.activeStreams.dec();
    }
  }

  async #runAttempts(): Promise<void> {
    const { settings, metrics } = this.#ctx;
    let lastFailure = '';

    for (let attempt = 1; attempt <= settings.maxAttempts; attempt++) {
      if (this.#clientGone) return;

      const session = await this.#acquire(lastFailure);
      if (session === undefined) return;

      if (!this.#idempotent) {
        try {
          await session.ensureFresh(settings.writeFreshnessMs);
        } catch (err) {
          // No stream was opened, so trying another session cannot apply the write twice.
          this.#tried.add(session);
          lastFailure = `session ${session.id} to ${session.endpoint.id} did not answer a PING before the write: ${describeError(err)}`;
          attempt--;
          if (Date.now() >= this.#deadline) break;
          continue;
        }
      }

      // The client may have left while a session was found or PINGed. Then nothing is sent, above
      // all not a write whose outcome no client would learn.
      if (this.#clientGone) return;

      this.#tried.add(session);
      this.#endpoint = session.endpoint.id;
      const outcome = await this.#attempt(session);
      if (outcome.kind === 'done' || outcome.kind === 'cut') return;

      if (outcome.reason === 'session_unavailable') {
        // Another request took the last stream slot between selection and use: nothing was sent,
        // so this is no attempt, and the session may be chosen again once it has room.
        this.#tried.delete(session);
        attempt--;
        if (Date.now() >= this.#deadline) break;
        continue;
      }

      lastFailure = `${session.endpoint.id}: ${outcome.reason}`;
      const retryable = outcome.kind === 'unprocessed' || this.#idempotent;
      const replayable = this.#body === undefined || this.#body.replayable;

      if (!retryable) {
        metrics.retries.inc({ reason: outcome.reason, outcome: 'not_retried' });
        const status = outcome.timedOut ? 504 : 502;
        this.#reply(
          status,
          outcome.timedOut ? 'Timeout' : 'InternalError',
          `the connection to ${session.endpoint.id} was lost (${outcome.reason}) after the ${this.#method} request was sent; ` +
            'it may or may not have been applied: read the object back before you retry',
        );
        return;
      }
      if (!replayable) {
        metrics.retries.inc({ reason: outcome.reason, outcome: 'body_too_large' });
        this.#reply(
          503,
          'ServiceUnavailable',
          `the connection to ${session.endpoint.id} was lost (${outcome.reason}) and the request body of ${this.#body!.bytesRead} bytes ` +
            'is larger than retry.maxBodyBytes, so it was not replayed; retry the request',
          1,
        );
        return;
      }
      if (attempt === settings.maxAttempts || Date.now() >= this.#deadline) break;

      metrics.retries.inc({ reason: outcome.reason, outcome: 'retried' });
      this.#ctx.log.info({ method: this.#method, endpoint: session.endpoint.id, sessionId: session.id, reason: outcome.reason, attempt }, 'request retried');
    }

    this.#ctx.metrics.rejected.inc({ reason: 'retries_exhausted' });
    this.#reply(503, 'ServiceUnavailable', `no attempt succeeded within retry.maxAttempts and the request's time budget; last failure: ${lastFailure}`, 1);
  }

  async #acquire(lastFailure: string): Promise<UpstreamSession | undefined> {
    try {
      return await this.#ctx.pool.acquire({ identity: this.#identity, exclude: this.#tried, deadline: this.#deadline, avoidEndpoints: this.#avoid });
    } catch (err) {
      if (!(err instanceof NoReadyEndpointError)) throw err;
      this.#ctx.metrics.rejected.inc({ reason: 'no_endpoint' });
      const attempts = lastFailure !== '' ? [lastFailure, ...err.attempts] : err.attempts;
      const message = attempts.length > 0 ? `no API server could take the request: ${attempts.join('; ')}` : err.message;
      this.#reply(503, 'ServiceUnavailable', message, this.#ctx.pool.retryAfterSeconds());
      return undefined;
    }
  }

  /** Runs one attempt on one session and resolves with how it ended; it never rejects. */
  #attempt(session: UpstreamSession): Promise<AttemptOutcome> {
    return new Promise<AttemptOutcome>((resolve) => {
      let settled = false;
      let stream: http2.ClientHttp2Stream | undefined;
      let endReceived = false;
      const response = new ResponseRelay(this.#res, () => {
        this.#responseStarted = true;
      });

      const settle = (outcome: AttemptOutcome) => {
        if (settled) return;
        settled = true;
        this.#body?.detach();
        resolve(outcome);
      };

      const fail = (unprocessed: boolean, reason: string, err: StallguardError | Error, timedOut = false) => {
        if (settled) return;
        if (this.#responseStarted && response.declaredBodyRelayed) {
          // Every byte the server declared arrived; only the END_STREAM flag was lost with the session.
          this.#finishResponse();
          settle({ kind: 'done' });
          return;
        }
        if (this.#responseStarted) {
          this.#endStartedResponse(reason);
          settle({ kind: 'cut', reason });
          return;
        }
        if (response.status !== undefined && !this.#idempotent && !unprocessed) {
          // The server answered, so the write was processed; only its response body was lost.
          this.#reply(
            502,
            'InternalError',
            `the API server answered ${response.status} to the ${this.#method} request, but the connection to ${session.endpoint.id} ` +
              `was lost (${reason}) before the response arrived in full; read the object back to see its state`,
          );
          settle({ kind: 'cut', reason });
          return;
        }
        settle({ kind: unprocessed ? 'unprocessed' : 'lost', reason, err, timedOut });
      };

      const tenant: StreamTenant = {
        onSessionLost: (reason: EvictionReason, err: StallguardError) => {
          // The session may die between the stream's END_STREAM ('end') and its 'close': the
          // response is whole then, and is finished rather than failed.
          if (endReceived && response.complete) {
            response.releaseHeld();
            this.#finishResponse();
            settle({ kind: 'done' });
            return;
          }
          fail(stream?.id === undefined, reason, err, reason === 'ping_timeout');
        },
        onRetire: () => {
          if (!this.#watch || !this.#responseStarted || settled) return;
          this.#watchEnded('retired');
          this.#res.end();
          stream?.close(NGHTTP2_CANCEL);
          settle({ kind: 'done' });
        },
        onGoaway: (lastStreamId: number) => {
          // Streams above the last stream id were never processed; nghttp2 refuses them next.
          if (stream?.id !== undefined && stream.id > lastStreamId) {
            fail(true, 'goaway', new StallguardError('SG_ERR_GOAWAY', 'upstream', `stream ${stream.id} above GOAWAY last stream id ${lastStreamId}`));
            stream.close(NGHTTP2_CANCEL);
          }
        },
      };

      const headers = upstreamRequestHeaders(this.#method, this.#path, this.#req.headers, session.endpoint.authority, this.#identityHeaders);
      try {
        // With a body, the stream waits for trailers so the client's request trailers can follow.
        stream = session.openStream(tenant, headers, { endStream: this.#body === undefined, waitForTrailers: this.#body !== undefined });
      } catch (err) {
        fail(true, 'session_unavailable', err as Error);
        return;
      }

      stream.on('error', () => {
        // The outcome is decided on 'close' from the RST code; an error listener keeps a stream
        // error from becoming an uncaught exception.
      });

      const onData = (chunk: Buffer) => {
        session.noteRead();
        if (settled || this.#clientGone) {
          response.discard(chunk);
          return;
        }
        response.relay(
          chunk,
          () => stream!.pause(),
          () => stream!.resume(),
        );
      };

      stream.on('response', (upstreamHeaders) => {
        if (settled || this.#clientGone) return;
        // A 429 that comes with a GOAWAY is kube-apiserver's graceful shutdown: the request was
        // rejected unprocessed and goes once to another replica. The GOAWAY may follow the 429's
        // frames, so the small 429 is held until its end (and a moment after) to see which it is.
        // A plain 429 is passed through untouched, so client-go's own back-off applies.
        const hold429 = !this.#watch && !this.#shutdown429Retried && this.#ctx.pool.endpoints.length > 1;
        const status = response.accept(upstreamHeaders, this.#method, hold429);

        this.#ctx.metrics.requests.inc({ method: this.#method, code_class: statusClass(status), endpoint: session.endpoint.id });
        if (this.#watch) {
          // A watch's headers must reach the client before its first event, which may be minutes away.
          response.flushHead();
          this.#watchStarted(session.endpoint.id, () => {
            this.#endWatchForShutdown();
            stream!.close(NGHTTP2_CANCEL);
            settle({ kind: 'done' });
          });
        } else {
          this.#ctx.metrics.requestDuration.observe({ method: this.#method }, (Date.now() - this.#startedAt) / 1000);
        }

        // 'response' is emitted on the next tick after the HEADERS frame, so a DATA frame read in
        // the same batch could overtake it: the body is read only from here on.
        stream!.on('data', onData);
      });

      stream.on('trailers', (trailers) => {
        session.noteRead();
        if (settled || this.#clientGone) return;
        response.flushHead();
        this.#res.addTrailers(forwardableTrailers(trailers));
      });

      stream.on('end', () => {
        endReceived = true;
      });

      stream.on('close', () => {
        if (settled) return;
        const rstCode = stream!.rstCode ?? NGHTTP2_NO_ERROR;

        if (this.#clientGone) {
          settle({ kind: 'done' });
          return;
        }
        if (endReceived && rstCode === NGHTTP2_NO_ERROR && response.holding429) {
          const decide = (final: boolean) => {
            if (settled) return;
            if (session.goawayLastStreamId !== undefined) {
              this.#shutdown429Retried = true;
              this.#avoid.add(session.endpoint.id);
              fail(true, 'shutdown_429', new StallguardError('SG_ERR_SHUTDOWN_429', 'upstream', `${session.endpoint.id} answered 429 while shutting down`));
            } else if (final) {
              response.releaseHeld();
              this.#finishResponse();
              settle({ kind: 'done' });
            } else {
              setTimeout(() => decide(true), HELD_429_GOAWAY_WAIT_MS);
            }
          };
          decide(false);
          return;
        }
        if (endReceived && rstCode === NGHTTP2_NO_ERROR && response.complete) {
          response.flushHead();
          this.#finishResponse();
          settle({ kind: 'done' });
          return;
        }
        if (rstCode === NGHTTP2_REFUSED_STREAM) {
          fail(true, 'refused_stream', new StallguardError('SG_ERR_REFUSED_STREAM', 'upstream', 'the server refused the stream'));
          return;
        }
        fail(false, rstCode === NGHTTP2_NO_ERROR ? 'stream_closed' : `rst_${rstCode}`, new StallguardError('SG_ERR_STREAM_RESET', 'upstream', `stream reset with code ${rstCode}`));
      });

      // A client that leaves cancels its upstream stream at once: the API server stops the work.
      this.#res.once('close', () => {
        if (!settled && this.#clientGone) {
          stream!.close(NGHTTP2_CANCEL);
          this.#watchEnded('client');
          settle({ kind: 'done' });
        }
      });

      if (this.#body !== undefined) {
        const body = this.#body;
        stream.once('wantTrailers', () => stream!.sendTrailers(forwardableTrailers(body.trailers)));
        body.attach(stream);
      }
    });
  }

  /** The server ended the response: end it for the client, watches included. */
  #finishResponse(): void {
    this.#watchEnded('upstream');
    this.#res.end();
  }

  /**
   * The session died after the client saw response bytes. A watch is ended cleanly, so client-go's
   * reflector re-watches from its last resourceVersion at once. Any other response is aborted, so
   * no client takes a truncated body for a whole one.
   */
  #endStartedResponse(reason: string): void {
    if (this.#watch) {
      this.#watchEnded('session_lost');
      this.#ctx.log.info({ endpoint: this.#endpoint, reason }, 'watch ended');
      this.#res.end();
      return;
    }
    this.#ctx.log.info({ endpoint: this.#endpoint, reason, method: this.#method }, 'response aborted');
    abortResponse(this.#req, this.#res);
  }

  /** Ends an open watch during shutdown; the client re-watches elsewhere. */
  readonly #endWatchForShutdown = (): void => {
    if (this.#res.writableEnded) return;
    this.#watchEnded('shutdown');
    this.#res.end();
  };

  /** Registers an open watch once its response started, so shutdown can end it and /state count it. */
  #watchStarted(endpointId: string, end: () => void): void {
    this.#watchOpen = true;
    this.#ctx.watches.add(this, end, endpointId);
    this.#ctx.metrics.activeWatches.inc();
  }

  /** Counts the end of an open watch, once, whichever way it ended. */
  #watchEnded(reason: 'upstream' | 'client' | 'session_lost' | 'retired' | 'shutdown'): void {
    if (!this.#watchOpen) return;
    this.#watchOpen = false;
    this.#ctx.watches.delete(this);
    this.#ctx.metrics.activeWatches.dec();
    this.#ctx.metrics.watchesEnded.inc({ reason });
  }

  #reply(status: number, reason: StatusReason, message: string, retryAfterSeconds?: number): void {
    if (this.#clientGone) return;
    this.#ctx.metrics.requests.inc({ method: this.#method, code_class: statusClass(status), endpoint: this.#endpoint });
    sendStatus(this.#res, status, reason, message, retryAfterSeconds);
  }
}

function hasRequestBody(req: DownstreamRequest): boolean {
  const h2Stream = (req as { stream?: http2.ServerHttp2Stream }).stream;
  if (h2Stream !== undefined) return !h2Stream.endAfterHeaders;

  const length = req.headers['content-length'];
  if (length !== undefined) return Number(length) > 0;
  return req.headers['transfer-encoding'] !== undefined;
}
