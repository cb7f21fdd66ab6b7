/**
 * Byte sizes such as "512KiB", "1MiB" or "4MB". Binary units (KiB, MiB, GiB) are powers of 1024
 * and decimal units (KB, MB, GB) powers of 1000, as in IEC 80000-13. Unit letters are matched
 * without regard to case, so "1mib" is 1 MiB.
 */

const BYTES_PER_UNIT: ReadonlyMap<string, number> = new Map([
  ['b', 1],
  ['kb', 1000],
  ['mb', 1000 ** 2],
  ['gb', 1000 ** 3],
  ['kib', 1024],
  ['mib', 1024 ** 2],
  ['gib', 1024 ** 3],
]);

const SIZE = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i;

export class SizeSyntaxError extends Error {
  override readonly name = 'SizeSyntaxError';
}

/**
 * Parses a byte count given as a non-negative integer or as a string with an optional unit.
 * Throws SizeSyntaxError with a message that completes the sentence `"<value>" ...`.
 */
export function parseSize(value: unknown): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new SizeSyntaxError('is not a size; write a whole number of bytes or a size with a unit, e.g. "1MiB"');
    }
    return value;
  }
  if (typeof value !== 'string') {
    throw new SizeSyntaxError('is not a size; write a whole number of bytes or a size with a unit, e.g. "1MiB"');
  }

  const match = SIZE.exec(value.trim());
  const unitBytes = match === null ? undefined : BYTES_PER_UNIT.get(match[2] === '' ? 'b' : match[2].toLowerCase());
  if (match === null || unitBytes === undefined) {
    throw new SizeSyntaxError('is not a size; use the units B, KiB, MiB, GiB, KB, MB or GB, e.g. "512KiB" or "1MiB"');
  }

  const bytes = Number(match[1]) * unitBytes;
  if (!Number.isSafeInteger(bytes)) {
    throw new SizeSyntaxError('is not a whole number of bytes; round it, e.g. "1536KiB" in place of "1.5001MiB"');
  }
  return bytes;
}

/** Formats a byte count in the largest unit that divides it exactly, preferring binary units ("1MiB"). */
export function formatSize(bytes: number): string {
  const units: Array<[string, number]> = [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
    ['GB', 1000 ** 3],
    ['MB', 1000 ** 2],
    ['KB', 1000],
  ];

  for (const [unit, unitBytes] of units) {
    if (bytes > 0 && bytes % unitBytes === 0) {
      return `${bytes / unitBytes}${unit}`;
    }
  }
  return String(bytes);
}
