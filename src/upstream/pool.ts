import type { Logger } from 'pino';
import { describeError, NoReadyEndpointError, StallguardError } from '../errors.js';
import type { UpstreamTlsMaterial } from '../tls/upstream-material.js';
import { tlsOptionsFor } from '../tls/upstream-material.js';
import { backoffDelayMs, type BackoffPolicy } from './backoff.js';
import { dialSession } from './dial.js';
import type { Endpoint } from './endpoint.js';
import type { UpstreamIdentity } from './identity.js';
import { UpstreamSession, type EvictionReason, type SessionEvents, type SessionHealthOptions, type SessionState } from './session.js';

/**
 * Why the pool owns its sessions instead of using http2-wrapper's Agent (2.2.4): the Agent kept
 * failing new requests with ERR_HTTP2_GOAWAY_SESSION after a GOAWAY, its `timeout` destroys a
 * session without an error so in-flight responses end looking complete, it keeps handing out a
 * stalled session, its limits count across all origins, and it will not dial a replica by IP while
 * verifying the certificate as another name. Here every session has one explicit state, a PING
 * deadline, and is removed from selection synchronously when it dies.
 */
export interface PoolOptions {
  endpoints: Endpoint[];
  tls: UpstreamTlsMaterial;
  connectTimeoutMs: number;
  backoff: BackoffPolicy;
  health: SessionHealthOptions;
  maxSessionsPerEndpoint: number;
  /** Identities that keep a session open to every endpoint even without traffic. */
  warmIdentities: UpstreamIdentity[];
  log: Logger;
  hooks?: PoolHooks;
}

/** Observers for metrics: the pool calls them on every event, and they must not throw. */
export interface PoolHooks {
  onSessionState?(session: UpstreamSession, from: SessionState, to: SessionState, reason: string): void;
  onPing?(session: UpstreamSession, outcome: 'ack' | 'timeout', rttMs: number): void;
  onDialFailure?(endpoint: Endpoint, err: StallguardError): void;
}

export interface AcquireOptions {
  identity: UpstreamIdentity;
  /** Sessions this request already tried: a retry never goes onto the same session twice. */
  exclude: ReadonlySet<UpstreamSession>;
  /** Absolute time (ms since epoch) after which the request gives up. */
  deadline: number;
}

/**
 * The sessions of one (endpoint, identity) pair, and the dialling state for it. `failures` counts
 * consecutive dial failures and evictions; it sets the backoff and resets on a successful dial.
 */
class SessionGroup {
  readonly sessions: UpstreamSession[] = [];
  dialing: Promise<UpstreamSession> | undefined;
  failures = 0;
  nextDialAt = 0;
  lastError: StallguardError | undefined;
  redialTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly endpoint: Endpoint,
    readonly identity: UpstreamIdentity,
  ) {}
}

export class UpstreamPool {
  readonly #options: PoolOptions;
  readonly #groups = new Map<string, SessionGroup>();
  readonly #log: Logger;
  #closed = false;

  constructor(options: PoolOptions) {
    this.#options = options;
    this.#log = options.log;

    for (const endpoint of options.endpoints) {
      for (const identity of ['client-cert', 'anonymous'] as const) {
        this.#groups.set(groupKey(endpoint, identity), new SessionGroup(endpoint, identity));
      }
    }
  }

  get endpoints(): readonly Endpoint[] {
    return this.#options.endpoints;
  }

