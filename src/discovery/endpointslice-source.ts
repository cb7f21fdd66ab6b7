import type { Logger } from 'pino';
import { describeError } from '../errors.js';
import { backoffDelayMs, type BackoffPolicy } from '../upstream/backoff.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { ApiResponse, PoolApiClient, WatchOutcome } from './api-client.js';
import { endpointForIp, originOf } from './endpoint-address.js';
import { readEndpoints, readEndpointSlice, type ReadAddresses } from './kubernetes-endpoints.js';

/** A resource that lists the API servers, and how to read it. */
interface ServiceResource {
  kind: 'EndpointSlice' | 'Endpoints';
  /** List path with its selector; the watch adds to its query. */
  listPath: string;
  read(object: unknown): ReadAddresses;
}

const ENDPOINT_SLICES: ServiceResource = {
  kind: 'EndpointSlice',
  listPath: `/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?${new URLSearchParams({ labelSelector: 'kubernetes.io/service-name=kubernetes' })}`,
  read: readEndpointSlice,
};

// The legacy object is read as a list with a field selector rather than GET .../endpoints/kubernetes,
// so that the list's resourceVersion can start the watch even while the object does not exist.
const LEGACY_ENDPOINTS: ServiceResource = {
  kind: 'Endpoints',
  listPath: `/api/v1/namespaces/default/endpoints?${new URLSearchParams({ fieldSelector: 'metadata.name=kubernetes' })}`,
  read: readEndpoints,
};

// A watch that the server ends sooner than this after it started counts as a failure, so a
// server that ends every watch at once is retried with backoff instead of in a tight loop.
const MIN_HEALTHY_WATCH_MS = 1000;

export interface EndpointSliceSourceOptions {
  client: Pick<PoolApiClient, 'get' | 'watch'>;
  /** upstream.tls.serverName, applied to discovered addresses as to configured ones. */
  serverNameOverride: string;
  log: Logger;
  /** Called with every ready address after each list and each watch event. */
  onChange(endpoints: Endpoint[]): void;
  /** Backoff between failed attempts to list or watch. */
  retry: BackoffPolicy;
  /** Time between attempts while the identity may read neither EndpointSlices nor Endpoints (401 or 403). */
  forbiddenRetryMs: number;
  /** Range for the watch's timeoutSeconds; each watch draws one, so a fleet does not re-watch in step. */
  watchTimeoutSeconds: { min: number; max: number };
}

type CycleResult = { kind: 'relist' } | { kind: 'forbidden' } | { kind: 'failed'; detail: string };

/**
 * Reads the API servers' own addresses from the `kubernetes` Service in `default`: lists its
 * EndpointSlices, then watches from the list's resourceVersion. A watch that ends cleanly is
 * resumed from the last resourceVersion seen. A lost session, a failed request or 410 Gone starts
 * over with a list.
 *
 * The legacy Endpoints object default/kubernetes is read instead where EndpointSlices are not
 * served (404), and where the identity may not read them (401, 403): the Node authorizer lets a
 * kubelet identity read Endpoints but not EndpointSlices (Kubernetes documentation, "Using Node
 * Authorization", v1.29 to v1.34). When neither may be read, discovery logs it once and tries
 * again every forbiddenRetryMs, starting with EndpointSlices, while the other sources go on.
 */
export class EndpointSliceSource {
  readonly #options: EndpointSliceSourceOptions;
  #resource: ServiceResource = ENDPOINT_SLICES;
  #stopped = false;
  #running: Promise<void> | undefined;
  #watchAbort: AbortController | undefined;
  #wake: (() => void) | undefined;
  #failures = 0;
  /** Set once reading EndpointSlices failed with 401 or 403, so the legacy Endpoints object is read instead. */
  #slicesForbidden = false;
  /** Set once reading both resources failed with 401 or 403. */
  #forbidden = false;
  readonly #reportedProblems = new Set<string>();

  constructor(options: EndpointSliceSourceOptions) {
    this.#options = options;
  }

