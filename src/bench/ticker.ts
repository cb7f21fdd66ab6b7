/** Calls a function on a fixed schedule (start + k * periodMs), so that a slow callback does not make the ticks drift. */
export class Ticker {
  #index = 0;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #origin = 0;

  constructor(
    private readonly periodMs: number,
    private readonly onTick: (index: number) => void,
  ) {}

  /** Number of ticks fired so far. */
  get count(): number {
    return this.#index;
  }

  /** Fires tick 0 at once and the next ones every periodMs. */
  start(): void {
    this.#running = true;
    this.#origin = performance.now();
    this.#fire();
  }

  stop(): void {
    this.#running = false;
    clearTimeout(this.#timer);
  }

  #fire(): void {
    if (!this.#running) return;

    this.onTick(this.#index++);
    const nextAt = this.#origin + this.#index * this.periodMs;
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, nextAt - performance.now()));
  }
}
