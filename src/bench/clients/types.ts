import type { ClientRequest, ClientResponse, ClientTls } from '../../testbed/client.js';

export type { ClientRequest, ClientResponse, ClientTls };

/** An HTTP/2 client of the failover scenario, with one session at a time, as client-go keeps one per host. */
export interface BenchClient {
  /** Sends one request; rejects on a timeout (code ETIMEDOUT), a reset or a dial failure. */
  send(request: ClientRequest & { timeoutMs: number }): Promise<ClientResponse>;
  /** Counters that show how the client handled the incident. */
  readonly counters: ClientCounters;
  /** Destroys the session; requests still in flight fail. */
  close(): void;
}

export interface ClientCounters {
  /** Sessions opened so far; 1 means the client kept its first session throughout. */
  sessionsOpened: number;
  /** Sessions the client gave up on itself (after a timeout or an unanswered PING). */
  sessionsDropped: number;
  /** PINGs sent by a read-idle health check. */
  pingsSent: number;
  /** PINGs that went unanswered within the PING timeout. */
  pingsTimedOut: number;
}
