import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import type { BackoffPolicy } from '../upstream/backoff.js';
import { parseEndpoint, type Endpoint } from '../upstream/endpoint.js';
import type { UpstreamIdentity } from '../upstream/identity.js';
import type { UpstreamPool } from '../upstream/pool.js';
import { PoolApiClient } from './api-client.js';
import { DnsSource, systemLookup, type LookupFunction } from './dns-source.js';
import { hasHostName } from './endpoint-address.js';
import { EndpointSet, type SourceDefinition } from './endpoint-set.js';
import { EndpointSliceSource } from './endpointslice-source.js';
import { EndpointStateFile } from './state-file.js';

/** Internal settings of endpoint discovery; tests shorten them, operators have no key for them. */
export interface DiscoveryTuning {
  /** Resolves host names; the system resolver unless a test injects records. */
  lookup: LookupFunction;
  /** Quiet time before a changed endpoint list is applied. */
  debounceMs: number;
  /** Maximum wait of a change while more changes keep coming. */
  maxDelayMs: number;
  /** Deadline of one discovery request (list, or a watch's response headers). */
  requestTimeoutMs: number;
  /** Backoff between failed discovery requests. */
  retry: BackoffPolicy;
  /** Time between attempts while the identity may not read EndpointSlices. */
  forbiddenRetryMs: number;
  /** Range of a discovery watch's timeoutSeconds. */
  watchTimeoutSeconds: { min: number; max: number };
  /** Largest discovery response, and largest watch event, in bytes. */
  maxBodyBytes: number;
}

// A restarting kube-apiserver leaves and rejoins the kubernetes Service within seconds; 3 s of
// quiet lets such a flap pass without draining the replica's sessions and watches.
const DEFAULT_TUNING: DiscoveryTuning = {
  lookup: systemLookup,
  debounceMs: 3000,
  maxDelayMs: 30_000,
  requestTimeoutMs: 10_000,
  retry: { baseMs: 1000, maxMs: 30_000 },
  forbiddenRetryMs: 10 * 60_000,
  // client-go's reflectors pick 5 to 10 minutes for the same reason: spread re-watches out.
  watchTimeoutSeconds: { min: 300, max: 600 },
  maxBodyBytes: 4 * 1024 * 1024,
};

const DISCOVERY_SOURCE = 'endpointslices';

/**
 * The sources of the pool's endpoints, kept current: the configured endpoints with their host
 * names resolved, the replicas listed in the kubernetes Service's EndpointSlices, and the
 * endpoints saved by the previous run. Created before the pool (it supplies the first list),
 * started once the pool exists (discovery reads the API through the pool's sessions).
 */
export class EndpointDiscovery {
  /** The primary endpoints to create the pool with. */
  readonly initialEndpoints: Endpoint[];
  /** upstream.fallback, used only while no primary endpoint is ready. */
  readonly fallbackEndpoints: Endpoint[];

  readonly #config: Config;
  readonly #log: Logger;
  readonly #tuning: DiscoveryTuning;
  readonly #dns: DnsSource;
  readonly #set: EndpointSet;
  readonly #stateFile: EndpointStateFile;
  #slices: EndpointSliceSource | undefined;
  #pool: UpstreamPool | undefined;

  private constructor(parts: {
    config: Config;
    log: Logger;
    tuning: DiscoveryTuning;
    dns: DnsSource;
    set: EndpointSet;
    stateFile: EndpointStateFile;
    fallback: Endpoint[];
  }) {
    this.#config = parts.config;
    this.#log = parts.log;
    this.#tuning = parts.tuning;
    this.#dns = parts.dns;
    this.#set = parts.set;
    this.#stateFile = parts.stateFile;
    this.initialEndpoints = parts.set.current;
    this.fallbackEndpoints = parts.fallback;
  }

