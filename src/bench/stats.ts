/**
 * Summary statistics for benchmark samples. Percentiles use the nearest-rank method on the sorted
 * samples, so every reported value is one that was measured.
 */

/** A summary of one set of samples; every field is undefined for an empty set. */
export interface Summary {
  count: number;
  min: number | undefined;
  median: number | undefined;
  max: number | undefined;
  /** max - min. */
  spread: number | undefined;
}

/** Returns the sample at percentile `p` (0 < p <= 100) by nearest rank, or undefined for no samples. */
export function percentile(samples: readonly number[], p: number): number | undefined {
  if (!(p > 0 && p <= 100)) throw new RangeError(`percentile must be in (0, 100], got ${p}`);
  if (samples.length === 0) return undefined;

  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[rank - 1];
}

/**
 * Returns the median: the middle sample, or the mean of the two middle samples for an even count,
 * which is the usual definition and the one that tables of medians are read with.
 */
export function median(samples: readonly number[]): number | undefined {
  if (samples.length === 0) return undefined;

  const sorted = [...samples].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) return { count: 0, min: undefined, median: undefined, max: undefined, spread: undefined };

  const min = Math.min(...samples);
  const max = Math.max(...samples);
  return { count: samples.length, min, median: median(samples), max, spread: max - min };
}

/** Returns a / b rounded to 3 decimals, or undefined when either is missing or b is 0. */
export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || b === undefined || b === 0) return undefined;
  return Math.round((a / b) * 1000) / 1000;
}
