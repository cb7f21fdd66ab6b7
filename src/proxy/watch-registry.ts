/** Open watch streams, so shutdown can end each one cleanly and /state can count them per endpoint. */
export class WatchRegistry {
  readonly #watches = new Map<object, { end: () => void; endpointId: string }>();

  add(owner: object, end: () => void, endpointId: string): void {
    this.#watches.set(owner, { end, endpointId });
  }

  delete(owner: object): void {
    this.#watches.delete(owner);
  }

  get size(): number {
    return this.#watches.size;
  }

  /** Returns the number of open watches on each endpoint. */
  countByEndpoint(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const { endpointId } of this.#watches.values()) counts.set(endpointId, (counts.get(endpointId) ?? 0) + 1);
    return counts;
  }

  endAll(): void {
    const watches = [...this.#watches.values()];
    this.#watches.clear();
    for (const { end } of watches) end();
  }
}