  start(): void {
    if (this.#running !== undefined || this.#stopped) return;
    this.#options.log.info({ resource: this.#resource.kind }, 'endpoint discovery started');
    this.#running = this.#run();
  }

  /** Stops at once: the current watch is cancelled and no new request is sent. */
  stop(): void {
    this.#stopped = true;
    this.#watchAbort?.abort();
    this.#wake?.();
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      const result = await this.#listAndWatch();
      if (this.#stopped) return;

      if (result.kind === 'forbidden') {
        await this.#sleep(this.#options.forbiddenRetryMs);
      } else if (result.kind === 'failed') {
        this.#failures += 1;
        const delayMs = backoffDelayMs(this.#options.retry, this.#failures);
        const fields = { resource: this.#resource.kind, err: result.detail, failures: this.#failures, retryInMs: delayMs };
        // The first failure of a streak is a warning; repeats of it are debug lines.
        if (this.#failures === 1) this.#options.log.warn(fields, 'endpoint discovery failed; retrying');
        else this.#options.log.debug(fields, 'endpoint discovery failed again');
        await this.#sleep(delayMs);
      }
    }
  }

  async #listAndWatch(): Promise<CycleResult> {
    const resource = this.#resource;

    let response: ApiResponse;
    try {
      response = await this.#options.client.get(resource.listPath);
    } catch (err) {
      return { kind: 'failed', detail: describeError(err) };
    }
    if (this.#stopped) return { kind: 'relist' };

    if (response.status === 404 && resource === ENDPOINT_SLICES) {
      this.#resource = LEGACY_ENDPOINTS;
      this.#options.log.info({ endpoint: response.endpoint }, 'EndpointSlices are not served (404); reading the legacy Endpoints object default/kubernetes instead');
      return { kind: 'relist' };
    }
    if (response.status === 401 || response.status === 403) {
      return this.#onForbidden(response);
    }
    if (response.status !== 200) {
      return { kind: 'failed', detail: `listing ${resource.kind}s answered ${response.status}: ${statusMessage(response.body)}` };
    }

    let list: { items?: unknown; metadata?: { resourceVersion?: unknown } };
    try {
      list = JSON.parse(response.body.toString('utf8')) as typeof list;
    } catch (err) {
      return { kind: 'failed', detail: `the ${resource.kind} list is not valid JSON: ${describeError(err)}` };
    }
    const items = Array.isArray(list.items) ? list.items : [];
    const objects = new Map<string, unknown>();
    for (const item of items) objects.set(objectName(item), item);
    let resourceVersion = typeof list.metadata?.resourceVersion === 'string' ? list.metadata.resourceVersion : '';

    this.#onPermitted();
    this.#failures = 0;
    this.#report(objects);

    while (!this.#stopped) {
      const controller = new AbortController();
      this.#watchAbort = controller;
      let eventFailure: CycleResult | undefined;

      const onLine = (line: string) => {
        const event = parseEvent(line);
        if (event === undefined) {
          eventFailure = { kind: 'failed', detail: `the ${resource.kind} watch sent an invalid event` };
          controller.abort();
          return;
        }

        if (event.type === 'ERROR') {
          const code = (event.object as { code?: unknown }).code;
          // 410 Gone: the resourceVersion is too old to resume from, so list again.
          eventFailure = code === 410 ? { kind: 'relist' } : { kind: 'failed', detail: `the ${resource.kind} watch sent an error: ${statusMessageOf(event.object)}` };
          controller.abort();
          return;
        }

        const version = (event.object as { metadata?: { resourceVersion?: unknown } }).metadata?.resourceVersion;
        if (typeof version === 'string' && version !== '') resourceVersion = version;
        if (event.type === 'BOOKMARK') return;

        if (event.type === 'DELETED') objects.delete(objectName(event.object));
        else objects.set(objectName(event.object), event.object);
        this.#report(objects);
      };

      const startedAt = Date.now();
      const outcome = await this.#options.client.watch(this.#watchPath(resource, resourceVersion), onLine, controller.signal);
      this.#watchAbort = undefined;
      if (this.#stopped) return { kind: 'relist' };
      if (eventFailure !== undefined) return eventFailure;

      const result = this.#afterWatch(outcome, Date.now() - startedAt);
      if (result !== undefined) return result;
    }
    return { kind: 'relist' };
  }

  /** Returns what to do after a watch ended, or undefined to watch again from the same resourceVersion. */
  #afterWatch(outcome: WatchOutcome, durationMs: number): CycleResult | undefined {
    if (outcome.kind === 'status') {
      const { response } = outcome;
      if (response.status === 401 || response.status === 403) return this.#onForbidden(response);
      if (response.status === 410) return { kind: 'relist' };
      return { kind: 'failed', detail: `watching ${this.#resource.kind}s answered ${response.status}: ${statusMessage(response.body)}` };
    }

    const fields = { resource: this.#resource.kind, endpoint: outcome.endpoint, reason: outcome.reason, detail: outcome.detail };
    switch (outcome.reason) {
      case 'ended':
        if (durationMs < MIN_HEALTHY_WATCH_MS) return { kind: 'failed', detail: `the watch ended after ${durationMs}ms` };
        this.#options.log.debug(fields, 'discovery watch ended; watching again');
        return undefined;
      case 'retired':
      case 'goaway':
        this.#options.log.debug(fields, 'discovery watch moved off a draining session');
        return undefined;
      case 'stopped':
        return { kind: 'relist' };
      case 'session_lost':
      case 'failed':
        return { kind: 'failed', detail: `watch on ${outcome.endpoint ?? 'no endpoint'}: ${outcome.reason}: ${outcome.detail}` };
    }
  }

  #watchPath(resource: ServiceResource, resourceVersion: string): string {
    const { min, max } = this.#options.watchTimeoutSeconds;
    const timeoutSeconds = Math.floor(min + Math.random() * (max - min + 1));
    const query = new URLSearchParams({ watch: '1', allowWatchBookmarks: 'true', timeoutSeconds: String(timeoutSeconds) });
    if (resourceVersion !== '') query.set('resourceVersion', resourceVersion);
    return `${resource.listPath}&${query}`;
  }

  /** Sends every ready address of the current objects to onChange, once per distinct address. */
  #report(objects: ReadonlyMap<string, unknown>): void {
    const seen = new Set<string>();
    const endpoints: Endpoint[] = [];

    for (const object of objects.values()) {
      const read = this.#resource.read(object);
      for (const problem of read.problems) this.#reportProblem(problem);
      for (const address of read.addresses) {
        const origin = originOf(address.ip, address.port);
        if (seen.has(origin)) continue;
        seen.add(origin);
        endpoints.push(endpointForIp(address.ip, address.port, this.#options.serverNameOverride));
      }
    }

    this.#options.log.debug({ resource: this.#resource.kind, endpoints: endpoints.map((endpoint) => endpoint.id) }, 'discovered API-server addresses');
    this.#options.onChange(endpoints);
  }

  // Each distinct problem is logged once: a watch resends the same object on every change.
  #reportProblem(problem: string): void {
    if (this.#reportedProblems.has(problem)) return;
    this.#reportedProblems.add(problem);
    this.#options.log.warn({ resource: this.#resource.kind, detail: problem }, 'skipped part of the kubernetes Service endpoints');
  }

  /** Moves from EndpointSlices to the legacy Endpoints object, or gives up until the next attempt when that is refused too. */
  #onForbidden(response: ApiResponse): CycleResult {
    const fields = { resource: this.#resource.kind, status: response.status, endpoint: response.endpoint, reason: statusMessage(response.body) };

    if (this.#resource === ENDPOINT_SLICES) {
      if (!this.#slicesForbidden) {
        this.#options.log.warn(fields, 'reading EndpointSlices is not permitted; reading the legacy Endpoints object default/kubernetes instead');
      }
      this.#slicesForbidden = true;
      this.#resource = LEGACY_ENDPOINTS;
      return { kind: 'relist' };
    }

    if (!this.#forbidden) {
      this.#forbidden = true;
      this.#options.log.warn(
        fields,
        "endpoint discovery is not permitted: grant stallguard's upstream identity get, list and watch on endpointslices.discovery.k8s.io " +
          '(or endpoints) in the default namespace; until then it uses the configured, resolved and saved endpoints only',
      );
    }
    // Permissions may be granted while stallguard runs: the next attempt starts with EndpointSlices again.
    if (this.#slicesForbidden) this.#resource = ENDPOINT_SLICES;
    return { kind: 'forbidden' };
  }

  #onPermitted(): void {
    if (this.#resource === ENDPOINT_SLICES && this.#slicesForbidden) {
      this.#slicesForbidden = false;
      this.#options.log.info({ resource: this.#resource.kind }, 'reading EndpointSlices is permitted again');
    }
    if (!this.#forbidden) return;
    this.#forbidden = false;
    this.#options.log.info({ resource: this.#resource.kind }, 'endpoint discovery is permitted again');
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref();
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }
}

function parseEvent(line: string): { type: string; object: unknown } | undefined {
  try {
    const event = JSON.parse(line) as { type?: unknown; object?: unknown };
    if (typeof event.type !== 'string' || typeof event.object !== 'object' || event.object === null) return undefined;
    return { type: event.type, object: event.object };
  } catch {
    return undefined;
  }
}

function objectName(object: unknown): string {
  const metadata = (object as { metadata?: { namespace?: unknown; name?: unknown } } | null)?.metadata;
  return `${String(metadata?.namespace ?? '')}/${String(metadata?.name ?? '')}`;
}

/** Returns the message of a Kubernetes Status body, or the start of the body when it is not one. */
function statusMessage(body: Buffer): string {
  try {
    return statusMessageOf(JSON.parse(body.toString('utf8')));
  } catch {
    return body.toString('utf8').slice(0, 200);
  }
}

function statusMessageOf(object: unknown): string {
  const message = (object as { message?: unknown } | null)?.message;
  return typeof message === 'string' ? message : JSON.stringify(object).slice(0, 200);
}
