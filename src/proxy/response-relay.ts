import type http from 'node:http';
import type http2 from 'node:http2';
import { downstreamResponseHeaders } from './headers.js';
import type { DownstreamResponse } from './respond.js';

/** A 429 body larger than this is not held back: shutdown 429s carry a small Status. */
const HELD_429_MAX_BYTES = 64 * 1024;

/**
 * Relays one upstream response to the client and keeps what decides whether it may still be
 * retried. Invariants:
 * - nothing reaches the client before `flushHead()` (called on the first DATA, trailers or end,
 *   or at once for a watch), so a session lost between HEADERS and DATA leaves the request
 *   retryable;
 * - a held 429 sends nothing until `releaseHeld()`;
 * - `complete` is true only when every byte of a declared Content-Length was relayed.
 */
export class ResponseRelay {
  /** The upstream status, once response headers arrived. */
  status: number | undefined;
  bytesRelayed = 0;

  readonly #res: http.ServerResponse;
  readonly #onStart: () => void;
  #expectedLength: number | undefined;
  #pendingHead: { status: number; headers: http.OutgoingHttpHeaders } | undefined;
  #held429: Buffer[] | undefined;

  constructor(res: DownstreamResponse, onStart: () => void) {
    this.#res = res as http.ServerResponse;
    this.#onStart = onStart;
  }

  /** Takes the upstream response headers; with `hold429`, a 429 is kept back until decided. */
  accept(headers: http2.IncomingHttpHeaders, method: string, hold429: boolean): number {
    const status = Number(headers[':status']);
    this.status = status;

    const declared = headers['content-length'];
    if (declared !== undefined && method !== 'HEAD' && status !== 204 && status !== 304) this.#expectedLength = Number(declared);
    this.#pendingHead = { status, headers: downstreamResponseHeaders(headers) };
    if (status === 429 && hold429) this.#held429 = [];
    return status;
  }

  get holding429(): boolean {
    return this.#held429 !== undefined;
  }

  /** True unless a declared Content-Length has not been relayed in full. */
  get complete(): boolean {
    return this.#expectedLength === undefined || this.bytesRelayed === this.#expectedLength;
  }

  /** True when a declared Content-Length has been relayed in full. */
  get declaredBodyRelayed(): boolean {
    return this.#expectedLength !== undefined && this.bytesRelayed === this.#expectedLength;
  }

  /** Sends the held response headers to the client, once. */
  flushHead(): void {
    const head = this.#pendingHead;
    if (head === undefined) return;

    this.#pendingHead = undefined;
    this.#res.writeHead(head.status, head.headers);
    if (typeof this.#res.flushHeaders === 'function') this.#res.flushHeaders();
    this.#onStart();
  }

  /**
   * Relays one DATA chunk with backpressure: when the client cannot take more, `pause` stops the
   * upstream stream and `resume` is called once the client drained.
   */
  relay(chunk: Buffer, pause: () => void, resume: () => void): void {
    this.bytesRelayed += chunk.length;

    if (this.#held429 !== undefined) {
      this.#held429.push(chunk);
      if (this.bytesRelayed > HELD_429_MAX_BYTES) this.releaseHeld();
      return;
    }

    this.flushHead();
    if (!this.#res.write(chunk)) {
      pause();
      this.#res.once('drain', resume);
    }
  }

  /** Counts a chunk that arrived after the attempt settled; it is not relayed. */
  discard(chunk: Buffer): void {
    this.bytesRelayed += chunk.length;
  }

  /** Sends a held 429 (or held headers) on to the client after all. */
  releaseHeld(): void {
    const chunks = this.#held429 ?? [];
    this.#held429 = undefined;
    this.flushHead();
    for (const chunk of chunks) this.#res.write(chunk);
  }
}
