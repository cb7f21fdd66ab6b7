import type { KubeObject } from '../fake-apiserver/store.js';
import { KubeletRequestError } from './events.js';
import type { GoHttp2Connection } from './go-connection.js';
import { parseObject } from './lease-controller.js';
import { goDuration, sleep } from './sleep.js';
import { NODE_STATUS_UPDATE_RETRIES, type KubeletTimings } from './timings.js';

export interface NodeStatusUpdaterOptions {
  connection: GoHttp2Connection;
  nodeName: string;
  timings: KubeletTimings;
  /** kubelet's OnHeartbeatFailure, called after the second and every later failed try of a sync. */
  onRepeatedHeartbeatFailure: (() => void) | undefined;
  signal: AbortSignal;
}

/**
 * kubelet's node status loop (pkg/kubelet/kubelet_node_status.go): every nodeStatusUpdateFrequency
 * it patches the Node's status, trying up to five times in a row. The first try starts from the
 * cached Node, the later ones GET it from the API server first.
 *
 * NOTE: kubelet 1.13 and later sends the PATCH only when the status changed or
 * nodeStatusReportFrequency (5 min) has passed, and relies on the lease in between. This loop
 * patches on every sync, as the demo wants write traffic on the connection every 10 s.
 */
export class NodeStatusUpdater {
  readonly #options: NodeStatusUpdaterOptions;
  readonly #nodePath: string;
  /** Stands in for kubelet's Node informer cache: the last Node read or written. */
  #cached: KubeObject | undefined;

  constructor(options: NodeStatusUpdaterOptions) {
    this.#options = options;
    this.#nodePath = `/api/v1/nodes/${encodeURIComponent(options.nodeName)}`;
  }

  async run(): Promise<void> {
    const { signal, timings } = this.#options;
    while (!signal.aborted) {
      await this.#sync();
      await sleep(timings.nodeStatusUpdateMs, signal);
    }
  }

  async #sync(): Promise<void> {
    for (let attempt = 0; attempt < NODE_STATUS_UPDATE_RETRIES; attempt++) {
      if (this.#options.signal.aborted) return;
      if (await this.#tryUpdate(attempt)) return;
      if (attempt > 0) this.#options.onRepeatedHeartbeatFailure?.();
    }
  }

  async #tryUpdate(attempt: number): Promise<boolean> {
    const { connection, timings } = this.#options;
    const timeout = `?timeout=${goDuration(timings.heartbeatTimeoutMs)}`;

    try {
      if (attempt > 0 || this.#cached === undefined) {
        const got = await connection.request({ operation: 'node-get', method: 'GET', path: `${this.#nodePath}${timeout}`, timeoutMs: timings.heartbeatTimeoutMs });
        if (got.status !== 200) return false;
        this.#cached = parseObject(got.body);
      }

      const patched = await connection.request({
        operation: 'node-status-patch',
        method: 'PATCH',
        path: `${this.#nodePath}/status${timeout}`,
        contentType: 'application/strategic-merge-patch+json',
        body: JSON.stringify(readyPatch(new Date())),
        timeoutMs: timings.heartbeatTimeoutMs,
      });
      if (patched.status !== 200) return false;
      this.#cached = parseObject(patched.body);
      return true;
    } catch (err) {
      if (!(err instanceof KubeletRequestError)) throw err;
      return false;
    }
  }
}

function readyPatch(now: Date): object {
  const time = now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return {
    status: {
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status', lastHeartbeatTime: time }],
    },
  };
}
