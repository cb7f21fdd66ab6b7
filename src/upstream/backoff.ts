/**
 * Exponential backoff with full jitter: the delay before attempt n (n >= 1) is drawn uniformly from
 * [0, min(max, base * 2^(n-1))]. Full jitter, rather than ±20 %, is what spreads a fleet of nodes
 * that lost the same balancer in the same second over the whole window.
 */
export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
}

export function backoffCeilingMs(policy: BackoffPolicy, attempt: number): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 30);
  return Math.min(policy.maxMs, policy.baseMs * 2 ** exponent);
}

export function backoffDelayMs(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCeilingMs(policy, attempt));
}

/**
 * Returns an interval shortened by up to `fraction` at random. PINGs and probes use it so that the
 * sessions of one node, and the nodes of a fleet, do not tick in step, while the configured
 * interval stays an upper bound.
 */
export function shortenedInterval(intervalMs: number, fraction = 0.2, random: () => number = Math.random): number {
  return intervalMs * (1 - fraction * random());
}
