/**
 * Watch streams: newline-delimited JSON events (`{"type":"ADDED","object":{...}}`), one per
 * line, as kube-apiserver writes them for `Accept: application/json`.
 */
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { buildStatus } from './http.js';
import { matchesFilter, type ObjectFilter } from './selectors.js';
import type { KubeObject, ObjectStore, StoredChange, WatchEventType } from './store.js';

export interface WatchRequest {
  res: ServerResponse;
  resource: string;
  kind: string;
  apiVersion: string;
  /** undefined watches every namespace. */
  namespace?: string;
  filter: ObjectFilter;
  /** The query's resourceVersion; '' or '0' start with ADDED events for every current object. */
  resourceVersion: string;
  allowBookmarks: boolean;
  timeoutSeconds?: number;
  sessionId: number;
  /** Converts each event object, such as into a Table row for kubectl; objects are sent as stored otherwise. */
  render?: (object: KubeObject) => object;
}

interface ActiveWatch {
  request: WatchRequest;
  stop: () => void;
}

/** The set of open watches, fed by the store's change listener. */
export class WatchHub {
  private readonly watches = new Set<ActiveWatch>();

  constructor(
    private readonly store: ObjectStore,
    private readonly logger: Logger,
  ) {}

  get openWatches(): number {
    return this.watches.size;
  }

  start(request: WatchRequest): void {
    const { res } = request;
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache, private' });
    res.flushHeaders();

    const startVersion = Number(request.resourceVersion || '0');
    if (request.resourceVersion !== '' && request.resourceVersion !== '0' && startVersion < this.store.oldestWatchableVersion) {
      const gone = buildStatus(410, 'Expired', `too old resource version: ${startVersion} (${this.store.oldestWatchableVersion})`);
      writeEvent(res, 'ERROR', gone);
      res.end();
      return;
    }

    // Replay and subscription happen in one synchronous step, so no change can fall between them.
    if (request.resourceVersion === '' || request.resourceVersion === '0') {
      for (const object of this.store.list(request.resource, request.namespace)) {
        if (matchesFilter(object, request.filter)) {
          writeEvent(res, 'ADDED', request.render ? request.render(object) : object);
        }
      }
    } else {
      for (const change of this.store.changesSince(startVersion)) {
        this.forward(request, change);
      }
    }

    const unsubscribe = this.store.subscribe((change) => this.forward(request, change));
    const timer =
      request.timeoutSeconds !== undefined ? setTimeout(() => res.end(), request.timeoutSeconds * 1000) : undefined;
    const watch: ActiveWatch = {
      request,
      stop: () => {
        unsubscribe();
        clearTimeout(timer);
        this.watches.delete(watch);
      },
    };
    this.watches.add(watch);
    res.on('close', () => watch.stop());
    this.logger.debug({ sessionId: request.sessionId, resource: request.resource, namespace: request.namespace }, 'watch started');
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that allowed bookmarks. */
  bookmark(): number {
    let sent = 0;
    for (const watch of this.watches) {
      if (!watch.request.allowBookmarks) {
        continue;
      }
      const { kind, apiVersion } = watch.request;
      writeEvent(watch.request.res, 'BOOKMARK', { kind, apiVersion, metadata: { resourceVersion: String(this.store.resourceVersion) } });
      sent += 1;
    }
    return sent;
  }

  /** Ends every watch response cleanly, as kube-apiserver does on shutdown. */
  endAll(): void {
    for (const watch of [...this.watches]) {
      watch.stop();
      watch.request.res.end();
    }
  }

  // NOTE: an object modified so that it no longer matches the selector produces no event here,
  // while kube-apiserver sends DELETED for it.
  private forward(request: WatchRequest, change: StoredChange): void {
    if (change.resource !== request.resource) {
      return;
    }
    if (request.namespace !== undefined && change.object.metadata.namespace !== request.namespace) {
      return;
    }
    if (!matchesFilter(change.object, request.filter)) {
      return;
    }
    writeEvent(request.res, change.type, request.render ? request.render(change.object) : change.object);
  }
}

function writeEvent(res: ServerResponse, type: WatchEventType, object: KubeObject | object): void {
  if (!res.writableEnded && !res.destroyed) {
    res.write(`${JSON.stringify({ type, object })}\n`);
  }
}
