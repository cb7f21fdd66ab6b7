import type { KubeObject } from '../fake-apiserver/store.js';
import { KubeletRequestError, type KubeletEventListener } from './events.js';
import type { GoHttp2Connection, WatchStream } from './go-connection.js';
import { Backoff, sleep, whenAborted } from './sleep.js';
import type { KubeletTimings } from './timings.js';

export interface PodReflectorOptions {
  client: string;
  connection: GoHttp2Connection;
  nodeName: string;
  timings: KubeletTimings;
  emit: KubeletEventListener;
  signal: AbortSignal;
}

/** client-go's reflector sets timeoutSeconds so that the server ends each watch after 5 to 10 minutes. */
const MIN_WATCH_TIMEOUT_SECONDS = 300;

/**
 * kubelet's pod source, a client-go reflector on the pods bound to this node: LIST, then WATCH
 * from the list's resourceVersion. A watch the server ends cleanly is resumed at once from the
 * last resourceVersion seen, so no event is lost. A watch that breaks (connection lost) or
 * reports an ERROR makes the reflector LIST again after a backoff and watch from the new list,
 * so the changes in between arrive only as the listed state, never as events.
 */
export class PodReflector {
  readonly #options: PodReflectorOptions;
  readonly #selector: string;
  #lastResourceVersion = '0';
  #relistRequested = false;

  constructor(options: PodReflectorOptions) {
    this.#options = options;
    this.#selector = `fieldSelector=${encodeURIComponent(`spec.nodeName=${options.nodeName}`)}`;
  }

  async run(): Promise<void> {
    const { signal, timings } = this.#options;
    const backoff = new Backoff(timings.reflectorBackoffMs.initial, timings.reflectorBackoffMs.max);

    while (!signal.aborted) {
      if (await this.#list()) {
        const completed = await this.#watchUntilBroken();
        if (completed) backoff.reset();
      }
      await sleep(backoff.next(), signal);
    }
  }

  async #list(): Promise<boolean> {
    const { connection, client, emit } = this.#options;
    try {
      const response = await connection.request({
        operation: 'pod-list',
        method: 'GET',
        path: `/api/v1/pods?${this.#selector}&limit=500&resourceVersion=${this.#lastResourceVersion}`,
      });
      if (response.status !== 200) return false;

      const list = JSON.parse(response.body.toString('utf8')) as { metadata: { resourceVersion: string }; items: KubeObject[] };
      this.#lastResourceVersion = list.metadata.resourceVersion;
      emit({
        type: 'pods-listed',
        client,
        at: Date.now(),
        resourceVersion: list.metadata.resourceVersion,
        podVersions: list.items.map((pod) => pod.metadata.resourceVersion ?? ''),
      });
      return true;
    } catch (err) {
      if (!(err instanceof KubeletRequestError)) throw err;
      return false;
    }
  }

  /**
   * Watches, and re-watches after each clean end, until a watch breaks or cannot start. Returns
   * true when at least one watch ran before that.
   */
  async #watchUntilBroken(): Promise<boolean> {
    const { connection, client, emit, signal } = this.#options;
    let watched = false;

    while (!signal.aborted) {
      let stream: WatchStream;
      try {
        stream = await connection.openWatch(this.#watchPath(), (line) => this.#onLine(line));
      } catch (err) {
        if (!(err instanceof KubeletRequestError)) throw err;
        return watched;
      }
      watched = true;

      const outcome = await Promise.race([stream.ended, whenAborted(signal, stream.ended).then(() => undefined)]);
      if (outcome === undefined) {
        stream.cancel();
        return watched;
      }

      emit({ type: 'watch-ended', client, at: Date.now(), clean: outcome.clean, reason: outcome.reason, resourceVersion: this.#lastResourceVersion });
      if (!outcome.clean || this.#relistRequested) {
        this.#relistRequested = false;
        return watched;
      }
    }
    return watched;
  }

  #watchPath(): string {
    const timeoutSeconds = Math.floor(MIN_WATCH_TIMEOUT_SECONDS * (1 + Math.random()));
    return `/api/v1/pods?allowWatchBookmarks=true&${this.#selector}&resourceVersion=${this.#lastResourceVersion}&timeoutSeconds=${timeoutSeconds}&watch=true`;
  }

  #onLine(line: string): void {
    let event: { type?: string; object?: KubeObject };
    try {
      event = JSON.parse(line) as typeof event;
    } catch {
      // A line cut by a lost connection; the watch ends with that loss right after.
      return;
    }

    const resourceVersion = event.object?.metadata?.resourceVersion;
    switch (event.type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED':
        if (resourceVersion === undefined) return;
        this.#lastResourceVersion = resourceVersion;
        this.#options.emit({ type: 'watch-event', client: this.#options.client, at: Date.now(), eventType: event.type, resourceVersion });
        return;
      case 'BOOKMARK':
        if (resourceVersion !== undefined) this.#lastResourceVersion = resourceVersion;
        return;
      default:
        // ERROR, such as 410 Gone for a resourceVersion that is too old: list again.
        this.#relistRequested = true;
    }
  }
}
