/**
 * The one HTTP/2 session of a benchmark client: dialled on first use, shared by concurrent
 * requests, and forgotten as soon as it closes, fails, receives GOAWAY or the client drops it, so
 * that the next request dials a new one.
 */
import http2 from 'node:http2';
import type { ClientCounters, ClientTls } from './types.js';

export class SessionHolder {
  #current: http2.ClientHttp2Session | undefined;
  #dialing: Promise<http2.ClientHttp2Session> | undefined;
  #closed = false;

  constructor(
    private readonly url: string,
    private readonly tls: ClientTls,
    readonly counters: ClientCounters,
    private readonly onOpen: (session: http2.ClientHttp2Session) => void = () => {},
  ) {}

  /** Returns the open session, or dials one that must complete its TLS handshake within `timeoutMs`. */
  get(timeoutMs: number): Promise<http2.ClientHttp2Session> {
    if (this.#closed) return Promise.reject(new Error('the client is closed'));
    if (this.#current !== undefined) return Promise.resolve(this.#current);

    this.#dialing ??= this.#dial(timeoutMs).finally(() => {
      this.#dialing = undefined;
    });
    return this.#dialing;
  }

  /** Destroys `session` if it is still the current one, so that the next request dials. */
  drop(session: http2.ClientHttp2Session): void {
    if (this.#current !== session) return;

    this.#current = undefined;
    this.counters.sessionsDropped++;
    session.destroy();
  }

  close(): void {
    this.#closed = true;
    this.#current?.destroy();
    this.#current = undefined;
  }

  #dial(timeoutMs: number): Promise<http2.ClientHttp2Session> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(this.url, { ca: this.tls.ca, cert: this.tls.cert, key: this.tls.key });
      const forget = () => {
        if (this.#current === session) this.#current = undefined;
      };
      // Failures after the handshake reach the requests on the session; the session is only forgotten.
      session.on('error', forget);
      session.once('close', forget);
      session.once('goaway', forget);

      const timer = setTimeout(() => {
        session.destroy();
        reject(Object.assign(new Error(`dial to ${this.url} timed out after ${timeoutMs}ms`), { code: 'ETIMEDOUT' }));
      }, timeoutMs);
      session.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      session.once('connect', () => {
        clearTimeout(timer);
        if (this.#closed) {
          session.destroy();
          reject(new Error('the client is closed'));
          return;
        }
        this.#current = session;
        this.counters.sessionsOpened++;
        this.onOpen(session);
        resolve(session);
      });
    });
  }
}
