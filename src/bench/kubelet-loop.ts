/**
 * A kubelet-like request loop on one client. On every tick it GETs its Node, and on every
 * `leaseEveryTicks`-th tick it renews its Lease with a PUT. When `statusEveryTicks` is set, it also
 * patches the status of its Node halfway between two renewals. Requests are fired on the tick
 * whether or not earlier ones have finished, as kubelet's status and lease loops run independently
 * of its other requests, so every path of a run sends the same requests at the same moments.
 *
 * Each lease PUT and status PATCH carries a sequence number in an annotation, so the server's
 * change history shows exactly which writes were applied, and how often.
 */
import type { BenchClient } from './clients/types.js';

export const LEASE_NAMESPACE = 'kube-node-lease';
export const RENEWAL_ANNOTATION = 'bench.stallguard.io/renewal';
export const STATUS_UPDATE_ANNOTATION = 'bench.stallguard.io/status-update';

export type RequestKind = 'get-node' | 'put-lease' | 'patch-status';

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
  /** Sequence number of a node status PATCH. */
  statusUpdate?: number;
}

export interface LoopSchedule {
  tickMs: number;
  leaseEveryTicks: number;
  /** Ticks between two node status PATCHes, sent on the ticks halfway between lease renewals; none when unset. */
  statusEveryTicks?: number;
  requestTimeoutMs: number;
}

export class KubeletLoop {
  readonly records: RequestRecord[] = [];
  readonly #pending = new Set<Promise<void>>();
  #renewals = 0;
  #statusUpdates = 0;

  /** `leaseName` also names the Node whose status is patched, as kubelet's Lease and Node share the node's name. */
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

    const statusEvery = this.schedule.statusEveryTicks;
    if (statusEvery !== undefined && index % statusEvery === Math.floor(statusEvery / 2)) {
      const statusUpdate = ++this.#statusUpdates;
      this.#send(
        { kind: 'patch-status', tick: index, sentAtMs: this.now(), statusUpdate },
        {
          method: 'PATCH',
          path: `/api/v1/nodes/${this.leaseName}/status`,
          headers: { 'content-type': 'application/strategic-merge-patch+json' },
          body: JSON.stringify(nodeStatusPatch(statusUpdate)),
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

/**
 * Builds a node status PATCH as kubelet sends it: the Ready condition with a new heartbeat time.
 * It has no resourceVersion, as kubelet's status patch has none, so it applies unconditionally.
 */
export function nodeStatusPatch(statusUpdate: number): object {
  const now = new Date().toISOString();
  return {
    metadata: { annotations: { [STATUS_UPDATE_ANNOTATION]: String(statusUpdate) } },
    status: { conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', lastHeartbeatTime: now, lastTransitionTime: now }] },
  };
}

/** Builds the Node object a loop patches, created before the first PATCH. */
export function nodeObject(name: string): { apiVersion: string; kind: string; metadata: { name: string; labels: Record<string, string> }; status: object } {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name } },
    status: { conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }] },
  };
}
