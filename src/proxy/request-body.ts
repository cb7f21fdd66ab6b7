import type { ClientHttp2Stream } from 'node:http2';
import type { Readable } from 'node:stream';

/**
 * A client's request body, read once and fed to the current upstream stream with backpressure.
 * Chunks are also kept, up to `maxBytes`, so a retry can replay the body on another session; once
 * the body grows past the cap it is no longer replayable and the kept chunks are released.
 */
export class RequestBody {
  readonly #source: Readable & { trailers?: Record<string, string | string[] | undefined> };
  readonly #maxBytes: number;
  #chunks: Buffer[] = [];
  #bytes = 0;
  #overflowed = false;
  #ended = false;
  #sink: ClientHttp2Stream | undefined;

  constructor(source: Readable, maxBytes: number) {
    this.#source = source;
    this.#maxBytes = maxBytes;

    source.on('data', (chunk: Buffer) => this.#onData(chunk));
    // Nothing is read until the first upstream stream attaches.
    source.pause();
    source.once('end', () => {
      this.#ended = true;
      this.#sink?.end();
    });
  }

  /** True while every byte read so far is kept, so the body can be sent again. */
  get replayable(): boolean {
    return !this.#overflowed;
  }

  get bytesRead(): number {
    return this.#bytes;
  }

  /** Request trailers, known once the body has ended (HTTP/2 and chunked HTTP/1.1 clients). */
  get trailers(): Record<string, string | string[] | undefined> {
    return this.#source.trailers ?? {};
  }

  /** Sends the kept chunks to a new upstream stream, then whatever the client sends next. */
  attach(sink: ClientHttp2Stream): void {
    this.#sink = sink;
    for (const chunk of this.#chunks) sink.write(chunk);
    if (this.#ended) {
      sink.end();
      return;
    }
    this.#source.resume();
  }

  /** Stops feeding the current stream, which failed; the source pauses until the next attach. */
  detach(): void {
    this.#sink = undefined;
    this.#source.pause();
  }

  #onData(chunk: Buffer): void {
    this.#bytes += chunk.length;
    if (!this.#overflowed) {
      if (this.#bytes > this.#maxBytes) {
        this.#overflowed = true;
        this.#chunks = [];
      } else {
        this.#chunks.push(chunk);
      }
    }

    const sink = this.#sink;
    if (sink === undefined) {
      // No stream to take it: keep it only if replayable, and stop reading until one attaches.
      this.#source.pause();
      return;
    }
    if (!sink.write(chunk)) {
      this.#source.pause();
      sink.once('drain', () => {
        if (this.#sink === sink) this.#source.resume();
      });
    }
  }
}
