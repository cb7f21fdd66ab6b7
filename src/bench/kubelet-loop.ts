/**
 * A kubelet-like request loop on one client: on every tick it GETs its Node, and on every
 * `leaseEveryTicks`-th tick it renews its Lease with a PUT. Requests are fired on the tick whether
 * or not earlier ones have finished, as kubelet's status and lease loops run independently of
 * its other requests, so every path of a run sends the same requests at the same moments.
 *
 * Each lease PUT carries a renewal number in an annotation, so the server's change history shows
 * exactly which renewals were applied, and how often.
 */
import type { BenchClient } from './clients/types.js';

export const LEASE_NAMESPACE = 'kube-node-lease';
export const RENEWAL_ANNOTATION = 'bench.stallguard.io/renewal';

export type RequestKind = 'get-node' | 'put-lease';

/** One request as the loop saw it; times are ms on the repetition's monotonic clock. */
export interface RequestRecord {
  kind: RequestKind;
  tick: number;
  sentAtMs: number;
  endedAtMs?: number;
  ok?: boolean;
  /** HTTP status, when a response arrived. */
  status?: number;
  /** Error code (ETIMEDOUT, ERR_STREAM_RESET, ...) when no response arrived. */
  error?: string;
  /** Renewal number of a lease PUT. */
  renewal?: number;
}

export interface LoopSchedule {
  tickMs: number;
  leaseEveryTicks: number;
  requestTimeoutMs: number;
}

export class KubeletLoop {
  readonly records: RequestRecord[] = [];
  readonly #pending = new Set<Promise<void>>();
  #renewals = 0;

  constructor(
    private readonly client: BenchClient,
    private readonly leaseName: string,
    private readonly schedule: LoopSchedule,
    private readonly now: () => number,
  ) {}

  /** Sends this tick's requests without waiting for them. */
  tick(index: number): void {
    this.#send({ kind: 'get-node', tick: index, sentAtMs: this.now() }, { path: '/api/v1/nodes/n1' });

    if (index % this.schedule.leaseEveryTicks === 0) {
      const renewal = ++this.#renewals;
      this.#send(
        { kind: 'put-lease', tick: index, sentAtMs: this.now(), renewal },
        {
          method: 'PUT',
          path: `/apis/coordination.k8s.io/v1/namespaces/${LEASE_NAMESPACE}/leases/${this.leaseName}`,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(leaseBody(this.leaseName, renewal)),
        },
      );
    }
  }

  /** Resolves when every request sent so far has ended; each ends within the request timeout. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#pending]);
  }

  #send(record: RequestRecord, request: { method?: string; path: string; headers?: Record<string, string>; body?: string }): void {
    this.records.push(record);
    const done = this.client
      .send({ ...request, timeoutMs: this.schedule.requestTimeoutMs })
      .then(
        (response) => {
          record.status = response.status;
          record.ok = response.status === 200;
        },
        (err: unknown) => {
          record.ok = false;
          record.error = (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
        },
      )
      .finally(() => {
        record.endedAtMs = this.now();
        this.#pending.delete(done);
      });
    this.#pending.add(done);
  }
}

/**
 * Builds the Lease a kubelet renews. The PUT is unconditional (no resourceVersion), because renewals of
 * overlapping ticks would otherwise conflict with each other. Kubelet sends the resourceVersion it
 * last read and re-reads the Lease on a conflict.
 */
export function leaseBody(name: string, renewal: number): object {
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name, namespace: LEASE_NAMESPACE, annotations: { [RENEWAL_ANNOTATION]: String(renewal) } },
    spec: { holderIdentity: 'n1', leaseDurationSeconds: 40, renewTime: new Date().toISOString() },
  };
}
