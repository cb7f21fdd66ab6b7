/**
 * A kubelet-like API client for the demo and the benchmark: node lease renewal, node status
 * updates and a pod watch, sent the way kubelet sends them, over ONE HTTP/2 connection with Go's
 * transport semantics (see kubelet/go-connection.ts). Each part follows its kubelet counterpart
 * and notes where it simplifies.
 */
import type { ClientTls } from './client.js';
import type { KubeletEventListener } from './kubelet/events.js';
import { GoHttp2Connection } from './kubelet/go-connection.js';
import { LeaseController } from './kubelet/lease-controller.js';
import { NodeStatusUpdater } from './kubelet/node-status.js';
import { PodReflector } from './kubelet/pod-reflector.js';
import type { GoHealthCheck, KubeletTimings } from './kubelet/timings.js';

export * from './kubelet/events.js';
export { ClientRecord, type RecordedFailure } from './kubelet/client-record.js';
export { GoHttp2Connection, type GoConnectionOptions, type UnaryRequest, type UnaryResponse, type WatchStream } from './kubelet/go-connection.js';
export { clientGoHealthCheck, kubeletTimings, type GoHealthCheck, type KubeletTimings } from './kubelet/timings.js';

export interface KubeletClientOptions {
  /** The client's name in its events, such as "direct". */
  name: string;
  nodeName: string;
  /** https://host:port to send everything to. */
  url: string;
  tls: ClientTls;
  timings: KubeletTimings;
  /** client-go's HTTP/2 health check; undefined sends no PING at all. */
  healthCheck: GoHealthCheck | undefined;
  /**
   * kubelet's OnHeartbeatFailure: close the connection after the second consecutive failed lease
   * update or node status try of one sync (cmd/kubelet/app/server.go sets it to closeAllConns).
   * Off unless set.
   */
  closeOnRepeatedHeartbeatFailure?: boolean;
  /** Bounds TCP, TLS and the server's SETTINGS of one dial (default 10 s, Go's TLS handshake timeout). */
  dialTimeoutMs?: number;
  onEvent?: KubeletEventListener;
}

const USER_AGENT = 'kubelet/v1.32.4 (linux/amd64) kubernetes/stallguard-testbed';

export class KubeletClient {
  readonly name: string;
  readonly nodeName: string;
  readonly #options: KubeletClientOptions;
  readonly #connection: GoHttp2Connection;
  readonly #abort = new AbortController();
  #loops: Promise<void>[] = [];

  constructor(options: KubeletClientOptions) {
    this.name = options.name;
    this.nodeName = options.nodeName;
    this.#options = options;
    this.#connection = new GoHttp2Connection({
      client: options.name,
      url: options.url,
      tls: options.tls,
      healthCheck: options.healthCheck,
      dialTimeoutMs: options.dialTimeoutMs ?? 10_000,
      userAgent: USER_AGENT,
      emit: options.onEvent ?? (() => undefined),
    });
  }

  /** Starts the lease controller, the node status loop and the pod reflector; each sends its first request at once. */
  start(): void {
    if (this.#loops.length > 0) throw new Error(`kubelet client ${this.name} was already started`);

    const { nodeName, timings } = this.#options;
    const signal = this.#abort.signal;
    const connection = this.#connection;
    const onRepeatedHeartbeatFailure = this.#options.closeOnRepeatedHeartbeatFailure
      ? () => connection.closeAll('heartbeat-failure', 'closed after the second failed heartbeat in a row')
      : undefined;

    this.#loops = [
      new LeaseController({ connection, nodeName, timings, onRepeatedHeartbeatFailure, signal }).run(),
      new NodeStatusUpdater({ connection, nodeName, timings, onRepeatedHeartbeatFailure, signal }).run(),
      new PodReflector({ client: this.name, connection, nodeName, timings, emit: this.#options.onEvent ?? (() => undefined), signal }).run(),
    ];
  }

  /**
   * Stops every loop, closes the connection (failing what still waits on it) and resolves once
   * all loops have returned. Rejects with the first unexpected error a loop raised.
   */
  async stop(): Promise<void> {
    this.#abort.abort();
    this.#connection.stop();
    const results = await Promise.allSettled(this.#loops);
    const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }
}
