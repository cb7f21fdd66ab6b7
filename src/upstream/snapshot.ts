import type { UpstreamIdentity } from './identity.js';
import type { SessionState } from './session.js';

/**
 * The health of one endpoint:
 * - `connecting`: no usable session yet (first dial, or redialling after a loss);
 * - `ready`: holds a session that takes streams, and its readiness probe passes;
 * - `draining`: takes no new requests while its streams finish (removed, or shutting down);
 * - `ejected`: out of rotation after local-origin failures, until its ejection time passes.
 */
export type EndpointState = 'connecting' | 'ready' | 'draining' | 'ejected';

export const ENDPOINT_STATES: readonly EndpointState[] = ['connecting', 'ready', 'draining', 'ejected'];

export interface SessionSnapshot {
  id: number;
  identity: UpstreamIdentity;
  state: SessionState;
  since: string;
  activeStreams: number;
  maxConcurrentStreams: number;
  rttMs: number | undefined;
}

/** A point-in-time view of one endpoint, served at /state and read by the metrics collectors. */
export interface EndpointSnapshot {
  endpoint: string;
  /** `fallback` endpoints (the load balancer) serve only while no primary endpoint is ready. */
  role: 'primary' | 'fallback';
  state: EndpointState;
  /** ISO time of the last state change. */
  since: string;
  /** Why it entered its current state (a closed set: see EndpointTransitionReason). */
  reason: string;
  lastError: { code: string; message: string; at: string } | undefined;
  /** Exponentially weighted moving average of PING round trips, in ms. */
  rttMs: number | undefined;
  /** Ejections in a row; the next one lasts health.ejectionTime times this, up to the maximum. */
  consecutiveEjections: number;
  ejectedUntil: string | undefined;
  /** Result of the last readiness probe; undefined before the first. */
  probeReady: boolean | undefined;
  activeStreams: number;
  sessions: SessionSnapshot[];
}
