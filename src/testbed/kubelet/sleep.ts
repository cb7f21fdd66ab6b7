/** Waits `ms`, or less when `signal` aborts first; never rejects, and leaves no timer behind. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Resolves when `signal` aborts; the listener is removed once `settled` resolves. */
export function whenAborted(signal: AbortSignal, settled: Promise<unknown>): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const onAbort = (): void => resolve();
    signal.addEventListener('abort', onAbort, { once: true });
    void settled.finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Exponential backoff: `initial`, doubled after each call up to `max`. */
export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  #next: number;

  constructor(initial: number, max: number) {
    this.#initial = initial;
    this.#max = max;
    this.#next = initial;
  }

  next(): number {
    const current = this.#next;
    this.#next = Math.min(this.#next * 2, this.#max);
    return current;
  }

  reset(): void {
    this.#next = this.#initial;
  }
}

/** Formats ms as a Go duration for a `timeout` query parameter, as client-go writes it ("10s", "2.5s", "800ms"). */
export function goDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  return `${Number((ms / 1000).toFixed(3))}s`;
}
