/**
 * Go-style durations ("500ms", "2s", "1h30m", "1.5s"), the form Kubernetes tooling uses, parsed
 * into the whole milliseconds that Node timers take.
 */

const NANOSECONDS_PER_UNIT: ReadonlyMap<string, bigint> = new Map([
  ['ns', 1n],
  ['us', 1_000n],
  ['µs', 1_000n],
  ['μs', 1_000n],
  ['ms', 1_000_000n],
  ['s', 1_000_000_000n],
  ['m', 60_000_000_000n],
  ['h', 3_600_000_000_000n],
]);

const NANOSECONDS_PER_MILLISECOND = 1_000_000n;

/**
 * Largest delay that setTimeout honours (2^31 - 1 ms, about 24.8 days). Node fires a longer timer
 * after 1 ms with a TimeoutOverflowWarning, which would turn a long interval into a busy loop.
 */
export const MAX_DURATION_MS = 2_147_483_647;

// One "<number><unit>" term: digits with an optional fraction (".5" and "1." are allowed as in Go).
const TERM = /^(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;

export class DurationSyntaxError extends Error {
  override readonly name = 'DurationSyntaxError';
}

/**
 * Parses a Go-style duration into milliseconds. Throws DurationSyntaxError with a message that
 * completes the sentence `"<text>" ...` and ends with the fix. Rejects bare numbers (every
 * duration needs a unit, even 0), negative values, values that are not a whole number of
 * milliseconds (such as "250us") and values above MAX_DURATION_MS.
 */
export function parseDuration(text: string): number {
  const trimmed = text.trim();

  if (trimmed === '') {
    throw new DurationSyntaxError('is not a duration; write a number with a unit, e.g. "1s" or "500ms"');
  }
  if (/^[+-]?(\d+(\.\d*)?|\.\d+)$/.test(trimmed)) {
    throw new DurationSyntaxError(
      `is not a duration because it has no unit; write it with a unit, e.g. "${trimmed.replace(/^\+/, '')}s" or "500ms"`,
    );
  }
  if (trimmed.startsWith('-')) {
    throw new DurationSyntaxError('is negative; write a duration of 0s or more, e.g. "1s"');
  }

  const totalNanoseconds = sumTerms(trimmed.replace(/^\+/, ''));

  if (totalNanoseconds % NANOSECONDS_PER_MILLISECOND !== 0n) {
    throw new DurationSyntaxError(
      'is not a whole number of milliseconds; stallguard timers have millisecond resolution, so round it, e.g. "1ms"',
    );
  }
  const milliseconds = totalNanoseconds / NANOSECONDS_PER_MILLISECOND;
  if (milliseconds > BigInt(MAX_DURATION_MS)) {
    throw new DurationSyntaxError(`is too long; the maximum is ${formatDuration(MAX_DURATION_MS)}`);
  }
  return Number(milliseconds);
}

function sumTerms(text: string): bigint {
  let rest = text;
  let total = 0n;

  while (rest.length > 0) {
    const match = TERM.exec(rest);
    if (match === null) {
      throw new DurationSyntaxError(
        'is not a duration; write numbers with the units h, m, s, ms, us or ns, e.g. "1s", "500ms" or "1h30m"',
      );
    }
    total += termToNanoseconds(match[1], NANOSECONDS_PER_UNIT.get(match[2])!);
    rest = rest.slice(match[0].length);
  }
  return total;
}

// Exact decimal arithmetic, so "0.1s" is exactly 100 ms and not 100.00000000000001.
function termToNanoseconds(number: string, unitNanoseconds: bigint): bigint {
  const [whole, fraction = ''] = number.split('.');
  const wholePart = BigInt(whole === '' ? '0' : whole) * unitNanoseconds;
  if (fraction === '') {
    return wholePart;
  }

  const scale = 10n ** BigInt(fraction.length);
  const fractionPart = (BigInt(fraction) * unitNanoseconds) / scale;
  if ((BigInt(fraction) * unitNanoseconds) % scale !== 0n) {
    throw new DurationSyntaxError('has more decimal places than nanoseconds allow; use fewer digits after the point');
  }
  return wholePart + fractionPart;
}

/**
 * Formats milliseconds as a Go-style duration that parseDuration reads back to the same value.
 * Units that are zero are left out ("1h30m", not Go's "1h30m0s"), values under a second are
 * written in ms ("250ms"), and sub-second parts of longer values become a fraction ("1.5s").
 */
export function formatDuration(milliseconds: number): string {
  if (!Number.isSafeInteger(milliseconds) || milliseconds < 0) {
    throw new RangeError(`cannot format ${milliseconds} as a duration: expected a whole number of milliseconds >= 0`);
  }
  if (milliseconds === 0) {
    return '0s';
  }
  if (milliseconds < 1000) {
    return `${milliseconds}ms`;
  }

  const hours = Math.floor(milliseconds / 3_600_000);
  const minutes = Math.floor((milliseconds % 3_600_000) / 60_000);
  const secondsMs = milliseconds % 60_000;

  let text = '';
  if (hours > 0) {
    text += `${hours}h`;
  }
  if (minutes > 0) {
    text += `${minutes}m`;
  }
  if (secondsMs > 0) {
    const seconds = Math.floor(secondsMs / 1000);
    const fraction = String(secondsMs % 1000).padStart(3, '0').replace(/0+$/, '');
    text += fraction === '' ? `${seconds}s` : `${seconds}.${fraction}s`;
  }
  return text;
}
