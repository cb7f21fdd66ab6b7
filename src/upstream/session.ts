import http2 from 'node:http2';
import type { Logger } from 'pino';
import { PingTimeoutError, SessionClosedError, StallguardError } from '../errors.js';
import { shortenedInterval } from './backoff.js';
import type { Endpoint } from './endpoint.js';
import type { UpstreamIdentity } from './identity.js';

/**
 * The lifecycle of one upstream HTTP/2 session:
 *
 *   ready ──GOAWAY / drain()──▶ draining ──last stream ends──▶ closed
 *     └──────── evict(): PING timeout, reset, EOF, error ─────▶ closed
 *
 * Invariants: new streams are opened only in `ready`. `closed` is final, and its h2 session is
 * destroyed. Every transition goes through `transition()`, which logs once and notifies the pool.
 */
export type SessionState = 'ready' | 'draining' | 'closed';

/** The reason a session left `ready`, from a closed set so it can label metrics. */
export type EvictionReason = 'ping_timeout' | 'reset' | 'eof' | 'goaway' | 'error' | 'drain' | 'shutdown' | 'idle_close' | 'rotation' | 'removed';

/**
 * A request attempt that has a stream open on a session. The session calls it when the session is
 * lost, before the h2 session is destroyed, so the attempt can decide to retry, end a watch
 * cleanly or abort, knowing why.
 */
export interface StreamTenant {
  onSessionLost(reason: EvictionReason, err: StallguardError): void;
  /** Called when a GOAWAY arrives; `lastStreamId` is the highest stream the server will process. */
  onGoaway?(lastStreamId: number): void;
  /**
   * Called when the session is retired because its endpoint was removed or its credentials were
   * rotated. A watch ends cleanly so the client re-watches on another session, and other requests finish.
   */
  onRetire?(): void;
}

export interface SessionHealthOptions {
  pingIntervalMs: number;
  pingTimeoutMs: number;
}

export interface SessionEvents {
  onStateChange(session: UpstreamSession, from: SessionState, to: SessionState, reason: EvictionReason | 'connected'): void;
  onPing?(session: UpstreamSession, outcome: 'ack' | 'timeout', rttMs: number): void;
  /** A stream slot was freed, or the server raised its stream limit. */
  onCapacity?(session: UpstreamSession): void;
}

let nextSessionId = 1;

export class UpstreamSession {
  readonly id = nextSessionId++;
  readonly endpoint: Endpoint;
  readonly identity: UpstreamIdentity;
  readonly openedAt = Date.now();

  state: SessionState = 'ready';
  stateSince = Date.now();
  /** Last time any frame was read: a response, DATA, trailers, a PING ACK, SETTINGS. */
  lastReadAt = Date.now();
  /** The most recent PING round-trip time, in ms. */
  lastRttMs: number | undefined;
  /** The server's current SETTINGS_MAX_CONCURRENT_STREAMS; kube-apiserver advertises 100. */
  maxConcurrentStreams: number;
  /** Set when a GOAWAY arrived: streams above it were never processed by the server. */
  goawayLastStreamId: number | undefined;
  closeReason: EvictionReason | undefined;

  readonly #h2: http2.ClientHttp2Session;
  readonly #health: SessionHealthOptions;
  readonly #events: SessionEvents;
  readonly #log: Logger;
  readonly #tenants = new Set<StreamTenant>();
  /** Streams opened and still waiting for response headers, with the time each was opened. */
  readonly #awaitingHeaders = new Map<StreamTenant, number>();

  #healthTimer: NodeJS.Timeout | undefined;
  #intervalMs: number;
  #lastPingSentAt = 0;
  #ping: { sentAt: number; timer: NodeJS.Timeout; waiters: Array<(err?: StallguardError) => void> } | undefined;

  constructor(
    h2: http2.ClientHttp2Session,
    endpoint: Endpoint,
    identity: UpstreamIdentity,
    health: SessionHealthOptions,
    events: SessionEvents,
    log: Logger,
  ) {
    this.#h2 = h2;
    this.endpoint = endpoint;
    this.identity = identity;
    this.#health = health;
    this.#events = events;
    this.#log = log.child({ endpoint: endpoint.id, sessionId: this.id, identity });
    this.maxConcurrentStreams = h2.remoteSettings.maxConcurrentStreams ?? 100;
    this.#intervalMs = shortenedInterval(health.pingIntervalMs);

    this.#attachListeners();
    this.#scheduleHealthCheck();
    this.#log.info({ maxConcurrentStreams: this.maxConcurrentStreams }, 'session ready');
  }

  get activeStreams(): number {
    return this.#tenants.size;
  }

  /** True when a new stream may be opened: ready and below the server's stream limit. */
  get available(): boolean {
    return this.state === 'ready' && !this.#h2.destroyed && this.#tenants.size < this.maxConcurrentStreams;
  }

  /** Milliseconds since the last frame was read. */
  idleMs(now = Date.now()): number {
    return now - this.lastReadAt;
  }

