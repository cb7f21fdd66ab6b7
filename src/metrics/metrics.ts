import client from 'prom-client';
import { ENDPOINT_STATES, type EndpointSnapshot } from '../upstream/snapshot.js';
import {
  CERTIFICATE_ROLES,
  methodLabel,
  PREDECLARED_EVICTION_REASONS,
  PREDECLARED_RETRY_REASONS,
  REJECT_REASONS,
  WATCH_END_REASONS,
  type CertificateRole,
} from './labels.js';

/** Session states that the sessions gauge reports; a closed session leaves the pool at once. */
const GAUGED_SESSION_STATES = ['ready', 'draining'] as const;

/** Counts that /state and `stallguard status` show as totals since start. */
export interface MetricTotals {
  evictions: { total: number; byReason: Record<string, number> };
  retries: { total: number; byOutcome: Record<string, number> };
  requests: number;
  rejected: { total: number; byReason: Record<string, number> };
}

/**
 * stallguard's Prometheus metrics. Labels come from closed sets (method, status class, endpoint,
 * reason, state, role): never a path, a user or a namespace, so a 5,000-node fleet stays cheap to
 * scrape. Gauges that describe the pool are computed at scrape time from one snapshot per gauge
 * (see observeEndpoints), because counts kept by increments drift after a missed event.
 */
export class Metrics {
  readonly registry = new client.Registry();

  #endpointSource: (() => readonly EndpointSnapshot[]) | undefined;
  readonly #declaredEndpoints = new Set<string>();

  readonly requests = new client.Counter({
    name: 'stallguard_requests_total',
    help: 'Requests completed, by method, response status class and endpoint.',
    labelNames: ['method', 'code_class', 'endpoint'] as const,
    registers: [this.registry],
  });