  /** Opens the warm sessions; failures are logged and retried with backoff, never thrown. */
  start(): void {
    for (const group of this.#groups.values()) {
      if (this.#options.warmIdentities.includes(group.identity)) this.#dialInBackground(group);
    }
  }

  /**
   * Returns a session that can take one more stream now. Prefers the least loaded ready session
   * of any endpoint; otherwise waits for a dial that is running or due within connectTimeout.
   * Endpoints deep in backoff are skipped, so a request fails fast with NoReadyEndpointError
   * (naming every endpoint and why) instead of queueing behind a dead replica.
   */
  async acquire(options: AcquireOptions): Promise<UpstreamSession> {
    const groups = this.#groupsFor(options.identity);

    const ready = this.#pickReady(groups, options.exclude);
    if (ready !== undefined) return ready;

    const reasons: string[] = [];
    for (const group of this.#orderForDial(groups)) {
      if (Date.now() >= options.deadline) break;

      const session = await this.#awaitSession(group, options, reasons);
      if (session !== undefined) return session;

      // Another endpoint may have come up while this one failed.
      const late = this.#pickReady(groups, options.exclude);
      if (late !== undefined) return late;
    }

    throw new NoReadyEndpointError(reasons);
  }

  /** Seconds a client should wait before retrying when no endpoint is usable. */
  retryAfterSeconds(): number {
    const now = Date.now();
    let soonest = Infinity;
    for (const group of this.#groups.values()) soonest = Math.min(soonest, Math.max(group.nextDialAt - now, 0));
    return Number.isFinite(soonest) ? Math.max(1, Math.ceil(soonest / 1000)) : 1;
  }

  /** True when at least one endpoint holds a session that can take streams. */
  hasReadySession(): boolean {
    for (const group of this.#groups.values()) {
      if (group.sessions.some((session) => session.state === 'ready')) return true;
    }
    return false;
  }

  /** A point-in-time view of every endpoint and session, for /state and metrics. */
  snapshot() {
    return [...this.#groups.values()].map((group) => ({
      endpoint: group.endpoint.id,
      identity: group.identity,
      failures: group.failures,
      lastError: group.lastError ? { code: group.lastError.code, message: group.lastError.message } : undefined,
      nextDialInMs: Math.max(group.nextDialAt - Date.now(), 0),
      dialing: group.dialing !== undefined,
      sessions: group.sessions.map((session) => ({
        id: session.id,
        state: session.state,
        since: new Date(session.stateSince).toISOString(),
        activeStreams: session.activeStreams,
        maxConcurrentStreams: session.maxConcurrentStreams,
        rttMs: session.lastRttMs,
      })),
    }));
  }

  /** Drains every session: no new streams, open ones finish. */
  drainAll(reason: EvictionReason): void {
    for (const group of this.#groups.values()) {
      for (const session of [...group.sessions]) session.drain(reason);
    }
  }

  /** Destroys every session and stops dialling. */
  close(): void {
    this.#closed = true;
    for (const group of this.#groups.values()) {
      clearTimeout(group.redialTimer);
      for (const session of [...group.sessions]) {
        session.evict('shutdown', new StallguardError('SG_ERR_SHUTDOWN', 'local', 'stallguard is shutting down'));
      }
    }
  }

