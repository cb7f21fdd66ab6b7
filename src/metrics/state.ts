import type { EndpointSnapshot } from '../upstream/snapshot.js';
import type { LoadedCertificate } from './certificates.js';
import type { MetricTotals } from './metrics.js';

/** One endpoint in the /state document: its snapshot and the watches it carries. */
export interface EndpointStatus extends EndpointSnapshot {
  /** Watch streams open on this endpoint; null while the proxy does not report watches per endpoint. */
  activeWatches: number | null;
}

export interface CertificateStatus {
  role: LoadedCertificate['role'];
  path: string;
  subject: string;
  notAfter: string;
  certificates: number;
}

/** The JSON document served at /state and read by `stallguard status`. No field contains a secret. */
export interface StateDocument {
  version: string;
  generatedAt: string;
  startedAt: string;
  ready: boolean;
  /** Why /readyz responds 503, or null when it responds 200. */
  notReadyReason: string | null;
  endpoints: EndpointStatus[];
  /** The upstream client certificate that sessions present, or null when none is configured. */
  identity: { subject: string; commonName: string | null; organizations: string[]; notAfter: string; path: string } | null;
  certificates: CertificateStatus[];
  activeRequests: number;
  activeWatches: number;
  tunnels: number;
  totals: MetricTotals;
  /** The effective configuration in file form, with sensitive keys redacted. */
  config: unknown;
}

export interface StateInput {
  version: string;
  startedAt: Date;
  endpoints: readonly EndpointSnapshot[];
  /** Open watches by endpoint id, when the proxy reports them. */
  watchesByEndpoint: ReadonlyMap<string, number> | undefined;
  certificates: readonly LoadedCertificate[];
  activeRequests: number;
  activeWatches: number;
  tunnels: number;
  totals: MetricTotals;
  config: unknown;
}

/** Assembles the /state document from one endpoint snapshot and the counters. */
export function buildStateDocument(input: StateInput): StateDocument {
  const client = input.certificates.find((certificate) => certificate.role === 'upstream-client');
  const notReady = describeNotReady(input.endpoints);

  return {
    version: input.version,
    generatedAt: new Date().toISOString(),
    startedAt: input.startedAt.toISOString(),
    ready: notReady === undefined,
    notReadyReason: notReady ?? null,
    endpoints: input.endpoints.map((endpoint) => ({
      ...endpoint,
      activeWatches: input.watchesByEndpoint === undefined ? null : (input.watchesByEndpoint.get(endpoint.endpoint) ?? 0),
    })),
    identity:
      client === undefined
        ? null
        : {
            subject: client.subject,
            commonName: client.commonName ?? null,
            organizations: client.organizations,
            notAfter: client.notAfter.toISOString(),
            path: client.path,
          },
    certificates: input.certificates.map((certificate) => ({
      role: certificate.role,
      path: certificate.path,
      subject: certificate.subject,
      notAfter: certificate.notAfter.toISOString(),
      certificates: certificate.certificates,
    })),
    activeRequests: input.activeRequests,
    activeWatches: input.activeWatches,
    tunnels: input.tunnels,
    totals: input.totals,
    config: input.config,
  };
}

/**
 * Returns undefined when at least one endpoint is ready, else why none is, naming each endpoint
 * with its state and last error, in plain text for /readyz.
 */
export function describeNotReady(endpoints: readonly EndpointSnapshot[]): string | undefined {
  if (endpoints.some((endpoint) => endpoint.state === 'ready')) return undefined;
  if (endpoints.length === 0) return 'no API-server endpoint is configured';

  const details = endpoints.map((endpoint) => {
    const error = endpoint.lastError !== undefined ? `, last error: ${endpoint.lastError.message}` : '';
    return `${endpoint.endpoint} is ${endpoint.state} since ${endpoint.since}${error}`;
  });
  return `no API-server endpoint is ready: ${details.join('; ')}`;
}
