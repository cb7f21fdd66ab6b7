import type { KubeletEvent, KubeletOperation } from '../testbed/kubelet-client.js';
import type { DemoClient } from './clients.js';

const OPERATION_NAMES: Record<KubeletOperation, string> = {
  'lease-get': 'lease GET',
  'lease-create': 'lease create',
  'lease-update': 'lease PUT',
  'node-get': 'node GET',
  'node-status-patch': 'node status PATCH',
  'pod-list': 'pod LIST',
  'pod-watch': 'pod WATCH',
};

/** One line of the demo's event log. */
export interface Notice {
  at: number;
  /** The client's label, or undefined for the cluster. */
  source: string | undefined;
  text: string;
  severity: 'info' | 'bad' | 'good';
}

interface ClientState {
  client: DemoClient;
  connections: number;
  lists: number;
  lastRenewalAt: number | undefined;
  leaseFailed: boolean;
  notReadyAnnounced: boolean;
}

/**
 * Turns client events into the notable lines of the demo's log: failures, health checks,
 * connections closed and opened, watches ended, lists repeated, lease renewals after an outage,
 * and the moment a node would turn NotReady.
 */
export class NoticeLog {
  readonly #states = new Map<string, ClientState>();
  readonly #graceMs: number;
  readonly #onNotice: (notice: Notice) => void;

  constructor(clients: readonly DemoClient[], graceMs: number, startedAt: number, onNotice: (notice: Notice) => void) {
    for (const client of clients) {
      this.#states.set(client.name, { client, connections: 0, lists: 0, lastRenewalAt: startedAt, leaseFailed: false, notReadyAnnounced: false });
    }
    this.#graceMs = graceMs;
    this.#onNotice = onNotice;
  }

  /** Adds a line that no client event produced, such as the incident. */
  announce(at: number, text: string, severity: Notice['severity'] = 'info'): void {
    this.#onNotice({ at, source: undefined, text, severity });
  }

  onEvent(event: KubeletEvent): void {
    const state = this.#states.get(event.client);
    if (state === undefined) return;
    const text = this.#describe(state, event);
    if (text !== undefined) this.#onNotice({ at: event.at, source: state.client.label, ...text });
  }

  /** Announces each node whose lease went unrenewed for the grace period, once per outage. */
  check(now: number): void {
    for (const state of this.#states.values()) {
      if (state.notReadyAnnounced || state.lastRenewalAt === undefined || now - state.lastRenewalAt < this.#graceMs) continue;
      state.notReadyAnnounced = true;
      this.#onNotice({
        at: now,
        source: state.client.label,
        text: `no lease renewal for ${seconds(this.#graceMs)}: ${state.client.nodeName} would now be marked NotReady`,
        severity: 'bad',
      });
    }
  }

  #describe(state: ClientState, event: KubeletEvent): Pick<Notice, 'text' | 'severity'> | undefined {
    switch (event.type) {
      case 'request':
        return this.#describeRequest(state, event);
      case 'health-check':
        if (event.outcome !== 'ping-sent') return undefined;
        return { text: `no frame read for ${seconds(event.idleMs ?? 0)}: the health check sends a PING`, severity: 'info' };
      case 'connection-closed':
        if (event.reason === 'stopped') return undefined;
        if (event.reason === 'health-check') return { text: `connection closed by the health check (${event.detail}); requests dial a new one`, severity: 'info' };
        if (event.reason === 'heartbeat-failure') return { text: 'connection closed by kubelet after two failed heartbeats in a row', severity: 'info' };
        return { text: `connection ${event.detail}`, severity: 'info' };
      case 'connection-opened':
        state.connections += 1;
        if (state.connections === 1) return undefined;
        return { text: `new connection opened in ${Math.round(event.dialMs)} ms`, severity: 'good' };
      case 'watch-ended':
        if (event.clean) return { text: `watch ended cleanly; re-watching from resourceVersion ${event.resourceVersion}`, severity: 'info' };
        return { text: `watch broken (${event.reason}); the reflector will LIST again`, severity: 'bad' };
      case 'pods-listed':
        state.lists += 1;
        if (state.lists === 1) return undefined;
        return { text: `pods listed again at resourceVersion ${event.resourceVersion}; changes in between never arrived as watch events`, severity: 'info' };
      case 'watch-event':
        return undefined;
    }
  }

  #describeRequest(state: ClientState, event: Extract<KubeletEvent, { type: 'request' }>): Pick<Notice, 'text' | 'severity'> | undefined {
    const renewal = event.operation === 'lease-update' || event.operation === 'lease-create';
    if (!event.ok) {
      if (event.operation.startsWith('lease-')) state.leaseFailed = true;
      return { text: `${OPERATION_NAMES[event.operation]} failed after ${seconds(event.latencyMs)}: ${event.failure?.message ?? `status ${event.status}`}`, severity: 'bad' };
    }
    if (!renewal) return undefined;

    const previous = state.lastRenewalAt;
    const recovered = state.leaseFailed;
    state.lastRenewalAt = event.at;
    state.leaseFailed = false;
    state.notReadyAnnounced = false;
    if (!recovered || previous === undefined) return undefined;
    return { text: `lease renewed again, ${seconds(event.at - previous)} after the previous renewal`, severity: 'good' };
  }
}

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** Like seconds(), but in whole milliseconds below one second, where tenths of a second hide the value. */
export function latency(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : seconds(ms);
}
