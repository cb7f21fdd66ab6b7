/**
 * Many watches from one benchmark process: HTTP/2 sessions to one URL, each carrying up to
 * `watchesPerSession` watch streams, as several kubelet-like clients would. Each watch parses the
 * newline-delimited JSON events it receives and records the names of the objects they carry, so a
 * scenario can check that an event reached every watch.
 */
import http2 from 'node:http2';
import type { ClientTls } from './clients/types.js';

interface OpenWatch {
  stream: http2.ClientHttp2Stream;
  /** Object names of the events received, in order. */
  objects: string[];
  buffered: string;
  /** True once the stream closed; a watch that ended early no longer receives events. */
  ended: boolean;
  /** Response status once the headers arrived. */
  status: number | undefined;
}

export class WatchFleet {
  readonly #sessions: http2.ClientHttp2Session[] = [];
  readonly #watches: OpenWatch[] = [];
  readonly #waiters = new Set<() => void>();

  constructor(
    private readonly url: string,
    private readonly tls: ClientTls,
    private readonly watchesPerSession: number,
  ) {}

  get count(): number {
    return this.#watches.length;
  }

  /** Watches that started with status 200, whether still open or not. */
  get started(): number {
    return this.#watches.filter((watch) => watch.status === 200).length;
  }

  /** Watches that started with status 200 and whose stream has closed since. */
  get ended(): number {
    return this.#watches.filter((watch) => watch.status === 200 && watch.ended).length;
  }

  /**
   * Opens `count` watches of `path` and resolves once each has received its response headers or
   * failed. Returns the failures by cause (such as "503: <the Status message>"); a watch still
   * without headers after `timeoutMs` counts as "no response headers". Rejects only when a session
   * cannot be connected.
   */
  async open(count: number, path: string, timeoutMs: number): Promise<{ started: number; failures: Record<string, number> }> {
    const outcomes: Array<Promise<string | undefined>> = [];
    for (let i = 0; i < count; i++) {
      const sessionIndex = Math.floor(this.#watches.length / this.watchesPerSession);
      const session = this.#sessions[sessionIndex] ?? (await this.#connect(timeoutMs));
      outcomes.push(this.#startWatch(session, path));
    }

    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve('no response headers'), timeoutMs);
    });
    try {
      const results = await Promise.all(outcomes.map((outcome) => Promise.race([outcome, timeout])));
      const failures: Record<string, number> = {};
      for (const cause of results) if (cause !== undefined) failures[cause] = (failures[cause] ?? 0) + 1;
      return { started: results.filter((cause) => cause === undefined).length, failures };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Returns how many watches have received an event for object `name`; a watch that failed to start counts as one that did not. */
  receivedBy(name: string): number {
    return this.#watches.filter((watch) => watch.objects.includes(name)).length;
  }

  /**
   * Resolves with the ms it took until every watch that started received an event for object
   * `name`, or with undefined when some had not within `timeoutMs`.
   */
  waitForEvent(name: string, timeoutMs: number): Promise<number | undefined> {
    const started = performance.now();
    return new Promise((resolve) => {
      const check = () => {
        if (this.receivedBy(name) < this.started) return;
        finish(performance.now() - started);
      };
      const finish = (elapsed: number | undefined) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve(elapsed === undefined ? undefined : Math.round(elapsed * 10) / 10);
      };
      const timer = setTimeout(() => finish(undefined), timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  /** Cancels every watch and closes every session. */
  close(): void {
    for (const watch of this.#watches) {
      if (!watch.stream.closed) watch.stream.close(http2.constants.NGHTTP2_CANCEL);
    }
    for (const session of this.#sessions) session.destroy();
    this.#waiters.clear();
  }

  #connect(timeoutMs: number): Promise<http2.ClientHttp2Session> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(this.url, { ca: this.tls.ca, cert: this.tls.cert, key: this.tls.key });
      const timer = setTimeout(() => {
        session.destroy();
        reject(new Error(`connecting to ${this.url} timed out after ${timeoutMs}ms`));
      }, timeoutMs);
      session.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      session.once('connect', () => {
        clearTimeout(timer);
        // Later session errors end its watches, which `ended` shows.
        session.on('error', () => undefined);
        this.#sessions.push(session);
        resolve(session);
      });
    });
  }

  /** Starts one watch; resolves with undefined once it has 200 headers, or with the cause of its failure. */
  #startWatch(session: http2.ClientHttp2Session, path: string): Promise<string | undefined> {
    const stream = session.request({ ':method': 'GET', ':path': path, accept: 'application/json' });
    const watch: OpenWatch = { stream, objects: [], buffered: '', ended: false, status: undefined };
    this.#watches.push(watch);

    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => this.#onData(watch, chunk));
    stream.on('error', () => undefined);

    return new Promise((resolve) => {
      stream.once('response', (headers) => {
        watch.status = Number(headers[':status']);
        if (watch.status === 200) resolve(undefined);
      });
      stream.once('close', () => {
        watch.ended = true;
        if (watch.status === undefined) resolve('closed before its response headers');
        // A failed watch's body is a Kubernetes Status, whose message gives the reason.
        else if (watch.status !== 200) resolve(`${watch.status}: ${statusMessage(watch.buffered)}`);
      });
    });
  }

  #onData(watch: OpenWatch, chunk: string): void {
    watch.buffered += chunk;
    if (watch.status !== 200) return;

    const lines = watch.buffered.split('\n');
    watch.buffered = lines.pop()!;

    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        const event = JSON.parse(line) as { object?: { metadata?: { name?: string } } };
        const name = event.object?.metadata?.name;
        if (name !== undefined) watch.objects.push(name);
      } catch {
        watch.objects.push('(invalid event line)');
      }
    }
    for (const waiter of [...this.#waiters]) waiter();
  }
}

/** Returns the message of a Kubernetes Status body, or the start of the body when it is not one. */
function statusMessage(body: string): string {
  try {
    const status = JSON.parse(body) as { message?: unknown };
    if (typeof status.message === 'string') return status.message;
  } catch {
    // Not JSON: the body itself is shown.
  }
  return body.slice(0, 200);
}
