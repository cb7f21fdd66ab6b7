import type { KubeObject } from '../fake-apiserver/store.js';
import { KubeletRequestError } from './events.js';
import type { GoHttp2Connection } from './go-connection.js';
import { Backoff, goDuration, sleep } from './sleep.js';
import { LEASE_RENEW_JITTER, LEASE_UPDATE_RETRIES, type KubeletTimings } from './timings.js';

export interface LeaseControllerOptions {
  connection: GoHttp2Connection;
  nodeName: string;
  timings: KubeletTimings;
  /** kubelet's OnHeartbeatFailure, called after the second and every later failed update of a sync. */
  onRepeatedHeartbeatFailure: (() => void) | undefined;
  signal: AbortSignal;
}

const LEASE_NAMESPACE = 'kube-node-lease';

/**
 * kubelet's node lease controller (k8s.io/component-helpers/apimachinery/lease). Each sync updates
 * the last lease it wrote, with that lease's resourceVersion, up to five times in a row. A
 * conflict makes it read the lease again. When every update failed, it falls back to GET (or
 * create) with backoff until that succeeds. Syncs are renewInterval apart, counted from the end of
 * the previous one.
 */
export class LeaseController {
  readonly #options: LeaseControllerOptions;
  readonly #collectionPath: string;
  readonly #objectPath: string;
  #latest: KubeObject | undefined;

  constructor(options: LeaseControllerOptions) {
    this.#options = options;
    this.#collectionPath = `/apis/coordination.k8s.io/v1/namespaces/${LEASE_NAMESPACE}/leases`;
    this.#objectPath = `${this.#collectionPath}/${encodeURIComponent(options.nodeName)}`;
  }

  async run(): Promise<void> {
    const { signal, timings } = this.#options;
    while (!signal.aborted) {
      await this.#sync();
      await sleep(timings.leaseRenewIntervalMs * (1 + Math.random() * LEASE_RENEW_JITTER), signal);
    }
  }

  async #sync(): Promise<void> {
    if (this.#latest !== undefined && (await this.#retryUpdate(this.#latest))) return;

    const ensured = await this.#backoffEnsure();
    if (ensured === undefined) return;
    this.#latest = ensured.lease;
    if (!ensured.created) await this.#retryUpdate(ensured.lease);
  }

  /** Returns true once an update succeeded. */
  async #retryUpdate(base: KubeObject): Promise<boolean> {
    let current = base;
    for (let attempt = 0; attempt < LEASE_UPDATE_RETRIES; attempt++) {
      if (this.#options.signal.aborted) return false;

      const outcome = await this.#update(current);
      if (outcome.kind === 'updated') {
        this.#latest = outcome.lease;
        return true;
      }
      if (outcome.kind === 'conflict') {
        const ensured = await this.#backoffEnsure();
        if (ensured === undefined) return false;
        current = ensured.lease;
        continue;
      }
      if (attempt > 0) this.#options.onRepeatedHeartbeatFailure?.();
    }
    return false;
  }

  async #update(base: KubeObject): Promise<{ kind: 'updated'; lease: KubeObject } | { kind: 'conflict' | 'failed' }> {
    const lease = this.#renewed(base);
    try {
      const response = await this.#options.connection.request({
        operation: 'lease-update',
        method: 'PUT',
        path: `${this.#objectPath}?timeout=${goDuration(this.#options.timings.heartbeatTimeoutMs)}`,
        contentType: 'application/json',
        body: JSON.stringify(lease),
        timeoutMs: this.#options.timings.heartbeatTimeoutMs,
      });
      if (response.status === 200) return { kind: 'updated', lease: parseObject(response.body) };
      return { kind: response.status === 409 ? 'conflict' : 'failed' };
    } catch (err) {
      if (!(err instanceof KubeletRequestError)) throw err;
      return { kind: 'failed' };
    }
  }

  /** GET, or create when missing, retried with backoff until it succeeds; undefined once stopped. */
  async #backoffEnsure(): Promise<{ lease: KubeObject; created: boolean } | undefined> {
    const { signal, timings } = this.#options;
    const backoff = new Backoff(timings.ensureLeaseBackoffMs.initial, timings.ensureLeaseBackoffMs.max);

    while (!signal.aborted) {
      try {
        return await this.#ensure();
      } catch (err) {
        if (!(err instanceof KubeletRequestError)) throw err;
      }
      await sleep(backoff.next(), signal);
    }
    return undefined;
  }

  async #ensure(): Promise<{ lease: KubeObject; created: boolean }> {
    const { connection, timings } = this.#options;
    const timeout = `?timeout=${goDuration(timings.heartbeatTimeoutMs)}`;

    const got = await connection.request({
      operation: 'lease-get',
      method: 'GET',
      path: `${this.#objectPath}${timeout}`,
      timeoutMs: timings.heartbeatTimeoutMs,
      expectedStatuses: [404],
    });
    if (got.status === 200) return { lease: parseObject(got.body), created: false };
    if (got.status !== 404) throw new KubeletRequestError('http-status', `lease GET returned status ${got.status}`, got.status);

    const created = await connection.request({
      operation: 'lease-create',
      method: 'POST',
      path: `${this.#collectionPath}${timeout}`,
      contentType: 'application/json',
      body: JSON.stringify(this.#renewed(undefined)),
      timeoutMs: timings.heartbeatTimeoutMs,
    });
    if (created.status !== 201) throw new KubeletRequestError('http-status', `lease create returned status ${created.status}`, created.status);
    return { lease: parseObject(created.body), created: true };
  }

  /** A copy of `base` (or a new lease) held by this node and renewed now. */
  #renewed(base: KubeObject | undefined): KubeObject {
    const { nodeName, timings } = this.#options;
    const lease: KubeObject = base !== undefined ? structuredClone(base) : {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: nodeName, namespace: LEASE_NAMESPACE },
    };
    lease.spec = {
      ...((lease.spec as object | undefined) ?? {}),
      holderIdentity: nodeName,
      leaseDurationSeconds: Math.max(1, Math.round(timings.leaseDurationMs / 1000)),
      renewTime: microTime(new Date()),
    };
    return lease;
  }
}

/** Kubernetes MicroTime: RFC 3339 with six fractional digits. */
function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export function parseObject(body: Buffer): KubeObject {
  return JSON.parse(body.toString('utf8')) as KubeObject;
}
