/**
 * Events a kubelet-like client reports while it runs. Every event carries the client's name and
 * the wall-clock time (ms since the epoch) at which it happened. The demo builds its timeline and
 * summary from these events only.
 */

/** The API operations a kubelet-like client sends. */
export type KubeletOperation =
  | 'lease-get'
  | 'lease-create'
  | 'lease-update'
  | 'node-get'
  | 'node-status-patch'
  | 'pod-list'
  | 'pod-watch';

/**
 * Why a request failed:
 * - `timeout`: the client's own deadline passed; the stream was reset with CANCEL and the
 *   connection kept, as Go's transport does;
 * - `connection-lost`: the connection closed while the request waited;
 * - `dial-failed`: no connection could be opened;
 * - `http-status`: the server responded with a status outside 2xx;
 * - `stopped`: the client was stopped while the request waited.
 */
export type KubeletFailureCode = 'timeout' | 'connection-lost' | 'dial-failed' | 'http-status' | 'stopped';

export class KubeletRequestError extends Error {
  readonly code: KubeletFailureCode;
  /** The HTTP status for `http-status`. */
  readonly status: number | undefined;

  constructor(code: KubeletFailureCode, message: string, status?: number) {
    super(message);
    this.name = 'KubeletRequestError';
    this.code = code;
    this.status = status;
  }
}

/** Reason the client's HTTP/2 connection closed. */
export type ConnectionCloseReason =
  /** client-go's health check: no PING ACK within the PING timeout. */
  | 'health-check'
  /** kubelet's OnHeartbeatFailure: every connection closed after repeated heartbeat failures. */
  | 'heartbeat-failure'
  /** The server or the network closed it (GOAWAY, FIN, RST, TLS error). */
  | 'remote'
  | 'stopped';

interface EventBase {
  client: string;
  at: number;
}

export interface RequestEvent extends EventBase {
  type: 'request';
  operation: KubeletOperation;
  method: string;
  ok: boolean;
  /** Response status, when response headers arrived. */
  status?: number;
  /** From the request's start (dial included) to its end or failure; for a watch, to its headers. */
  latencyMs: number;
  failure?: { code: KubeletFailureCode; message: string };
}

export interface WatchEventReceived extends EventBase {
  type: 'watch-event';
  eventType: 'ADDED' | 'MODIFIED' | 'DELETED';
  resourceVersion: string;
}

export interface WatchEnded extends EventBase {
  type: 'watch-ended';
  /** True when the server ended the response (END_STREAM): the reflector re-watches at once. */
  clean: boolean;
  reason: string;
  /** The resourceVersion the next watch starts from. */
  resourceVersion: string;
}

export interface PodsListed extends EventBase {
  type: 'pods-listed';
  resourceVersion: string;
  /** The resourceVersion of each listed pod. */
  podVersions: string[];
}

export interface ConnectionOpened extends EventBase {
  type: 'connection-opened';
  connectionId: number;
  dialMs: number;
}

export interface ConnectionClosed extends EventBase {
  type: 'connection-closed';
  connectionId: number;
  reason: ConnectionCloseReason;
  detail: string;
}

export interface HealthCheckEvent extends EventBase {
  type: 'health-check';
  connectionId: number;
  outcome: 'ping-sent' | 'ping-ack' | 'ping-timeout';
  /** For ping-sent: how long no frame had been read. */
  idleMs?: number;
}

export type KubeletEvent =
  | RequestEvent
  | WatchEventReceived
  | WatchEnded
  | PodsListed
  | ConnectionOpened
  | ConnectionClosed
  | HealthCheckEvent;

export type KubeletEventListener = (event: KubeletEvent) => void;