  /**
   * Reads the saved endpoints and resolves every configured host name once. Each lookup may take
   * up to upstream.connectTimeout, so a slow resolver delays the start by that much at most. A
   * name that has not resolved by then is dialled by name until a later lookup succeeds.
   */
  static async prepare(config: Config, log: Logger, overrides: Partial<DiscoveryTuning> = {}): Promise<EndpointDiscovery> {
    const given = Object.entries(overrides).filter(([, value]) => value !== undefined);
    const tuning: DiscoveryTuning = { ...DEFAULT_TUNING, ...(Object.fromEntries(given) as Partial<DiscoveryTuning>) };
    const serverName = config.upstream.tls.serverName;
    const configured = config.upstream.endpoints.map((raw) => parseEndpoint(raw, serverName));
    const fallback = config.upstream.fallback.map((raw) => parseEndpoint(raw, serverName));

    const stateFile = new EndpointStateFile(config.stateDir, serverName, log);
    const saved = await stateFile.load();

    // Until the set exists, resolutions are collected here to become the sources' first lists.
    const resolvedAtStart = new Map<string, Endpoint[]>();
    let set: EndpointSet | undefined;
    const dns = new DnsSource({
      endpoints: configured.filter(hasHostName),
      lookup: tuning.lookup,
      intervalMs: config.upstream.resolveIntervalMs,
      timeoutMs: config.upstream.connectTimeoutMs,
      log,
      onResolved: (endpoint, resolved) => {
        if (set === undefined) resolvedAtStart.set(endpoint.id, resolved);
        else set.update(dnsSourceName(endpoint), resolved);
      },
    });
    await dns.resolveAll();

    const sources: SourceDefinition[] = configured.map((endpoint) => {
      if (!hasHostName(endpoint)) return { name: `config ${endpoint.id}`, initial: [endpoint], reported: true };
      const resolved = resolvedAtStart.get(endpoint.id);
      return { name: dnsSourceName(endpoint), initial: resolved ?? [endpoint], reported: resolved !== undefined };
    });
    if (config.upstream.discovery === 'endpointslices') {
      sources.push({ name: DISCOVERY_SOURCE, initial: [], reported: false, authoritative: true });
    }

    let discovery: EndpointDiscovery | undefined;
    set = new EndpointSet({
      sources,
      saved,
      reservedIds: new Set(fallback.map((endpoint) => endpoint.id)),
      debounceMs: tuning.debounceMs,
      maxDelayMs: tuning.maxDelayMs,
      log,
      onApply: (endpoints) => {
        if (discovery !== undefined) discovery.#apply(endpoints);
      },
    });

    discovery = new EndpointDiscovery({ config, log, tuning, dns, set, stateFile, fallback });
    return discovery;
  }

  /** Saves the first list and starts re-resolving names and, when configured, watching EndpointSlices. */
  start(pool: UpstreamPool, identity: UpstreamIdentity): void {
    this.#pool = pool;
    // A late lookup from prepare() may have changed the list after the pool was created.
    pool.setEndpoints(this.#set.current);
    void this.#stateFile.save(this.#set.current);
    this.#dns.start();

    if (this.#config.upstream.discovery !== 'endpointslices') return;
    const client = new PoolApiClient({ pool, identity, timeoutMs: this.#tuning.requestTimeoutMs, maxBodyBytes: this.#tuning.maxBodyBytes });
    this.#slices = new EndpointSliceSource({
      client,
      serverNameOverride: this.#config.upstream.tls.serverName,
      log: this.#log,
      onChange: (endpoints) => this.#set.update(DISCOVERY_SOURCE, endpoints),
      retry: this.#tuning.retry,
      forbiddenRetryMs: this.#tuning.forbiddenRetryMs,
      watchTimeoutSeconds: this.#tuning.watchTimeoutSeconds,
    });
    this.#slices.start();
  }

  stop(): void {
    this.#dns.stop();
    this.#slices?.stop();
    this.#set.stop();
  }

  #apply(endpoints: Endpoint[]): void {
    this.#pool?.setEndpoints(endpoints);
    void this.#stateFile.save(endpoints);
  }
}

function dnsSourceName(endpoint: Endpoint): string {
  return `dns ${endpoint.id}`;
}
