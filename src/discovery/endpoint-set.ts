import type { Logger } from 'pino';
import type { Endpoint } from '../upstream/endpoint.js';
import { sameEndpointIds } from './endpoint-address.js';

/** One place endpoints come from, in the order the merged list puts them. */
export interface SourceDefinition {
  /** Names the source in logs: `config <url>`, `dns <url>` or `endpointslices`. */
  name: string;
  /** Endpoints the source contributes until it first reports: the configured endpoint itself, or none. */
  initial: Endpoint[];
  /** True when `initial` is already the source's own result (a configured IP, a name resolved at start). */
  reported: boolean;
  /** Discovery is the authority on the replicas: once it has reported, saved endpoints are no longer needed. */
  authoritative?: boolean;
}

export interface EndpointSetOptions {
  sources: SourceDefinition[];
  /** Endpoints saved by the previous run; they stand in until the sources have reported. */
  saved: Endpoint[];
  /** Ids never made primary: the fallback endpoints, which the pool keeps in their own role. */
  reservedIds?: ReadonlySet<string>;
  /** Quiet time a change must hold before it is applied: a restarting API server flaps. */
  debounceMs: number;
  /** Maximum time a change waits while further changes keep arriving. */
  maxDelayMs: number;
  log: Logger;
  /** Applies a new primary endpoint list: the pool's setEndpoints, and saving it. */
  onApply(endpoints: Endpoint[]): void;
}

interface SourceState {
  definition: SourceDefinition;
  /** The source's last report; an empty one means "keep `inEffect`". */
  latest: Endpoint[];
  /** The source's part of the list in force: its last non-empty report, once committed. */
  inEffect: Endpoint[];
  /** True once a non-empty report of the source has been committed. */
  reported: boolean;
  /** Set while the source reports no endpoint, so the warning is logged once per episode. */
  emptyWarned: boolean;
}

/**
 * Merges the endpoint sources into the pool's primary endpoints. The list is the configured
 * endpoints (each name replaced by its addresses), then the discovered ones, then the endpoints
 * saved by the previous run while any source has not reported yet (or, with discovery, until it
 * has), without duplicate ids. A change is applied once the list has held still for debounceMs,
 * or at the latest maxDelayMs after the first change.
 *
 * Invariant: a source whose last report is empty contributes what it contributed to the list in
 * force, so no source can empty the list. That holds even for the smaller lists a source reports
 * on the way down, such as several slices deleted one by one. An empty list from discovery is far
 * more likely a broken control plane than a cluster without API servers.
 */
export class EndpointSet {
  readonly #options: EndpointSetOptions;
  readonly #sources = new Map<string, SourceState>();
  #savedInUse: boolean;
  #applied: Endpoint[];
  #timer: NodeJS.Timeout | undefined;
  #firstPendingAt = 0;
  #stopped = false;

  constructor(options: EndpointSetOptions) {
    this.#options = options;
    for (const definition of options.sources) {
      const initial = [...definition.initial];
      this.#sources.set(definition.name, { definition, latest: initial, inEffect: initial, reported: definition.reported, emptyWarned: false });
    }
    this.#savedInUse = options.saved.length > 0 && this.#waitingForSources((state) => state.reported);
    if (options.saved.length > 0 && !this.#savedInUse) {
      options.log.info({ saved: options.saved.length }, 'saved endpoints not needed: every endpoint source has reported');
    }
    this.#applied = this.#desired();
  }

  /** The endpoints applied last: the pool's primary endpoints. */
  get current(): Endpoint[] {
    return [...this.#applied];
  }

  /** True while the saved endpoints are part of the list. */
  get usingSaved(): boolean {
    return this.#savedInUse;
  }

  /**
   * Records what a source found. An empty list keeps the source's earlier endpoints (see the class
   * invariant) and is logged once.
   */
  update(sourceName: string, endpoints: Endpoint[]): void {
    if (this.#stopped) return;
    const state = this.#sources.get(sourceName);
    if (state === undefined) throw new Error(`unknown endpoint source ${JSON.stringify(sourceName)}`);

    state.latest = endpoints;
    if (endpoints.length === 0 && !state.emptyWarned) {
      state.emptyWarned = true;
      this.#options.log.warn(
        { source: sourceName, kept: state.inEffect.map((endpoint) => endpoint.id), usingSaved: this.#savedInUse },
        'endpoint source lists no ready endpoint; keeping the endpoints known before',
      );
    }
    if (endpoints.length > 0) state.emptyWarned = false;
    this.#schedule();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  /** True while the saved endpoints still stand in for a source, given which sources count as reported. */
  #waitingForSources(reported: (state: SourceState) => boolean): boolean {
    const states = [...this.#sources.values()];
    const authority = states.find((state) => state.definition.authoritative === true);
    if (authority !== undefined) return !reported(authority);
    return states.some((state) => !reported(state));
  }

  /** The list the latest reports ask for, as it would be once committed. */
  #desired(): Endpoint[] {
    const merged = new Map<string, Endpoint>();
    const add = (endpoint: Endpoint) => {
      if (!merged.has(endpoint.id) && this.#options.reservedIds?.has(endpoint.id) !== true) merged.set(endpoint.id, endpoint);
    };

    for (const state of this.#sources.values()) (state.latest.length > 0 ? state.latest : state.inEffect).forEach(add);
    const savedInUse = this.#savedInUse && this.#waitingForSources((state) => state.reported || state.latest.length > 0);
    if (savedInUse) this.#options.saved.forEach(add);
    return [...merged.values()];
  }

  /** Makes the latest non-empty reports the ones in force, and drops the saved endpoints once they are no longer needed. */
  #commit(): void {
    for (const [name, state] of this.#sources) {
      if (state.latest.length === 0) continue;
      state.inEffect = state.latest;
      if (!state.reported) this.#options.log.debug({ source: name }, 'endpoint source reported');
      state.reported = true;
    }

    if (this.#savedInUse && !this.#waitingForSources((state) => state.reported)) {
      this.#savedInUse = false;
      this.#options.log.info({ saved: this.#options.saved.length }, 'endpoint sources have reported; the saved endpoints are dropped unless a source lists them');
    }
  }

  #schedule(): void {
    const desired = this.#desired();
    if (sameEndpointIds(desired, this.#applied)) {
      // The list is back to the one in force (a flap ended), or never left it.
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#commit();
      return;
    }

    const now = Date.now();
    if (this.#timer === undefined) this.#firstPendingAt = now;
    clearTimeout(this.#timer);
    const delayMs = Math.max(0, Math.min(this.#options.debounceMs, this.#firstPendingAt + this.#options.maxDelayMs - now));
    this.#timer = setTimeout(() => this.#apply(), delayMs);
    this.#timer.unref();
  }

  #apply(): void {
    this.#timer = undefined;
    if (this.#stopped) return;

    const desired = this.#desired();
    this.#commit();
    const before = new Set(this.#applied.map((endpoint) => endpoint.id));
    const after = new Set(desired.map((endpoint) => endpoint.id));
    this.#applied = desired;

    this.#options.log.info(
      {
        added: [...after].filter((id) => !before.has(id)),
        removed: [...before].filter((id) => !after.has(id)),
        endpoints: [...after],
      },
      'endpoint list changed',
    );
    this.#options.onApply(desired);
  }
}
