/**
 * A client that behaves like client-go's HTTP/2 transport with its defaults. When nothing was read
 * on the connection for readIdleTimeout (30 s), it sends a PING. When no ACK arrives within
 * pingTimeout (15 s), it closes the connection, which fails the requests on it, so the next
 * request dials. A request that times out does not close the connection. Source of the defaults:
 * readIdleTimeoutSeconds() and pingTimeoutSeconds() in k8s.io/apimachinery pkg/util/net/http.go,
 * overridable there with HTTP2_READ_IDLE_TIMEOUT_SECONDS and HTTP2_PING_TIMEOUT_SECONDS.
 *
 * "Read" is measured as growth of the TLS socket's bytesRead, checked every CHECK_INTERVAL_MS, so
 * the PING goes out up to that much later than Go's timer would send it.
 */
import type http2 from 'node:http2';
import { sendOnSession } from './response.js';
import { SessionHolder } from './session-holder.js';
import type { BenchClient, ClientCounters, ClientRequest, ClientResponse, ClientTls } from './types.js';

export interface GoHealthCheck {
  readIdleTimeoutMs: number;
  pingTimeoutMs: number;
}

/** client-go's defaults. */
export const GO_DEFAULT_HEALTH_CHECK: GoHealthCheck = { readIdleTimeoutMs: 30_000, pingTimeoutMs: 15_000 };

const CHECK_INTERVAL_MS = 100;

export class GoLikeClient implements BenchClient {
  readonly counters: ClientCounters = { sessionsOpened: 0, sessionsDropped: 0, pingsSent: 0, pingsTimedOut: 0 };
  readonly #holder: SessionHolder;
  readonly #monitors = new Set<NodeJS.Timeout>();

  constructor(
    url: string,
    tls: ClientTls,
    private readonly health: GoHealthCheck = GO_DEFAULT_HEALTH_CHECK,
  ) {
    this.#holder = new SessionHolder(url, tls, this.counters, (session) => this.#monitor(session));
  }

  async send(request: ClientRequest & { timeoutMs: number }): Promise<ClientResponse> {
    const deadline = Date.now() + request.timeoutMs;
    const session = await this.#holder.get(request.timeoutMs);
    return sendOnSession(session, { ...request, timeoutMs: Math.max(1, deadline - Date.now()) });
  }

  close(): void {
    for (const timer of this.#monitors) clearInterval(timer);
    this.#monitors.clear();
    this.#holder.close();
  }

  /** Runs the read-idle health check of one session until the session closes. */
  #monitor(session: http2.ClientHttp2Session): void {
    let lastBytesRead = session.socket.bytesRead;
    let lastReadAt = Date.now();
    let pingOutstanding = false;

    const timer = setInterval(() => {
      if (session.destroyed) {
        stop();
        return;
      }

      const bytesRead = session.socket.bytesRead;
      if (bytesRead !== lastBytesRead) {
        lastBytesRead = bytesRead;
        lastReadAt = Date.now();
      }
      if (pingOutstanding || Date.now() - lastReadAt < this.health.readIdleTimeoutMs) return;

      pingOutstanding = true;
      this.#ping(session).finally(() => {
        pingOutstanding = false;
        lastReadAt = Date.now();
      });
    }, CHECK_INTERVAL_MS);
    const stop = () => {
      clearInterval(timer);
      this.#monitors.delete(timer);
    };

    this.#monitors.add(timer);
    session.once('close', stop);
  }

  /** Sends one PING and drops the session when no ACK arrives within pingTimeout. */
  #ping(session: http2.ClientHttp2Session): Promise<void> {
    this.counters.pingsSent++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.counters.pingsTimedOut++;
        this.#holder.drop(session);
        resolve();
      }, this.health.pingTimeoutMs);

      // The callback also runs, with an error, when the session closes first; its requests have failed then.
      const sent = session.ping(() => {
        clearTimeout(timer);
        resolve();
      });
      if (!sent) {
        clearTimeout(timer);
        resolve();
      }
    });
  }
}