  /** Records that a frame was read on this session; the forwarder calls it for DATA it relays. */
  noteRead(): void {
    this.lastReadAt = Date.now();
  }

  /**
   * Opens a stream for a tenant. Throws when the session can no longer take streams; the caller
   * has sent nothing then, so any request may go elsewhere.
   */
  openStream(tenant: StreamTenant, headers: http2.OutgoingHttpHeaders, options: { endStream: boolean; waitForTrailers: boolean }): http2.ClientHttp2Stream {
    if (!this.available) {
      throw new SessionClosedError(this.endpoint.id, `session ${this.id} is ${this.state}`);
    }

    const stream = this.#h2.request(headers, options);
    this.#tenants.add(tenant);
    this.#awaitingHeaders.set(tenant, Date.now());

    stream.once('response', () => {
      this.noteRead();
      this.#awaitingHeaders.delete(tenant);
    });
    stream.once('close', () => this.releaseStream(tenant));
    return stream;
  }

  /** Forgets a tenant whose stream has closed; a draining session closes after its last one. */
  releaseStream(tenant: StreamTenant): void {
    if (!this.#tenants.delete(tenant)) return;
    this.#awaitingHeaders.delete(tenant);
    if (this.state === 'draining' && this.#tenants.size === 0) {
      this.#close('drain');
      return;
    }
    if (this.state === 'ready') this.#events.onCapacity?.(this);
  }

  /**
   * Resolves when the session has read a frame within `freshnessMs`, sending a PING first when it
   * has not. Rejects when the PING is not acknowledged within pingTimeout (the session is then
   * evicted). Writes wait on this so that they are never sent into a session that may be dead.
   */
  ensureFresh(freshnessMs: number): Promise<void> {
    if (this.state === 'closed') {
      return Promise.reject(new SessionClosedError(this.endpoint.id, `session ${this.id} is closed`));
    }
    if (this.idleMs() <= freshnessMs) return Promise.resolve();

    return new Promise((resolve, reject) => {
      this.#sendPing((err) => (err ? reject(err) : resolve()));
    });
  }

  /**
   * Drains the session and ends its watches cleanly: used when its endpoint is removed or its
   * credentials were rotated, so long-lived streams move to a current session.
   */
  retire(reason: EvictionReason): void {
    if (this.state === 'closed') return;
    this.drain(reason);
    for (const tenant of [...this.#tenants]) tenant.onRetire?.();
  }

  /** Stops new streams and lets open ones finish; the session closes after the last one. */
  drain(reason: EvictionReason): void {
    if (this.state !== 'ready') return;
    this.#transition('draining', reason);
    if (this.#tenants.size === 0) this.#close(reason);
  }

  /**
   * Evicts the session at once: tenants learn why before the h2 session is destroyed with an
   * error, so no open stream can end looking complete. Never a graceful close(), which waits on
   * streams that a dead connection will never finish.
   */
  evict(reason: EvictionReason, err: StallguardError): void {
    if (this.state === 'closed') return;

    const silentMs = this.idleMs();
    this.closeReason = reason;
    this.#stopHealth();
    this.#transition('closed', reason);
    // Closing every session at shutdown is expected, not a fault worth a warning.
    const level = reason === 'shutdown' ? 'info' : 'warn';
    this.#log[level]({ reason, silentMs, streams: this.#tenants.size, err: err.message }, 'session evicted');

    const tenants = [...this.#tenants];
    this.#tenants.clear();
    this.#awaitingHeaders.clear();
    for (const tenant of tenants) tenant.onSessionLost(reason, err);

    this.#h2.destroy(err, http2.constants.NGHTTP2_CANCEL);
  }

  #close(reason: EvictionReason): void {
    if (this.state === 'closed') return;

    this.closeReason = reason;
    this.#stopHealth();
    this.#transition('closed', reason);
    this.#log.info({ reason }, 'session closed');
    this.#h2.close();
    // close() may wait for streams that the server never ends; nothing of ours is open now.
    setTimeout(() => this.#h2.destroy(), 1000).unref();
  }

  #transition(to: SessionState, reason: EvictionReason): void {
    const from = this.state;
    if (from === to || from === 'closed') return;
    this.state = to;
    this.stateSince = Date.now();
    this.#events.onStateChange(this, from, to, reason);
  }

  #attachListeners(): void {
    const h2 = this.#h2;

    h2.on('error', (err: NodeJS.ErrnoException) => {
      // A TCP reset reaches the session as an ECONNRESET (or EPIPE on write) error.
      const reason = err.code === 'ECONNRESET' || err.code === 'EPIPE' ? 'reset' : 'error';
      this.evict(reason, new SessionClosedError(this.endpoint.id, 'session error', err));
    });

    // EOF without a GOAWAY means the peer, or a middlebox, half-closed the connection: nothing
    // more will be read, so the session is dead at once.
    h2.socket.once('end', () => {
      if (this.state === 'closed') return;
      this.evict(this.goawayLastStreamId === undefined ? 'eof' : 'goaway', new SessionClosedError(this.endpoint.id, 'connection closed by peer'));
    });

    h2.once('close', () => {
      if (this.state === 'closed') return;
      this.evict('reset', new SessionClosedError(this.endpoint.id, 'connection closed'));
    });

    h2.on('remoteSettings', (settings) => {
      this.noteRead();
      if (settings.maxConcurrentStreams !== undefined) {
        const raised = settings.maxConcurrentStreams > this.maxConcurrentStreams;
        this.maxConcurrentStreams = settings.maxConcurrentStreams;
        if (raised) this.#events.onCapacity?.(this);
      }
    });

    h2.on('goaway', (errorCode, lastStreamId) => {
      this.noteRead();
      this.goawayLastStreamId = lastStreamId;
      this.#log.info({ errorCode, lastStreamId, streams: this.#tenants.size }, 'GOAWAY received');

      for (const tenant of [...this.#tenants]) tenant.onGoaway?.(lastStreamId);
      this.drain('goaway');
    });

    h2.on('ping', () => this.noteRead());
  }

  /**
   * Schedules the next liveness check. A session is PINGed when it has read nothing for the
   * (jittered) interval, or when a stream has waited that long for its response headers while
   * other streams keep the session busy (a one-way blackhole toward the server looks like that).
   * Together with the PING deadline this bounds detection to pingInterval + pingTimeout.
   */
  #scheduleHealthCheck(): void {
    if (this.state === 'closed') return;

    const now = Date.now();
    let due = this.lastReadAt + this.#intervalMs;
    const oldestWaiting = this.#awaitingHeaders.values().next();
    if (!oldestWaiting.done) {
      due = Math.min(due, Math.max(oldestWaiting.value, this.#lastPingSentAt) + this.#intervalMs);
    }

    clearTimeout(this.#healthTimer);
    this.#healthTimer = setTimeout(() => this.#checkHealth(), Math.max(due - now, 1));
    this.#healthTimer.unref();
  }

  #checkHealth(): void {
    if (this.state === 'closed') return;

    const now = Date.now();
    const idle = this.idleMs(now) >= this.#intervalMs - 1;
    const oldestWaiting = this.#awaitingHeaders.values().next();
    const headersOverdue =
      !oldestWaiting.done && now - oldestWaiting.value >= this.#intervalMs - 1 && now - this.#lastPingSentAt >= this.#intervalMs - 1;

    if ((idle || headersOverdue) && this.#ping === undefined) {
      this.#intervalMs = shortenedInterval(this.#health.pingIntervalMs);
      this.#sendPing();
      return;
    }

    if (this.#ping === undefined) this.#scheduleHealthCheck();
  }

  /**
   * Sends a PING, or joins the one outstanding. The ACK deadline has its own timer because
   * node:http2 never calls back a PING lost in a blackhole (it calls back only on destroy, or at
   * once when ten are outstanding).
   */
  #sendPing(waiter?: (err?: StallguardError) => void): void {
    if (this.#ping !== undefined) {
      if (waiter) this.#ping.waiters.push(waiter);
      return;
    }

    const sentAt = Date.now();
    const timer = setTimeout(() => this.#onPingTimeout(), this.#health.pingTimeoutMs);
    timer.unref();
    this.#ping = { sentAt, timer, waiters: waiter ? [waiter] : [] };
    this.#lastPingSentAt = sentAt;

    try {
      this.#h2.ping((err, durationMs) => {
        if (err) return; // Only on destroy: eviction has already settled the waiters.
        this.#onPingAck(durationMs);
      });
    } catch (err) {
      // ping() throws when the session died between the timer firing and now.
      this.evict('error', new SessionClosedError(this.endpoint.id, 'PING failed', err));
    }
  }

  #onPingAck(rttMs: number): void {
    const ping = this.#ping;
    if (ping === undefined || this.state === 'closed') return;

    clearTimeout(ping.timer);
    this.#ping = undefined;
    this.noteRead();
    this.lastRttMs = rttMs;
    this.#events.onPing?.(this, 'ack', rttMs);
    for (const waiter of ping.waiters) waiter();
    this.#scheduleHealthCheck();
  }

  #onPingTimeout(): void {
    const ping = this.#ping;
    if (ping === undefined) return;

    this.#ping = undefined;
    const err = new PingTimeoutError(this.endpoint.id, this.#health.pingTimeoutMs);
    this.#events.onPing?.(this, 'timeout', Date.now() - ping.sentAt);
    for (const waiter of ping.waiters) waiter(err);
    this.evict('ping_timeout', err);
  }

  #stopHealth(): void {
    clearTimeout(this.#healthTimer);
    this.#healthTimer = undefined;

    const ping = this.#ping;
    if (ping === undefined) return;
    clearTimeout(ping.timer);
    this.#ping = undefined;
    const err = new SessionClosedError(this.endpoint.id, `session ${this.id} closed`);
    for (const waiter of ping.waiters) waiter(err);
  }
}
