import type { Logger } from 'pino';
import { describeError, NoReadyEndpointError, StallguardError, TlsError } from '../errors.js';
import type { UpstreamTlsMaterial } from '../tls/upstream-material.js';
import { tlsOptionsFor } from '../tls/upstream-material.js';
import { backoffDelayMs, shortenedInterval, type BackoffPolicy } from './backoff.js';
import { dialSession } from './dial.js';
import type { Endpoint } from './endpoint.js';
import { EndpointHealth, type EndpointTransitionReason } from './endpoint-health.js';
import type { UpstreamIdentity } from './identity.js';
import { probeReadiness } from './readiness-probe.js';
import type { EndpointSnapshot, EndpointState } from './snapshot.js';
import { EndpointEntry, SessionGroup } from './endpoint-entry.js';
import { UpstreamSession, type EvictionReason, type SessionEvents, type SessionHealthOptions, type SessionState } from './session.js';

/**
 * The pool owns its sessions (node:http2 `connect()`) instead of using http2-wrapper's Agent.
 * When the Agent (2.2.4) was tried as this pool it kept failing new requests with
 * ERR_HTTP2_GOAWAY_SESSION after a GOAWAY, its `timeout` destroyed a session without an error so
 * in-flight responses ended looking complete, it kept handing out a stalled session, its limits
 * counted across all origins, and it would not dial a replica by IP while verifying the
 * certificate as another name. NOTE: those findings were reported, not re-run here; the
 * node:http2 behaviours this pool relies on instead are pinned by test/node-http2-facts.test.ts.
 * Here every session has one explicit state and a PING deadline, and leaves selection
 * synchronously when it dies.
 */
export interface PoolOptions {
  endpoints: Endpoint[];
  /** Addresses (typically the load balancer) used only while no other endpoint is ready. */
  fallbackEndpoints?: Endpoint[];
  tls: UpstreamTlsMaterial;
  connectTimeoutMs: number;
  backoff: BackoffPolicy;
  health: SessionHealthOptions & {
    readyPath: string;
    readyIntervalMs: number;
    ejectionTimeMs: number;
    maxEjectionTimeMs: number;
    maxEjectionPercent: number;
  };
  maxSessionsPerEndpoint: number;
  /** Endpoints that always keep a live session for the warm identity. */
  warmEndpoints: number;
  /** The identity whose sessions are kept warm: the node's certificate when there is one. */
  warmIdentity: UpstreamIdentity;
  log: Logger;
  hooks?: PoolHooks;
}

/** Observers for metrics: the pool calls them on every event, and they must not throw. */
export interface PoolHooks {
  onSessionState?(session: UpstreamSession, from: SessionState, to: SessionState, reason: string): void;
  onEndpointState?(endpoint: Endpoint, from: EndpointState, to: EndpointState, reason: EndpointTransitionReason): void;
  onPing?(session: UpstreamSession, outcome: 'ack' | 'timeout', rttMs: number): void;
  onDialFailure?(endpoint: Endpoint, err: StallguardError): void;
  onProbe?(endpoint: Endpoint, ready: boolean): void;
}

export interface AcquireOptions {
  identity: UpstreamIdentity;
  /** Sessions this request already tried: a retry never goes onto the same session twice. */
  exclude: ReadonlySet<UpstreamSession>;
  /** Absolute time (ms since epoch) after which the request gives up. */
  deadline: number;
  /** Endpoints to avoid when another can serve (a replica that answered 429 while draining). */
  avoidEndpoints?: ReadonlySet<string>;
}

/** Local-origin session losses; graceful ones (GOAWAY, drain) are not failures. */
const FAILURE_REASONS = new Set<EvictionReason>(['ping_timeout', 'reset', 'eof', 'error']);

export class UpstreamPool {
  readonly #options: PoolOptions;
  #entries: EndpointEntry[] = [];
  #tls: UpstreamTlsMaterial;
  readonly #log: Logger;
  /** Requests waiting for a stream slot while every session is at the server's stream limit. */
  readonly #capacityWaiters = new Set<() => void>();
  #closed = false;

  constructor(options: PoolOptions) {
    this.#options = options;
    this.#log = options.log;
    this.#tls = options.tls;
    for (const endpoint of options.endpoints) this.#entries.push(this.#newEntry(endpoint, 'primary'));
    for (const endpoint of options.fallbackEndpoints ?? []) this.#entries.push(this.#newEntry(endpoint, 'fallback'));
  }

