/**
 * A model of a fleet of nodes, each running stallguard, that lose their load balancer at the same
 * moment. Time is simulated and no socket is opened. Each session goes through the steps that
 * src/upstream/pool.ts and session.ts take, with their real timing functions from
 * src/upstream/backoff.ts:
 *
 * 1. At t = 0 every session stalls. It notices at its next PING plus the PING timeout. The next
 *    PING is due at a uniform moment within the session's current interval, which
 *    shortenedInterval() draws as in UpstreamSession.
 * 2. The session is evicted and its group records failure n = 1. The pool waits
 *    backoffDelayMs(policy, n) (full jitter), or with `jitter: 'fixed'` the ceiling
 *    backoffCeilingMs(policy, n) without the random draw, and then dials.
 * 3. A dial that starts before the balancer is back fails after connectTimeout, as against a
 *    balancer that drops SYNs. The group's failure count grows by one, and the wait starts again.
 *    A dial that starts once the balancer is back reaches an API server: a new TLS handshake at
 *    that moment.
 *
 * NOTE: the model takes each session on its own. The real pool shares one failure count per
 * (endpoint, identity), and a request may dial earlier than the backoff when the next dial is due
 * within connectTimeout. Both change single sessions by at most one backoff step.
 */
import { backoffCeilingMs, backoffDelayMs, shortenedInterval, type BackoffPolicy } from '../upstream/backoff.js';

export type JitterMode = 'full' | 'fixed';

export interface FleetTimings {
  backoff: BackoffPolicy;
  pingIntervalMs: number;
  pingTimeoutMs: number;
  connectTimeoutMs: number;
  readyIntervalMs: number;
}

/** stallguard's defaults (src/config/schema.ts). */
export const STALLGUARD_DEFAULT_TIMINGS: FleetTimings = {
  backoff: { baseMs: 250, maxMs: 5000 },
  pingIntervalMs: 1000,
  pingTimeoutMs: 1000,
  connectTimeoutMs: 2000,
  readyIntervalMs: 10_000,
};

export interface ReconnectRun {
  nodes: number;
  sessionsPerNode: number;
  jitter: JitterMode;
  /** How long after t = 0 new connections fail; 0 is a failover where new connections pass at once. */
  outageMs: number;
}

export interface ReconnectOutcome extends ReconnectRun {
  /** Handshakes per bin, from t = 0. */
  binMs: number;
  handshakesPerBin: number[];
  /** The maximum of handshakesPerBin, as a rate per second. */
  peakPerSecond: number;
  /** Dials that failed during the outage; they never reach an API server. */
  failedDials: number;
  /** Times by which 50 %, 99 % and 100 % of the sessions had a new handshake, in ms from t = 0. */
  reconnectedMs: { p50: number; p99: number; all: number };
}

/** Simulates every session of one run and returns the arrival of new handshakes over time. */
export function simulateReconnect(run: ReconnectRun, timings: FleetTimings, random: () => number, binMs = 100): ReconnectOutcome {
  const arrivals: number[] = [];
  let failedDials = 0;

  for (let session = 0; session < run.nodes * run.sessionsPerNode; session++) {
    const interval = shortenedInterval(timings.pingIntervalMs, 0.2, random);
    let t = random() * interval + timings.pingTimeoutMs;
    let failures = 1;

    for (;;) {
      t += run.jitter === 'full' ? backoffDelayMs(timings.backoff, failures, random) : backoffCeilingMs(timings.backoff, failures);
      if (t >= run.outageMs) break;
      t += timings.connectTimeoutMs;
      failures += 1;
      failedDials += 1;
    }
    arrivals.push(t);
  }

  arrivals.sort((a, b) => a - b);
  const last = arrivals[arrivals.length - 1] ?? 0;
  const handshakesPerBin = new Array<number>(Math.floor(last / binMs) + 1).fill(0);
  for (const at of arrivals) handshakesPerBin[Math.floor(at / binMs)]! += 1;

  const at = (fraction: number) => Math.round(arrivals[Math.max(0, Math.ceil(fraction * arrivals.length) - 1)] ?? 0);
  return {
    ...run,
    binMs,
    handshakesPerBin,
    peakPerSecond: Math.max(0, ...handshakesPerBin) * (1000 / binMs),
    failedDials,
    reconnectedMs: { p50: at(0.5), p99: at(0.99), all: Math.round(last) },
  };
}

export interface SteadyLoad {
  nodes: number;
  /** PINGs per second that reach the API servers; each is answered with a PING ACK. */
  pingsPerSecond: number;
  /** Readiness probes (GET readyPath) per second. */
  probesPerSecond: number;
  /** Bytes per second of PING and PING ACK frames together, without TLS, TCP or IP overhead. */
  pingFrameBytesPerSecond: number;
}

// A PING frame is a 9-byte frame header and 8 bytes of opaque data (RFC 9113, section 6.7).
const PING_FRAME_BYTES = 17;

/**
 * Counts the PINGs and probes that an idle fleet sends during `windowMs`, drawing every interval
 * with shortenedInterval() as the sessions and the pool do. An idle session PINGs once per drawn
 * interval (the PING round trip is left out). Each node probes every endpoint it holds a session
 * to once per drawn readyInterval.
 */
export function simulateSteadyLoad(nodes: number, sessionsPerNode: number, timings: FleetTimings, random: () => number, windowMs = 60_000): SteadyLoad {
  const countTicks = (intervalMs: number): number => {
    let t = random() * intervalMs;
    let ticks = 0;
    while (t < windowMs) {
      ticks += 1;
      t += shortenedInterval(intervalMs, 0.2, random);
    }
    return ticks;
  };

  let pings = 0;
  let probes = 0;
  for (let node = 0; node < nodes; node++) {
    for (let session = 0; session < sessionsPerNode; session++) {
      pings += countTicks(timings.pingIntervalMs);
      // With one warm session per endpoint, each session's endpoint is probed on it.
      probes += countTicks(timings.readyIntervalMs);
    }
  }

  const perSecond = (count: number) => Math.round((count / windowMs) * 1000 * 10) / 10;
  return {
    nodes,
    pingsPerSecond: perSecond(pings),
    probesPerSecond: perSecond(probes),
    pingFrameBytesPerSecond: Math.round(perSecond(pings) * PING_FRAME_BYTES * 2),
  };
}
