/**
 * A seeded pseudo-random generator (mulberry32), so that a run's random incident moments can be
 * replayed with --seed. It is not for anything that needs unpredictability.
 */
export class SeededRandom {
  #state: number;

  constructor(readonly seed: number) {
    this.#state = seed >>> 0;
  }

  /** Returns a number in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  }

  /** Returns a number in [min, max). */
  between(min: number, max: number): number {
    return min + (max - min) * this.next();
  }
}
