/**
 * The effective configuration after the file, the environment and the flags are merged and
 * validated. Durations arrive as Go-style strings ("500ms", "2s") and are carried inside as
 * milliseconds, so every field that holds a time ends in `Ms`.
 */
export interface Config {
  mode: 'http2' | 'tcp';
  listen: ListenConfig;
  upstream: UpstreamConfig;
  health: HealthConfig;
  retry: RetryConfig;
  metrics: { address: string };
  log: { level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent' };
  shutdown: { drainTimeoutMs: number };
  stateDir: string;
}

export interface ListenConfig {
  /** host:port of the local TLS listener; the host must be a loopback address unless allowRemote is set. */
  address: string;
  allowRemote: boolean;
  allowAnonymous: boolean;
  tls: { cert: string; key: string; clientCA: string };
  /** host:port of the optional plaintext listener (HTTP/1.1 and h2c); empty disables it. */
  plaintext: string;
}

export interface UpstreamConfig {
  /** https:// URLs of the API-server replicas or of the load balancer; host names are resolved to every address. */
  endpoints: string[];
  /** https:// URLs (typically the load balancer) used only while no other endpoint is ready. */
  fallback: string[];
  /** `endpointslices` adds the replicas listed in the kubernetes Service's EndpointSlices. */
  discovery: 'none' | 'endpointslices';
  /** Time between DNS lookups of the host names in `endpoints`. */
  resolveIntervalMs: number;
  tls: {
    ca: string;
    cert: string;
    key: string;
    serverName: string;
    insecureSkipVerify: boolean;
    /** A loaded certificate that expires within this many ms is logged at warn level once an hour. */
    expiryWarningMs: number;
  };
  identity: UpstreamIdentityMode;
  /** Header names of front-proxy mode, as kube-apiserver's --requestheader-* flags name them. */
  frontProxy: FrontProxyHeaders;
  connectTimeoutMs: number;
  reconnectBackoff: { baseMs: number; maxMs: number };
  maxSessionsPerEndpoint: number;
  /** Endpoints that always keep a live session (warm standby). */
  warmEndpoints: number;
}

export interface HealthConfig {
  pingIntervalMs: number;
  pingTimeoutMs: number;
  writeFreshnessMs: number;
  readyPath: string;
  readyIntervalMs: number;
  ejectionTimeMs: number;
  maxEjectionTimeMs: number;
  maxEjectionPercent: number;
}

export interface RetryConfig {
  maxAttempts: number;
  budgetMs: number;
  maxBodyBytes: number;
}

/**
 * Whom a request without a bearer token acts as upstream:
 * - `static`: the identity in upstream.tls.cert, for every local client that presents the same subject.
 * - `front-proxy`: each local client's own certificate identity, asserted in request headers that
 *   kube-apiserver trusts because upstream.tls.cert is a front-proxy client certificate.
 */
export type UpstreamIdentityMode = 'static' | 'front-proxy';

export interface FrontProxyHeaders {
  usernameHeader: string;
  groupHeader: string;
  extraHeaderPrefix: string;
}