  #groupsFor(identity: UpstreamIdentity): SessionGroup[] {
    return this.#options.endpoints.map((endpoint) => this.#groups.get(groupKey(endpoint, identity))!);
  }

  #pickReady(groups: SessionGroup[], exclude: ReadonlySet<UpstreamSession>): UpstreamSession | undefined {
    let best: UpstreamSession | undefined;
    for (const group of groups) {
      for (const session of group.sessions) {
        if (!session.available || exclude.has(session)) continue;
        if (best === undefined || session.activeStreams < best.activeStreams) best = session;
      }
    }
    if (best !== undefined) this.#growIfNearLimit(best);
    return best;
  }

  /** Endpoints whose dial is running or due soonest come first. */
  #orderForDial(groups: SessionGroup[]): SessionGroup[] {
    return [...groups].sort((a, b) => {
      if ((a.dialing !== undefined) !== (b.dialing !== undefined)) return a.dialing !== undefined ? -1 : 1;
      return a.nextDialAt - b.nextDialAt;
    });
  }

  async #awaitSession(group: SessionGroup, options: AcquireOptions, reasons: string[]): Promise<UpstreamSession | undefined> {
    const waitMs = group.nextDialAt - Date.now();
    if (group.dialing === undefined && waitMs > this.#options.connectTimeoutMs) {
      reasons.push(`${group.endpoint.id}: ${group.lastError?.message ?? 'unavailable'} (next attempt in ${Math.ceil(waitMs / 1000)}s)`);
      return undefined;
    }

    if (group.dialing === undefined && waitMs > 0) {
      await sleep(Math.min(waitMs, options.deadline - Date.now()));
    }

    try {
      const session = await this.#dial(group);
      if (session.available && !options.exclude.has(session)) return session;
      reasons.push(`${group.endpoint.id}: the new session is not available`);
    } catch (err) {
      reasons.push(`${group.endpoint.id}: ${describeError(err)}`);
    }
    return undefined;
  }

  /** Dials one new session for the group, sharing a dial already running. */
  #dial(group: SessionGroup): Promise<UpstreamSession> {
    if (group.dialing !== undefined) return group.dialing;
    if (this.#closed) return Promise.reject(new StallguardError('SG_ERR_SHUTDOWN', 'local', 'stallguard is shutting down'));

    clearTimeout(group.redialTimer);
    group.redialTimer = undefined;

    const dialing = dialSession({
      endpoint: group.endpoint,
      tls: tlsOptionsFor(this.#options.tls, group.identity),
      timeoutMs: this.#options.connectTimeoutMs,
    }).then(
      (h2) => {
        group.dialing = undefined;
        group.failures = 0;
        group.nextDialAt = 0;
        group.lastError = undefined;

        const session = new UpstreamSession(h2, group.endpoint, group.identity, this.#options.health, this.#sessionEvents(group), this.#log);
        group.sessions.push(session);
        if (this.#closed) session.evict('shutdown', new StallguardError('SG_ERR_SHUTDOWN', 'local', 'stallguard is shutting down'));
        return session;
      },
      (err: StallguardError) => {
        group.dialing = undefined;
        this.#recordFailure(group, err);
        this.#options.hooks?.onDialFailure?.(group.endpoint, err);
        this.#log.warn({ endpoint: group.endpoint.id, identity: group.identity, code: err.code, err: err.message, failures: group.failures }, 'dial failed');
        throw err;
      },
    );

    group.dialing = dialing;
    return dialing;
  }

  #dialInBackground(group: SessionGroup): void {
    this.#dial(group).catch(() => {
      // Logged in #dial; the redial is scheduled by #recordFailure.
    });
  }

  /** Counts a failure, sets the backoff, and schedules a redial for warm identities. */
  #recordFailure(group: SessionGroup, err: StallguardError): void {
    group.failures += 1;
    group.lastError = err;
    const delay = backoffDelayMs(this.#options.backoff, group.failures);
    group.nextDialAt = Date.now() + delay;

    if (this.#closed || !this.#options.warmIdentities.includes(group.identity)) return;
    clearTimeout(group.redialTimer);
    group.redialTimer = setTimeout(() => this.#dialInBackground(group), delay);
    group.redialTimer.unref();
  }

  /**
   * Opens one more session to the endpoint when the chosen one is close to the server's stream
   * limit (watches hold streams for hours), up to maxSessionsPerEndpoint.
   */
  #growIfNearLimit(session: UpstreamSession): void {
    if (session.activeStreams + 1 < session.maxConcurrentStreams) return;

    const group = this.#groups.get(groupKey(session.endpoint, session.identity))!;
    const open = group.sessions.filter((candidate) => candidate.state !== 'closed');
    const spare = open.some((candidate) => candidate !== session && candidate.available);
    if (spare || group.dialing !== undefined || open.length >= this.#options.maxSessionsPerEndpoint) return;
    this.#dialInBackground(group);
  }

  #sessionEvents(group: SessionGroup): SessionEvents {
    return {
      onStateChange: (session, from, to, reason) => {
        if (to === 'closed') {
          const index = group.sessions.indexOf(session);
          if (index >= 0) group.sessions.splice(index, 1);
        }
        // A session leaves `ready` once: on drain or GOAWAY (then later closes), or on eviction.
        if (from === 'ready') this.#afterSessionLoss(group, reason as EvictionReason, session);
        this.#options.hooks?.onSessionState?.(session, from, to, reason);
      },
      onPing: (session, outcome, rttMs) => this.#options.hooks?.onPing?.(session, outcome, rttMs),
    };
  }

  /**
   * Replaces a lost session. A failure (PING timeout, reset, EOF) backs off with full jitter so a
   * fleet that lost the same balancer does not reconnect in the same second; a graceful GOAWAY or
   * drain is replaced at once, as the server asked us to reconnect.
   */
  #afterSessionLoss(group: SessionGroup, reason: EvictionReason, session: UpstreamSession): void {
    if (this.#closed || reason === 'shutdown') return;

    const failure = reason === 'ping_timeout' || reason === 'reset' || reason === 'eof' || reason === 'error';
    if (failure) {
      this.#recordFailure(group, new StallguardError('SG_ERR_SESSION_LOST', 'local', `session ${session.id} lost: ${reason}`));
      return;
    }

    const stillOpen = group.sessions.some((candidate) => candidate.state === 'ready');
    if (!stillOpen && this.#options.warmIdentities.includes(group.identity)) this.#dialInBackground(group);
  }
}

function groupKey(endpoint: Endpoint, identity: UpstreamIdentity): string {
  return `${endpoint.id}|${identity}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(ms, 0)).unref());
}