  // Buckets span a fast GET on loopback (5 ms) to the longest client-go request timeout (60 s).
  readonly requestDuration = new client.Histogram({
    name: 'stallguard_request_duration_seconds',
    help: 'Time from receiving a request to the end of its response headers, in seconds; watches excluded.',
    labelNames: ['method'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });

  readonly retries = new client.Counter({
    name: 'stallguard_retries_total',
    help: 'Request attempts that failed on a session, by reason and outcome (retried, not_retried, body_too_large).',
    labelNames: ['reason', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly rejected = new client.Counter({
    name: 'stallguard_requests_rejected_total',
    help: 'Requests answered by stallguard itself without reaching an API server, by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly activeStreams = new client.Gauge({
    name: 'stallguard_active_streams',
    help: 'Client requests currently in progress through stallguard, watches included.',
    registers: [this.registry],
  });

  readonly activeWatches = new client.Gauge({
    name: 'stallguard_active_watches',
    help: 'Watch streams currently open through stallguard.',
    registers: [this.registry],
  });

  readonly watchesEnded = new client.Counter({
    name: 'stallguard_watches_ended_total',
    help: 'Watch streams ended, by reason: upstream (the server ended it), client, session_lost, shutdown.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly pings = new client.Counter({
    name: 'stallguard_pings_total',
    help: 'HTTP/2 PINGs sent to API servers and resolved, by endpoint and outcome (ack, timeout).',
    labelNames: ['endpoint', 'outcome'] as const,
    registers: [this.registry],
  });

  // PING round trips on a healthy LAN are well under a millisecond; the top buckets catch a
  // session that is about to miss its deadline.
  readonly pingRtt = new client.Histogram({
    name: 'stallguard_ping_rtt_seconds',
    help: 'HTTP/2 PING round-trip time to API servers, by endpoint, in seconds.',
    labelNames: ['endpoint'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });

  readonly sessionsEvicted = new client.Counter({
    name: 'stallguard_sessions_evicted_total',
    help:
      'Upstream sessions closed or lost before they became ready, by endpoint and reason ' +
      '(ping_timeout, connect_timeout, tls_error, reset, eof, error, goaway, drain, shutdown, idle_close, rotation, removed).',
    labelNames: ['endpoint', 'reason'] as const,
    registers: [this.registry],
  });

  readonly dialFailures = new client.Counter({
    name: 'stallguard_dial_failures_total',
    help: 'Failed attempts to open an upstream session, by endpoint and error code.',
    labelNames: ['endpoint', 'code'] as const,
    registers: [this.registry],
  });

  readonly goaways = new client.Counter({
    name: 'stallguard_goaways_received_total',
    help: 'GOAWAY frames received from API servers, by endpoint.',
    labelNames: ['endpoint'] as const,
    registers: [this.registry],
  });

  readonly endpointTransitions = new client.Counter({
    name: 'stallguard_endpoint_state_transitions_total',
    help: 'Endpoint state changes, by endpoint and the state entered (connecting, ready, draining, ejected).',
    labelNames: ['endpoint', 'to'] as const,
    registers: [this.registry],
  });

  readonly endpointState = new client.Gauge({
    name: 'stallguard_endpoint_state',
    help: 'Current state of each endpoint: 1 for the state it is in, 0 for the others.',
    labelNames: ['endpoint', 'state'] as const,
    registers: [this.registry],
    collect: () => this.#collectEndpointState(),
  });

  readonly upstreamSessions = new client.Gauge({
    name: 'stallguard_upstream_sessions',
    help: 'Open upstream HTTP/2 sessions, by endpoint and session state (ready, draining).',
    labelNames: ['endpoint', 'state'] as const,
    registers: [this.registry],
    collect: () => this.#collectSessions(),
  });

  readonly downstreamConnections = new client.Counter({
    name: 'stallguard_downstream_connections_total',
    help: 'Client connections accepted, by protocol (h2, http/1.1, h2c, upgrade) and TLS outcome (ok, rejected, plaintext).',
    labelNames: ['protocol', 'tls'] as const,
    registers: [this.registry],
  });

  readonly certificateExpiry = new client.Gauge({
    name: 'stallguard_certificate_expiry_timestamp_seconds',
    help: 'Expiry (notAfter) of the earliest-expiring certificate loaded for each role, in seconds since the Unix epoch.',
    labelNames: ['role'] as const,
    registers: [this.registry],
  });

  readonly tlsReloads = new client.Counter({
    name: 'stallguard_tls_reloads_total',
    help: 'Reloads of the upstream TLS files after they changed on disk, by outcome (success, failure: the previous material stays in use).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly pingIntervalSeconds = new client.Gauge({
    name: 'stallguard_config_ping_interval_seconds',
    help: 'Configured health.pingInterval: idle time after which a session is PINGed, in seconds.',
    registers: [this.registry],
  });

  readonly pingTimeoutSeconds = new client.Gauge({
    name: 'stallguard_config_ping_timeout_seconds',
    help: 'Configured health.pingTimeout: time a PING may wait for its ACK before the session is evicted, in seconds.',
    registers: [this.registry],
  });

  readonly connectTimeoutSeconds = new client.Gauge({
    name: 'stallguard_config_connect_timeout_seconds',
    help: 'Configured upstream.connectTimeout: limit for TCP, TLS and the first SETTINGS of a new session, in seconds.',
    registers: [this.registry],
  });

  readonly buildInfo = new client.Gauge({
    name: 'stallguard_build_info',
    help: 'Always 1; the labels carry the stallguard and Node.js versions.',
    labelNames: ['version', 'nodejs'] as const,
    registers: [this.registry],
  });

  constructor(version: string) {
    client.collectDefaultMetrics({ register: this.registry, prefix: 'stallguard_' });
    this.buildInfo.set({ version, nodejs: process.version }, 1);
    normalizeMethodLabel(this.requests, this.requestDuration);

    for (const reason of WATCH_END_REASONS) this.watchesEnded.inc({ reason }, 0);
    for (const reason of REJECT_REASONS) this.rejected.inc({ reason }, 0);
    for (const reason of PREDECLARED_RETRY_REASONS) this.retries.inc({ reason, outcome: 'retried' }, 0);
    for (const outcome of ['success', 'failure']) this.tlsReloads.inc({ outcome }, 0);
  }

  /**
   * Creates the per-endpoint counter series at 0, so that the first PING timeout, eviction, GOAWAY
   * or state change of an endpoint shows in rate() and increase(). Endpoints declared before are
   * skipped, so it may be called on every event of an endpoint added at run time.
   */
  declareEndpoints(endpointIds: readonly string[]): void {
    for (const endpoint of endpointIds) {
      if (this.#declaredEndpoints.has(endpoint)) continue;
      this.#declaredEndpoints.add(endpoint);
      for (const outcome of ['ack', 'timeout']) this.pings.inc({ endpoint, outcome }, 0);
      for (const reason of PREDECLARED_EVICTION_REASONS) this.sessionsEvicted.inc({ endpoint, reason }, 0);
      for (const to of ENDPOINT_STATES) this.endpointTransitions.inc({ endpoint, to }, 0);
      this.goaways.inc({ endpoint }, 0);
    }
  }

  /** Sets the source that the endpoint-state and session gauges read at every scrape. */
  observeEndpoints(source: () => readonly EndpointSnapshot[]): void {
    this.#endpointSource = source;
  }

  setConfiguredTimeouts(timeouts: { pingIntervalMs: number; pingTimeoutMs: number; connectTimeoutMs: number }): void {
    this.pingIntervalSeconds.set(timeouts.pingIntervalMs / 1000);
    this.pingTimeoutSeconds.set(timeouts.pingTimeoutMs / 1000);
    this.connectTimeoutSeconds.set(timeouts.connectTimeoutMs / 1000);
  }

  setCertificateExpiry(role: CertificateRole, notAfter: Date): void {
    if (!CERTIFICATE_ROLES.includes(role)) throw new RangeError(`unknown certificate role ${JSON.stringify(role)}`);
    this.certificateExpiry.set({ role }, notAfter.getTime() / 1000);
  }

  /** Sums the counters that /state reports as totals since start. */
  async totals(): Promise<MetricTotals> {
    const evictions = await sumByLabel(this.sessionsEvicted, 'reason');
    const retries = await sumByLabel(this.retries, 'outcome');
    const rejected = await sumByLabel(this.rejected, 'reason');
    const requests = await sumByLabel(this.requests, 'code_class');
    return {
      evictions: { total: sumValues(evictions), byReason: evictions },
      retries: { total: sumValues(retries), byOutcome: retries },
      requests: sumValues(requests),
      rejected: { total: sumValues(rejected), byReason: rejected },
    };
  }

  #collectEndpointState(): void {
    this.endpointState.reset();
    for (const snapshot of this.#endpointSource?.() ?? []) {
      for (const state of ENDPOINT_STATES) {
        this.endpointState.set({ endpoint: snapshot.endpoint, state }, snapshot.state === state ? 1 : 0);
      }
    }
  }

  #collectSessions(): void {
    this.upstreamSessions.reset();
    for (const snapshot of this.#endpointSource?.() ?? []) {
      for (const state of GAUGED_SESSION_STATES) {
        const count = snapshot.sessions.filter((session) => session.state === state).length;
        this.upstreamSessions.set({ endpoint: snapshot.endpoint, state }, count);
      }
    }
  }
}

/** Maps an HTTP status to its class label: "2xx", "4xx" and so on. */
export function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}

/**
 * Wraps inc() and observe() so that the `method` label passes through methodLabel(): the proxy
 * labels with the client's :method, which an HTTP/2 client may set to any token.
 */
function normalizeMethodLabel(counter: client.Counter<'method' | 'code_class' | 'endpoint'>, histogram: client.Histogram<'method'>): void {
  const inc = counter.inc.bind(counter) as (labels: client.LabelValues<'method' | 'code_class' | 'endpoint'>, value?: number) => void;
  counter.inc = ((labels: client.LabelValues<'method' | 'code_class' | 'endpoint'>, value?: number) => {
    if (typeof labels !== 'object') throw new TypeError('stallguard_requests_total needs its labels: method, code_class, endpoint');
    inc({ ...labels, method: methodLabel(String(labels.method)) }, value);
  }) as typeof counter.inc;

  const observe = histogram.observe.bind(histogram) as (labels: client.LabelValues<'method'>, value: number) => void;
  histogram.observe = ((labels: client.LabelValues<'method'>, value: number) => {
    if (typeof labels !== 'object') throw new TypeError('stallguard_request_duration_seconds needs its method label');
    observe({ ...labels, method: methodLabel(String(labels.method)) }, value);
  }) as typeof histogram.observe;
}

async function sumByLabel<T extends string>(metric: client.Counter<T>, label: T): Promise<Record<string, number>> {
  const sums: Record<string, number> = {};
  for (const entry of (await metric.get()).values) {
    const key = String(entry.labels[label] ?? '');
    sums[key] = (sums[key] ?? 0) + entry.value;
  }
  return sums;
}

function sumValues(values: Record<string, number>): number {
  return Object.values(values).reduce((sum, value) => sum + value, 0);
}
