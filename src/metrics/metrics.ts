import client from 'prom-client';

/**
 * stallguard's Prometheus metrics. Labels come from closed sets (method, status class, endpoint,
 * reason): never a path, a user or a namespace, so a 5,000-node fleet stays cheap to scrape.
 * Gauges that describe the pool are computed at scrape time from one snapshot (see collectors
 * registered by the server), because counts kept by increments drift after missed events.
 */
export class Metrics {
  readonly registry = new client.Registry();

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
    help: 'Request attempts replayed on another session, by reason and outcome.',
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
    help: 'Client requests currently in progress through stallguard.',
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
    help: 'HTTP/2 PINGs sent to API servers, by endpoint and outcome (ack, timeout).',
    labelNames: ['endpoint', 'outcome'] as const,
    registers: [this.registry],
  });

  // PING round trips on a healthy LAN are well under a millisecond; the top buckets catch a
  // session that is about to miss its deadline.
  readonly pingRtt = new client.Histogram({
    name: 'stallguard_ping_rtt_seconds',
    help: 'HTTP/2 PING round-trip time to API servers, in seconds.',
    labelNames: ['endpoint'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });

  readonly sessionsEvicted = new client.Counter({
    name: 'stallguard_sessions_evicted_total',
    help: 'Upstream sessions closed, by endpoint and reason (ping_timeout, reset, eof, goaway, error, drain, shutdown).',
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

  readonly downstreamConnections = new client.Counter({
    name: 'stallguard_downstream_connections_total',
    help: 'Client connections accepted, by protocol (h2, http/1.1, h2c) and TLS outcome (ok, rejected, plaintext).',
    labelNames: ['protocol', 'tls'] as const,
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
  }
}

/** Maps an HTTP status to its class label: "2xx", "4xx" and so on. */
export function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}
