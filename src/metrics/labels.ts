/**
 * Label values for stallguard's metrics. Every label comes from a closed set, so one stallguard
 * exports a bounded number of series whatever its clients send: never a path, a user or a namespace.
 */

/** Methods that keep their own `method` label value; any other method is counted as `other`. */
export const KNOWN_METHODS: readonly string[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

/**
 * Maps a request method to its label. An HTTP/2 client may send any token as :method, so an
 * unknown one becomes `other` instead of a new series.
 */
export function methodLabel(method: string): string {
  return KNOWN_METHODS.includes(method) ? method : 'other';
}

/**
 * Eviction reasons whose series exist at 0 from startup for every endpoint. rate() and increase()
 * cannot see the first increment of a series that did not exist before it, so the reasons an
 * operator alerts on are created up front. The graceful reasons (drain, shutdown, idle_close,
 * rotation, removed) appear on first use.
 */
export const PREDECLARED_EVICTION_REASONS: readonly string[] = ['ping_timeout', 'connect_timeout', 'tls_error', 'reset', 'eof', 'goaway', 'error'];

/**
 * Maps a failed dial to an eviction reason, or undefined when the failure is not one the eviction
 * counter reports. A connect timeout and a TLS failure are sessions lost before they became ready;
 * a refused connection is counted only in stallguard_dial_failures_total.
 */
export function dialFailureEvictionReason(code: string): string | undefined {
  switch (code) {
    case 'SG_ERR_UPSTREAM_CONNECT_TIMEOUT':
      return 'connect_timeout';
    case 'SG_ERR_UPSTREAM_TLS':
      return 'tls_error';
    default:
      return undefined;
  }
}

/**
 * Reasons of a failed attempt whose `retried` series exist at 0 from startup: the session losses
 * and refusals after which the proxy replays a request.
 */
export const PREDECLARED_RETRY_REASONS: readonly string[] = ['ping_timeout', 'reset', 'eof', 'goaway', 'error', 'refused_stream'];

/** Reasons a watch ends, as the proxy reports them; each has a series at 0 from startup. */
export const WATCH_END_REASONS: readonly string[] = ['upstream', 'client', 'session_lost', 'shutdown'];

/** Reasons stallguard responds to a request itself; each has a series at 0 from startup. */
export const REJECT_REASONS: readonly string[] = ['unauthenticated', 'forbidden', 'no_endpoint', 'retries_exhausted', 'bad_request'];

/** Roles of the certificates stallguard loads, as the `role` label of the expiry gauge. */
export type CertificateRole = 'upstream-client' | 'upstream-ca' | 'listen-serving' | 'listen-client-ca';

export const CERTIFICATE_ROLES: readonly CertificateRole[] = ['upstream-client', 'upstream-ca', 'listen-serving', 'listen-client-ca'];
