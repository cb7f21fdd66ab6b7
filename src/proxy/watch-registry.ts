/** Open watch streams, so shutdown can end each one cleanly and clients re-watch elsewhere. */
export class WatchRegistry {
  readonly #watches = new Map<object, () => void>();

  add(owner: object, end: () => void): void {
    this.#watches.set(owner, end);
  }

  delete(owner: object): void {
    this.#watches.delete(owner);
  }

  get size(): number {
    return this.#watches.size;
  }

  endAll(): void {
    const ends = [...this.#watches.values()];
    this.#watches.clear();
    for (const end of ends) end();
  }
}
