import type { Logger } from 'pino';
import type { StallguardError } from '../errors.js';
import type { Endpoint } from './endpoint.js';
import type { EndpointState } from './snapshot.js';

/** Why an endpoint changed state; a closed set so it can label metrics. */
export type EndpointTransitionReason =
  | 'session_ready'
  | 'probe_passed'
  | 'ejection_expired'
  | 'ping_timeout'
  | 'reset'
  | 'eof'
  | 'connect_failure'
  | 'tls_failure'
  | 'probe_failed'
  | 'sessions_lost'
  | 'removed'
  | 'shutdown';

// PING RTTs move fast on a busy link; 0.3 weighs the newest sample enough to react within a few
// PINGs while one slow ACK does not swing selection.
const RTT_EWMA_WEIGHT = 0.3;

/**
 * The health record of one endpoint. Only `transition()` changes `state`, so every change is
 * logged once and reported once. Ejection is for local-origin failures only: an API server that
 * answers with 5xx or 429 is reachable, and the same answer would come from every replica.
 */
export class EndpointHealth {
  readonly endpoint: Endpoint;
  state: EndpointState = 'connecting';
  since = Date.now();
  reason: EndpointTransitionReason | 'start' = 'start';
  lastError: { code: string; message: string; at: number } | undefined;
  rttEwmaMs: number | undefined;
  consecutiveEjections = 0;
  ejectedUntil: number | undefined;
  probeReady: boolean | undefined;
  /** Set while the endpoint was ejected because its readiness probe failed; cleared when it passes. */
  ejectedForProbe = false;
  readySince: number | undefined;

  readonly #log: Logger;
  readonly #onTransition: (health: EndpointHealth, from: EndpointState, to: EndpointState, reason: EndpointTransitionReason) => void;

  constructor(
    endpoint: Endpoint,
    log: Logger,
    onTransition: (health: EndpointHealth, from: EndpointState, to: EndpointState, reason: EndpointTransitionReason) => void,
  ) {
    this.endpoint = endpoint;
    this.#log = log;
    this.#onTransition = onTransition;
  }

  transition(to: EndpointState, reason: EndpointTransitionReason, fields: Record<string, unknown> = {}): void {
    const from = this.state;
    if (from === to) return;

    this.state = to;
    this.since = Date.now();
    this.reason = reason;
    this.readySince = to === 'ready' ? this.since : undefined;

    const level = to === 'ejected' ? 'warn' : 'info';
    this.#log[level]({ endpoint: this.endpoint.id, from, to, reason, ...fields }, 'endpoint state changed');
    this.#onTransition(this, from, to, reason);
  }

  recordError(err: StallguardError): void {
    this.lastError = { code: err.code, message: err.message, at: Date.now() };
  }

  recordRtt(rttMs: number): void {
    this.rttEwmaMs = this.rttEwmaMs === undefined ? rttMs : this.rttEwmaMs + RTT_EWMA_WEIGHT * (rttMs - this.rttEwmaMs);
  }
}
