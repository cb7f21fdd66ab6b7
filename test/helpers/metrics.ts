import type { Metrics } from '../../src/metrics/metrics.js';

type CounterName = 'sessionsEvicted' | 'retries' | 'pings' | 'rejected' | 'watchesEnded' | 'requests' | 'dialFailures' | 'goaways';

/** Sums a counter's values whose labels include every label given. */
export async function counterValue(metrics: Metrics, name: CounterName, labels: Record<string, string> = {}): Promise<number> {
  const data = await metrics[name].get();
  let total = 0;
  for (const entry of data.values) {
    const entryLabels = entry.labels as Record<string, string | number | undefined>;
    if (Object.entries(labels).every(([key, value]) => entryLabels[key] === value)) total += entry.value;
  }
  return total;
}
