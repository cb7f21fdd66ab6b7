import type { ConnectionCloseReason, KubeletEvent, KubeletOperation } from './events.js';

const LEASE_OPERATIONS: ReadonlySet<KubeletOperation> = new Set(['lease-get', 'lease-create', 'lease-update']);

/** One failed request, for reports. */
export interface RecordedFailure {
  at: number;
  operation: KubeletOperation;
  message: string;
}

/**
 * The facts about one kubelet-like client that a summary needs, accumulated from its events:
 * request counts and failures, latencies, when the lease was renewed, when anything succeeded and
 * which pod versions the watch delivered.
 */
export class ClientRecord {
  readonly name: string;
  requests = 0;
  failedRequests = 0;
  failedLeaseRequests = 0;
  worstLatencyMs = 0;
  /** Times of successful lease updates and creates, in the order they were reported. */
  readonly leaseRenewals: number[] = [];
  /** Times of every success (a response, watch headers, a watch event), in the order they were reported. */
  readonly successes: number[] = [];
  readonly failures: RecordedFailure[] = [];
  /** resourceVersions the watch delivered as events, duplicates removed. */
  readonly watchedVersions = new Set<string>();
  /** The resourceVersion of the first successful LIST; watch events are counted after it. */
  firstListVersion: number | undefined;
  /** The highest pod resourceVersion seen through a watch event or a LIST. */
  observedPodVersion = 0;
  watchesEndedCleanly = 0;
  watchesBroken = 0;
  lists = 0;
  readonly connectionsClosed = new Map<ConnectionCloseReason, number>();

  constructor(name: string) {
    this.name = name;
  }

  add(event: KubeletEvent): void {
    switch (event.type) {
      case 'request':
        this.#addRequest(event.at, event.operation, event.ok, event.latencyMs, event.failure?.message);
        return;
      case 'watch-event':
        this.successes.push(event.at);
        this.watchedVersions.add(event.resourceVersion);
        this.observedPodVersion = Math.max(this.observedPodVersion, Number(event.resourceVersion));
        return;
      case 'pods-listed':
        this.lists += 1;
        this.firstListVersion ??= Number(event.resourceVersion);
        for (const version of event.podVersions) this.observedPodVersion = Math.max(this.observedPodVersion, Number(version));
        return;
      case 'watch-ended':
        if (event.clean) this.watchesEndedCleanly += 1;
        else this.watchesBroken += 1;
        return;
      case 'connection-closed':
        this.connectionsClosed.set(event.reason, (this.connectionsClosed.get(event.reason) ?? 0) + 1);
        return;
      case 'connection-opened':
      case 'health-check':
        return;
    }
  }

  /** Returns the maximum time between two successful lease renewals, counting from `from` and up to `to`. */
  longestLeaseGapMs(from: number, to: number): number {
    return longestGap(this.leaseRenewals, from, to);
  }

  /** Returns the maximum time without any success, counting from `from` and up to `to`. */
  longestSilenceMs(from: number, to: number): number {
    return longestGap(this.successes, from, to);
  }

  /** Returns the time of the first success at or after `time`, or undefined. */
  firstSuccessAfter(time: number): number | undefined {
    const later = this.successes.filter((at) => at >= time);
    return later.length > 0 ? Math.min(...later) : undefined;
  }

  #addRequest(at: number, operation: KubeletOperation, ok: boolean, latencyMs: number, message: string | undefined): void {
    this.requests += 1;
    this.worstLatencyMs = Math.max(this.worstLatencyMs, latencyMs);
    if (ok) {
      this.successes.push(at);
      if (operation === 'lease-update' || operation === 'lease-create') this.leaseRenewals.push(at);
      return;
    }

    this.failedRequests += 1;
    if (LEASE_OPERATIONS.has(operation)) this.failedLeaseRequests += 1;
    this.failures.push({ at, operation, message: message ?? 'failed' });
  }
}

// Events normally arrive in time order, but the times are sorted anyway so that a late report
// cannot produce a negative gap.
function longestGap(times: readonly number[], from: number, to: number): number {
  let longest = 0;
  let previous = from;
  for (const time of [...times].sort((a, b) => a - b)) {
    if (time < from) continue;
    if (time > to) break;
    longest = Math.max(longest, time - previous);
    previous = time;
  }
  return Math.max(longest, to - previous);
}
