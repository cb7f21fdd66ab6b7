/**
 * The naive client: node:http2 with no PING of its own. It notices a stalled session only when a
 * request times out, and then dials a new session for the next request.
 *
 * That reaction is kinder than the default of Go's transport with the health check off, which
 * keeps a connection after a request times out. A naive client that kept its session would stay
 * stuck here until the kernel gave up on the connection, because the fault relay keeps stranded
 * connections open.
 */
import { sendOnSession } from './response.js';
import { SessionHolder } from './session-holder.js';
import type { BenchClient, ClientCounters, ClientRequest, ClientResponse, ClientTls } from './types.js';

export class NaiveClient implements BenchClient {
  readonly counters: ClientCounters = { sessionsOpened: 0, sessionsDropped: 0, pingsSent: 0, pingsTimedOut: 0 };
  readonly #holder: SessionHolder;

  constructor(url: string, tls: ClientTls) {
    this.#holder = new SessionHolder(url, tls, this.counters);
  }

  async send(request: ClientRequest & { timeoutMs: number }): Promise<ClientResponse> {
    const deadline = Date.now() + request.timeoutMs;
    const session = await this.#holder.get(request.timeoutMs);

    try {
      return await sendOnSession(session, { ...request, timeoutMs: Math.max(1, deadline - Date.now()) });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ETIMEDOUT') this.#holder.drop(session);
      throw err;
    }
  }

  close(): void {
    this.#holder.close();
  }
}