  #newEntry(endpoint: Endpoint, role: 'primary' | 'fallback'): EndpointEntry {
    const health = new EndpointHealth(endpoint, this.#log, (changed, from, to, reason) => {
      this.#options.hooks?.onEndpointState?.(changed.endpoint, from, to, reason);
    });
    return new EndpointEntry(health, role);
  }

  /** The endpoints currently in the pool (not removed), primary ones first. */
  get endpoints(): readonly Endpoint[] {
    return this.#entries.filter((entry) => !entry.removed).map((entry) => entry.endpoint);
  }

  /**
   * Replaces the primary endpoints: new ones are added (and warmed if needed), removed ones drain:
   * they take no new requests, their watches end cleanly so clients re-watch elsewhere, and their
   * in-flight requests finish. Endpoints are matched by id.
   */
  setEndpoints(endpoints: Endpoint[]): void {
    if (this.#closed) return;
    const wanted = new Map(endpoints.map((endpoint) => [endpoint.id, endpoint]));

    for (const entry of this.#entries) {
      if (entry.role !== 'primary' || entry.removed || wanted.has(entry.endpoint.id)) continue;
      this.#removeEntry(entry);
    }

    const present = new Set(this.#entries.filter((entry) => entry.role === 'primary' && !entry.removed).map((entry) => entry.endpoint.id));
    const firstFallback = this.#entries.findIndex((entry) => entry.role === 'fallback');
    for (const endpoint of wanted.values()) {
      if (present.has(endpoint.id)) continue;
      const entry = this.#newEntry(endpoint, 'primary');
      if (firstFallback === -1) this.#entries.push(entry);
      else this.#entries.splice(firstFallback, 0, entry);
      this.#log.info({ endpoint: endpoint.id }, 'endpoint added');
    }
    this.#ensureWarm();
  }

  /**
   * Switches to new TLS material (a rotated client certificate or CA bundle): new sessions use it,
   * and every session opened with the old material is retired, so no stream outlives the old
   * credentials longer than it takes to finish.
   */
  setTlsMaterial(material: UpstreamTlsMaterial): void {
    if (this.#closed) return;
    this.#tls = material;
    for (const entry of this.#entries) {
      for (const session of entry.allSessions()) session.retire('rotation');
    }
    this.#ensureWarm();
  }

  #removeEntry(entry: EndpointEntry): void {
    entry.removed = true;
    clearTimeout(entry.probeTimer);
    clearTimeout(entry.ejectionTimer);
    for (const group of entry.groups.values()) clearTimeout(group.redialTimer);

    entry.health.transition('draining', 'removed');
    for (const session of entry.allSessions()) session.retire('removed');
    this.#forgetIfDrained(entry);
  }

  /** Drops a removed endpoint from the list once it holds no session. */
  #forgetIfDrained(entry: EndpointEntry): void {
    if (!entry.removed || entry.allSessions().length > 0) return;
    this.#entries = this.#entries.filter((candidate) => candidate !== entry);
    this.#log.info({ endpoint: entry.endpoint.id }, 'endpoint removed');
  }

  /** Entries that serve now: primary ones, or the fallback ones while no primary is ready. */
  #servingEntries(): EndpointEntry[] {
    const primary = this.#entries.filter((entry) => entry.role === 'primary' && !entry.removed);
    if (primary.some((entry) => entry.health.state === 'ready')) return primary;
    return [...primary, ...this.#entries.filter((entry) => entry.role === 'fallback')];
  }

  /** Opens the warm sessions; failures are logged and retried with backoff, never thrown. */
  start(): void {
    this.#ensureWarm();
  }

  /**
   * Returns a session that can take one more stream now. Ready endpoints come first, the least
   * loaded session weighted by the endpoint's PING round-trip time; then endpoints still
   * connecting, waiting for a dial that is running or due within connectTimeout. Ejected and
   * draining endpoints are skipped, so a request fails fast with NoReadyEndpointError (naming every
   * endpoint and why) instead of queueing behind a dead replica.
   */
  async acquire(options: AcquireOptions): Promise<UpstreamSession> {
    const reasons: string[] = [];

    // Each round either returns a session or dials. A dial can yield a session that other waiting
    // requests (a burst of watches) filled at once, so it earns another round while more may open.
    for (let round = 0; round < this.#options.maxSessionsPerEndpoint + 1; round++) {
      const best = this.#pickReady(options);
      if (best !== undefined) return best;

      const atCapacity = this.#waitForCapacity(options);
      if (atCapacity !== undefined) return atCapacity;

      let filledByOthers = false;
      for (const entry of this.#dialCandidates(options)) {
        if (Date.now() >= options.deadline) break;

        const outcome = await this.#awaitSession(entry, options, reasons);
        if (outcome instanceof UpstreamSession) return outcome;
        if (outcome === 'filled') filledByOthers = true;

        const late = this.#pickReady(options);
        if (late !== undefined) return late;
      }
      if (!filledByOthers || Date.now() >= options.deadline) break;
    }

    for (const entry of this.#entries) {
      if (entry.health.state === 'ejected' || entry.health.state === 'draining') {
        reasons.push(`${entry.endpoint.id}: ${entry.health.state} (${entry.health.reason}${entry.health.lastError ? `: ${entry.health.lastError.message}` : ''})`);
      }
    }
    throw new NoReadyEndpointError(reasons);
  }

  /** Seconds a client should wait before retrying when no endpoint is usable. */
  retryAfterSeconds(): number {
    const now = Date.now();
    let soonest = Infinity;
    for (const entry of this.#entries) {
      const until = entry.health.state === 'ejected' ? (entry.health.ejectedUntil ?? now + 1000) : entry.group(this.#options.warmIdentity).nextDialAt;
      soonest = Math.min(soonest, Math.max(until - now, 0));
    }
    return Number.isFinite(soonest) ? Math.max(1, Math.ceil(soonest / 1000)) : 1;
  }

  /** True when at least one endpoint is ready. */
  hasReadyEndpoint(): boolean {
    return this.#entries.some((entry) => !entry.removed && entry.health.state === 'ready');
  }

  /** Returns a point-in-time view of every endpoint and its sessions, for /state and metrics. */
  snapshot(): EndpointSnapshot[] {
    return this.#entries.map((entry) => {
      const health = entry.health;
      const sessions = entry.allSessions();
      return {
        endpoint: entry.endpoint.id,
        role: entry.role,
        state: health.state,
        since: new Date(health.since).toISOString(),
        reason: health.reason,
        lastError: health.lastError ? { code: health.lastError.code, message: health.lastError.message, at: new Date(health.lastError.at).toISOString() } : undefined,
        rttMs: health.rttEwmaMs,
        consecutiveEjections: health.consecutiveEjections,
        ejectedUntil: health.state === 'ejected' && health.ejectedUntil !== undefined ? new Date(health.ejectedUntil).toISOString() : undefined,
        probeReady: health.probeReady,
        activeStreams: sessions.reduce((sum, session) => sum + session.activeStreams, 0),
        sessions: sessions.map((session) => ({
          id: session.id,
          identity: session.identity,
          state: session.state,
          since: new Date(session.stateSince).toISOString(),
          activeStreams: session.activeStreams,
          maxConcurrentStreams: session.maxConcurrentStreams,
          rttMs: session.lastRttMs,
        })),
      };
    });
  }

  /** Drains every session: no new streams, open ones finish. */
  drainAll(reason: EvictionReason): void {
    for (const entry of this.#entries) {
      for (const session of entry.allSessions()) session.drain(reason);
    }
  }

  /** Destroys every session and stops dialling and probing. */
  close(): void {
    this.#closed = true;
    for (const waiter of this.#capacityWaiters) waiter();
    for (const entry of this.#entries) {
      clearTimeout(entry.probeTimer);
      clearTimeout(entry.ejectionTimer);
      for (const group of entry.groups.values()) clearTimeout(group.redialTimer);
      for (const session of entry.allSessions()) {
        session.evict('shutdown', new StallguardError('SG_ERR_SHUTDOWN', 'local', 'stallguard is shutting down'));
      }
      entry.health.transition('draining', 'shutdown');
    }
  }

  // ---- selection ----

  #pickReady(options: AcquireOptions): UpstreamSession | undefined {
    let best: UpstreamSession | undefined;
    let bestScore = Infinity;
    let fallback: UpstreamSession | undefined;

    for (const entry of this.#servingEntries()) {
      if (entry.health.state !== 'ready') continue;
      // Weighting by RTT makes a slow replica take fewer streams; the 1 ms floor keeps
      // sub-millisecond noise on a LAN from deciding on its own.
      const weight = (entry.health.rttEwmaMs ?? 1) + 1;

      for (const session of entry.group(options.identity).sessions) {
        if (!session.available || options.exclude.has(session)) continue;
        if (options.avoidEndpoints?.has(entry.endpoint.id)) {
          fallback ??= session;
          continue;
        }
        const score = (session.activeStreams + 1) * weight + Math.random() * 1e-6;
        if (score < bestScore) {
          best = session;
          bestScore = score;
        }
      }
    }

    const chosen = best ?? fallback;
    if (chosen !== undefined) this.#growIfNearLimit(chosen);
    return chosen;
  }

  /**
   * When ready endpoints hold sessions for this identity but every one is at the server's stream
   * limit and no more may be opened, waits for a slot until the request's deadline.
   */
  #waitForCapacity(options: AcquireOptions): Promise<UpstreamSession> | undefined {
    // Waiting is right only when nothing can be dialled: an endpoint still connecting (one that is
    // not warm, say) or a ready one below the session cap takes the request sooner.
    const usable = this.#servingEntries().filter((entry) => entry.health.state === 'ready' || entry.health.state === 'connecting');
    const full = (entry: EndpointEntry): boolean => {
      const group = entry.group(options.identity);
      if (entry.health.state === 'connecting') return group.dialing === undefined && group.nextDialAt - Date.now() > this.#options.connectTimeoutMs;
      const open = group.open;
      return open.length >= this.#options.maxSessionsPerEndpoint && open.every((session) => !session.available || options.exclude.has(session));
    };
    const saturated = usable.some((entry) => entry.health.state === 'ready') && usable.every(full);
    if (!saturated) return undefined;

    return new Promise<UpstreamSession>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#capacityWaiters.delete(retry);
        reject(new NoReadyEndpointError([`every session is at the server's stream limit and upstream.maxSessionsPerEndpoint (${this.#options.maxSessionsPerEndpoint}) is reached`]));
      }, Math.max(options.deadline - Date.now(), 0));
      timer.unref();

      const retry = () => {
        const session = this.#closed ? undefined : this.#pickReady(options);
        if (session === undefined && !this.#closed) return;
        this.#capacityWaiters.delete(retry);
        clearTimeout(timer);
        if (session !== undefined) resolve(session);
        else reject(new StallguardError('SG_ERR_SHUTDOWN', 'local', 'stallguard is shutting down'));
      };
      this.#capacityWaiters.add(retry);
    });
  }

  /** Endpoints a request may dial: ready ones without a session for its identity, then connecting ones. */
  #dialCandidates(options: AcquireOptions): EndpointEntry[] {
    const usable = this.#servingEntries().filter((entry) => entry.health.state === 'ready' || entry.health.state === 'connecting');
    return usable.sort((a, b) => {
      if (a.role !== b.role) return a.role === 'primary' ? -1 : 1;
      if (a.health.state !== b.health.state) return a.health.state === 'ready' ? -1 : 1;
      const groupA = a.group(options.identity);
      const groupB = b.group(options.identity);
      if ((groupA.dialing !== undefined) !== (groupB.dialing !== undefined)) return groupA.dialing !== undefined ? -1 : 1;
      return groupA.nextDialAt - groupB.nextDialAt;
    });
  }

  async #awaitSession(entry: EndpointEntry, options: AcquireOptions, reasons: string[]): Promise<UpstreamSession | 'filled' | undefined> {
    const group = entry.group(options.identity);
    const waitMs = group.nextDialAt - Date.now();
    const lastError = entry.health.lastError?.message ?? 'unavailable';

    if (group.dialing === undefined && waitMs > this.#options.connectTimeoutMs) {
      reasons.push(`${entry.endpoint.id}: ${lastError} (next attempt in ${Math.ceil(waitMs / 1000)}s)`);
      return undefined;
    }
    if (group.dialing === undefined && group.open.length >= this.#options.maxSessionsPerEndpoint) {
      return undefined;
    }

    if (group.dialing === undefined && waitMs > 0) {
      await sleep(Math.min(waitMs, options.deadline - Date.now()));
    }

    try {
      const session = await this.#dial(entry, group);
      if (session.available && !options.exclude.has(session)) return session;
      return session.state === 'ready' ? 'filled' : undefined;
    } catch (err) {
      reasons.push(`${entry.endpoint.id}: ${describeError(err)}`);
      return undefined;
    }
  }

  // ---- dialling ----

  /** Dials one new session for the group, sharing a dial already running. */
  #dial(entry: EndpointEntry, group: SessionGroup): Promise<UpstreamSession> {
    if (group.dialing !== undefined) return group.dialing;
    if (this.#closed) return Promise.reject(new StallguardError('SG_ERR_SHUTDOWN', 'local', 'stallguard is shutting down'));

    clearTimeout(group.redialTimer);
    group.redialTimer = undefined;

    const dialing = dialSession({
      endpoint: entry.endpoint,
      tls: tlsOptionsFor(this.#tls, group.identity),
      timeoutMs: this.#options.connectTimeoutMs,
    }).then(
      (h2) => {
        group.dialing = undefined;
        group.failures = 0;
        group.nextDialAt = 0;

        const session = new UpstreamSession(h2, entry.endpoint, group.identity, this.#options.health, this.#sessionEvents(entry, group), this.#log);
        group.sessions.push(session);
        if (this.#closed) {
          session.evict('shutdown', new StallguardError('SG_ERR_SHUTDOWN', 'local', 'stallguard is shutting down'));
          return session;
        }
        this.#refreshState(entry, 'session_ready');
        this.#scheduleProbe(entry, true);
        return session;
      },
      (err: StallguardError) => {
        group.dialing = undefined;
        this.#options.hooks?.onDialFailure?.(entry.endpoint, err);
        this.#log.warn({ endpoint: entry.endpoint.id, identity: group.identity, code: err.code, err: err.message, failures: group.failures + 1 }, 'dial failed');
        this.#onLocalFailure(entry, group, err instanceof TlsError ? 'tls_failure' : 'connect_failure', err);
        throw err;
      },
    );

    group.dialing = dialing;
    return dialing;
  }

  #dialInBackground(entry: EndpointEntry, group: SessionGroup): void {
    this.#dial(entry, group).catch(() => {
      // Logged in #dial; #onLocalFailure schedules what comes next.
    });
  }

  /**
   * Keeps live sessions of the warm identity to at least warmEndpoints endpoints, so a failover
   * never waits for a handshake. Candidates are taken in random order, which spreads a fleet of
   * nodes over the replicas. A group in backoff is redialled when its backoff ends.
   */
  #ensureWarm(): void {
    if (this.#closed) return;
    const identity = this.#options.warmIdentity;
    const usable = this.#servingEntries().filter((entry) => entry.health.state === 'ready' || entry.health.state === 'connecting');

    const warm = usable.filter((entry) => {
      const group = entry.group(identity);
      return group.dialing !== undefined || group.redialTimer !== undefined || group.sessions.some((session) => session.state === 'ready');
    });

    const needed = Math.min(this.#options.warmEndpoints, usable.length) - warm.length;
    if (needed <= 0) return;

    const cold = shuffle(usable.filter((entry) => !warm.includes(entry)));
    for (const entry of cold.slice(0, needed)) {
      const group = entry.group(identity);
      const waitMs = group.nextDialAt - Date.now();
      if (waitMs <= 0) {
        this.#dialInBackground(entry, group);
        continue;
      }
      group.redialTimer = setTimeout(() => {
        group.redialTimer = undefined;
        if (entry.health.state === 'ready' || entry.health.state === 'connecting') this.#dialInBackground(entry, group);
        else this.#ensureWarm();
      }, waitMs);
      group.redialTimer.unref();
    }
  }

  /**
   * Opens one more session to the endpoint when the chosen one is close to the server's stream
   * limit (watches hold streams for hours), up to maxSessionsPerEndpoint.
   */
  #growIfNearLimit(session: UpstreamSession): void {
    if (session.activeStreams + 1 < session.maxConcurrentStreams) return;

    const entry = this.#entryOf(session.endpoint);
    const group = entry.group(session.identity);
    const open = group.open;
    const spare = open.some((candidate) => candidate !== session && candidate.available);
    if (spare || group.dialing !== undefined || open.length >= this.#options.maxSessionsPerEndpoint) return;
    this.#dialInBackground(entry, group);
  }

  // ---- health ----

  /**
   * Counts a local-origin failure: the group backs off with full jitter, and the endpoint is
   * ejected unless that would take more than maxEjectionPercent of the endpoints out of rotation.
   */
  #onLocalFailure(entry: EndpointEntry, group: SessionGroup, reason: EndpointTransitionReason, err: StallguardError): void {
    entry.health.recordError(err);
    group.failures += 1;
    group.nextDialAt = Date.now() + backoffDelayMs(this.#options.backoff, group.failures);

    if (this.#closed || entry.health.state === 'draining') return;
    if (!entry.hasReadySession() && this.#mayEject(entry)) {
      this.#eject(entry, reason);
    } else {
      this.#refreshState(entry, reason);
    }
    this.#ensureWarm();
  }

  #mayEject(entry: EndpointEntry): boolean {
    if (entry.health.state === 'ejected') return false;
    const peers = this.#entries.filter((candidate) => candidate.role === entry.role && !candidate.removed);
    const ejected = peers.filter((candidate) => candidate.health.state === 'ejected').length;
    const allowed = Math.floor((peers.length * this.#options.health.maxEjectionPercent) / 100);
    return ejected + 1 <= allowed;
  }

  /** Ejects for ejectionTime × ejections in a row, capped; the count resets after a healthy period. */
  #eject(entry: EndpointEntry, reason: EndpointTransitionReason): void {
    const health = entry.health;
    const { ejectionTimeMs, maxEjectionTimeMs } = this.#options.health;

    if (health.readySince !== undefined && Date.now() - health.readySince >= maxEjectionTimeMs) health.consecutiveEjections = 0;
    health.consecutiveEjections += 1;
    const durationMs = Math.min(ejectionTimeMs * health.consecutiveEjections, maxEjectionTimeMs);
    health.ejectedUntil = Date.now() + durationMs;
    health.transition('ejected', reason, { durationMs, consecutiveEjections: health.consecutiveEjections, err: health.lastError?.message });

    clearTimeout(entry.ejectionTimer);
    entry.ejectionTimer = setTimeout(() => {
      entry.ejectionTimer = undefined;
      if (health.state !== 'ejected' || health.ejectedForProbe) return;
      // Readmission goes through a fresh dial: the endpoint is ready again only once a new
      // session has completed its handshake and the server's SETTINGS arrived.
      health.transition('connecting', 'ejection_expired');
      for (const group of entry.groups.values()) group.nextDialAt = 0;
      this.#refreshState(entry, 'ejection_expired');
      this.#ensureWarm();
    }, durationMs);
    entry.ejectionTimer.unref();
  }

  /** Sets ready or connecting from the sessions held; ejected and draining are left to their timers. */
  #refreshState(entry: EndpointEntry, reason: EndpointTransitionReason): void {
    const health = entry.health;
    if (health.state === 'draining' || health.state === 'ejected') return;

    if (entry.hasReadySession()) {
      const wasReady = health.state === 'ready';
      health.transition('ready', reason);
      this.#notifyCapacity();
      // The first ready primary ends fallback service: warm standby is counted among primaries again.
      if (!wasReady) this.#ensureWarm();
    } else {
      health.transition('connecting', reason === 'session_ready' ? 'sessions_lost' : reason);
    }
  }

  /**
   * Probes an endpoint's readiness on one of its existing sessions every readyInterval (jittered;
   * the first one staggered over the interval). Endpoints without a session are not probed.
   */
  #scheduleProbe(entry: EndpointEntry, first = false): void {
    if (this.#closed || entry.probeTimer !== undefined) return;
    const interval = this.#options.health.readyIntervalMs;
    const delay = first ? Math.random() * interval : shortenedInterval(interval);

    entry.probeTimer = setTimeout(() => {
      entry.probeTimer = undefined;
      void this.#probe(entry);
    }, delay);
    entry.probeTimer.unref();
  }

  async #probe(entry: EndpointEntry): Promise<void> {
    if (this.#closed || entry.removed) return;
    const sessions = entry.allSessions().filter((session) => session.available);
    if (sessions.length === 0) {
      // An endpoint ejected for its probe is readmitted only by a passing probe, which needs a
      // session: one is dialled for it (it stays ejected meanwhile), at most once per interval.
      if (entry.health.ejectedForProbe) {
        this.#dialInBackground(entry, entry.group(this.#options.warmIdentity));
        this.#scheduleProbe(entry);
      }
      return;
    }

    const preferred = sessions.find((session) => session.identity === this.#options.warmIdentity) ?? sessions[0]!;
    const result = await probeReadiness(preferred, this.#options.health.readyPath, this.#options.connectTimeoutMs);
    if (this.#closed) return;

    const health = entry.health;
    const wasReady = health.probeReady;
    health.probeReady = result.ready;
    this.#options.hooks?.onProbe?.(entry.endpoint, result.ready);

    if (result.ready) {
      if (health.ejectedForProbe) {
        health.ejectedForProbe = false;
        health.transition('connecting', 'probe_passed');
        this.#refreshState(entry, 'probe_passed');
      }
    } else {
      if (wasReady !== false) this.#log.warn({ endpoint: entry.endpoint.id, detail: result.detail }, 'readiness probe failed');
      // The last ready endpoint is never ejected for a probe result alone: serving from a replica
      // that says it is not ready beats serving nothing.
      const otherReady = this.#entries.some((candidate) => candidate !== entry && candidate.health.state === 'ready');
      if (health.state === 'ready' && otherReady && this.#mayEject(entry)) {
        health.ejectedForProbe = true;
        health.ejectedUntil = undefined;
        health.transition('ejected', 'probe_failed', { detail: result.detail });
        this.#ensureWarm();
      }
    }

    this.#scheduleProbe(entry);
  }

  #sessionEvents(entry: EndpointEntry, group: SessionGroup): SessionEvents {
    return {
      onStateChange: (session, from, to, reason) => {
        if (to === 'closed') {
          const index = group.sessions.indexOf(session);
          if (index >= 0) group.sessions.splice(index, 1);
          this.#forgetIfDrained(entry);
        }
        // A session leaves `ready` once: on drain or GOAWAY (then later closes), or on eviction.
        if (from === 'ready') this.#afterSessionLoss(entry, group, reason as EvictionReason, session);
        this.#options.hooks?.onSessionState?.(session, from, to, reason);
      },
      onPing: (session, outcome, rttMs) => {
        if (outcome === 'ack') entry.health.recordRtt(rttMs);
        this.#options.hooks?.onPing?.(session, outcome, rttMs);
      },
      onCapacity: () => this.#notifyCapacity(),
    };
  }

  /**
   * Replaces a lost session. A failure (PING timeout, reset, EOF) counts against the endpoint and
   * backs off with full jitter, so a fleet that lost the same balancer does not reconnect in the
   * same second. A session ended by GOAWAY or drain is replaced at once, because the server asked.
   */
  #afterSessionLoss(entry: EndpointEntry, group: SessionGroup, reason: EvictionReason, session: UpstreamSession): void {
    if (this.#closed || reason === 'shutdown' || entry.removed) return;

    if (FAILURE_REASONS.has(reason)) {
      let transitionReason: EndpointTransitionReason = 'reset';
      if (reason === 'ping_timeout' || reason === 'eof') transitionReason = reason;
      this.#onLocalFailure(entry, group, transitionReason, new StallguardError('SG_ERR_SESSION_LOST', 'local', `session ${session.id} lost: ${reason}`));
      return;
    }

    this.#refreshState(entry, 'sessions_lost');
    const replacementNeeded = group.identity === this.#options.warmIdentity && !group.sessions.some((candidate) => candidate.state === 'ready');
    if (replacementNeeded && (entry.health.state === 'ready' || entry.health.state === 'connecting')) this.#dialInBackground(entry, group);
  }

  #notifyCapacity(): void {
    for (const waiter of [...this.#capacityWaiters]) waiter();
  }

  #entryOf(endpoint: Endpoint): EndpointEntry {
    return this.#entries.find((entry) => entry.endpoint === endpoint)!;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(ms, 0)).unref());
}

function shuffle<T>(items: T[]): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy;
}
