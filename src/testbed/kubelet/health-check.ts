import type http2 from 'node:http2';
import type { GoHealthCheck } from './timings.js';

export interface HealthCheckHooks {
  onPingSent(idleMs: number): void;
  onPingAck(): void;
  /** The PING went unanswered for the PING timeout; the owner closes the connection. */
  onPingTimeout(): void;
}

/**
 * client-go's HTTP/2 health check as Go's transport runs it: a PING after `readIdleTimeout`
 * without reading any frame, and a failed check when no PING ACK arrives within
 * `pingTimeout`. Go resets its idle timer on every frame read. This emulation notices reads by
 * polling the socket's byte counter, so it fires up to one poll interval (at most 100 ms) later
 * than Go would, never earlier.
 */
export class ReadIdleHealthCheck {
  readonly #session: http2.ClientHttp2Session;
  readonly #settings: GoHealthCheck;
  readonly #hooks: HealthCheckHooks;
  readonly #pollMs: number;
  #lastBytesRead = 0;
  #lastReadAt = Date.now();
  #pingTimer: NodeJS.Timeout | undefined;
  #pollTimer: NodeJS.Timeout | undefined;

  constructor(session: http2.ClientHttp2Session, settings: GoHealthCheck, hooks: HealthCheckHooks) {
    this.#session = session;
    this.#settings = settings;
    this.#hooks = hooks;
    this.#pollMs = Math.max(10, Math.min(100, settings.readIdleTimeoutMs / 10));
  }

  start(): void {
    this.#lastBytesRead = this.#bytesRead();
    this.#lastReadAt = Date.now();
    this.#pollTimer = setInterval(() => this.#poll(), this.#pollMs);
  }

  stop(): void {
    clearInterval(this.#pollTimer);
    clearTimeout(this.#pingTimer);
    this.#pollTimer = undefined;
    this.#pingTimer = undefined;
  }

  #poll(): void {
    // The owner stops the check on 'close', which Node emits a tick after the session is destroyed.
    if (this.#session.destroyed) {
      this.stop();
      return;
    }

    const now = Date.now();
    const bytesRead = this.#bytesRead();
    if (bytesRead !== this.#lastBytesRead) {
      this.#lastBytesRead = bytesRead;
      this.#lastReadAt = now;
    }

    const idleMs = now - this.#lastReadAt;
    if (this.#pingTimer === undefined && idleMs >= this.#settings.readIdleTimeoutMs) this.#sendPing(idleMs);
  }

  #sendPing(idleMs: number): void {
    this.#pingTimer = setTimeout(() => {
      this.stop();
      this.#hooks.onPingTimeout();
    }, this.#settings.pingTimeoutMs);

    let sent = false;
    try {
      sent = this.#session.ping((err) => {
        if (err !== null || this.#pingTimer === undefined) return;
        clearTimeout(this.#pingTimer);
        this.#pingTimer = undefined;
        this.#lastReadAt = Date.now();
        this.#hooks.onPingAck();
      });
    } catch {
      // The session is closing. The PING timer still runs and fails the check if no ACK arrives.
    }
    if (sent) this.#hooks.onPingSent(idleMs);
  }

  #bytesRead(): number {
    return this.#session.socket?.bytesRead ?? this.#lastBytesRead;
  }
}
