/** "Did you mean" suggestions for misspelled keys and flags. */

// Compares names without case, dashes or underscores, so "ping_interval" and "--Ping-Interval" both
// match "pingInterval" exactly.
function normalize(name: string): string {
  return name.toLowerCase().replace(/[-_]/g, '');
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);

  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length];
}

/**
 * Returns the candidate closest to `input`, or undefined when none is close enough to be a likely
 * typo. A dotted candidate also matches on its last segment, so a key written at the wrong level
 * ("pingInterval" at the top) still finds "health.pingInterval".
 */
export function suggestClosest(input: string, candidates: readonly string[]): string | undefined {
  const target = normalize(input);
  // About one edit in four characters, and at least two, separates typos from different words.
  const maxDistance = Math.max(2, Math.floor(target.length / 4));

  let best: { candidate: string; distance: number } | undefined;
  for (const candidate of candidates) {
    const lastSegment = candidate.slice(candidate.lastIndexOf('.') + 1);
    const distance = Math.min(editDistance(target, normalize(candidate)), editDistance(target, normalize(lastSegment)));
    if (distance <= maxDistance && (best === undefined || distance < best.distance)) {
      best = { candidate, distance };
    }
  }
  return best?.candidate;
}
