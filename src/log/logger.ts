import pino from 'pino';
import type { DestinationStream, Level, Logger } from 'pino';

export type LogLevel = Level | 'silent';

/**
 * Paths whose values pino replaces before a line is written. Request and response headers reach
 * the log through `headers`, `req.headers` and `res.headers`, and a `*.` path matches one level of
 * any object, so `{ upstream: { authorization } }` is covered too. Cookies and bearer tokens grant
 * access to the API server, so they must never reach a log sink.
 */
export const REDACTED_LOG_PATHS: readonly string[] = [
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'token',
  '*.authorization',
  '*["proxy-authorization"]',
  '*.cookie',
  '*["set-cookie"]',
  '*.token',
  'headers.authorization',
  'headers["proxy-authorization"]',
  'headers.cookie',
  'headers["set-cookie"]',
  '*.headers.authorization',
  '*.headers["proxy-authorization"]',
  '*.headers.cookie',
  '*.headers["set-cookie"]',
];

/**
 * Creates the process logger: JSON lines with `name: "stallguard"` and no pid or hostname, because
 * the node's log collector already records both. Writes to stdout unless `destination` is given
 * (tests pass a stream to read the lines back).
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { name: 'stallguard' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: [...REDACTED_LOG_PATHS], censor: '[redacted]' },
  };

  // pino.destination(1) writes asynchronously so that a slow log pipe does not block the proxy, and
  // pino flushes it synchronously on process exit, so lines logged just before process.exit() are kept.
  return pino(options, destination ?? pino.destination(1));
}

/** The decision for one occurrence of a repeated event. */
export interface RepeatDecision {
  /** True when this occurrence should be logged. */
  log: boolean;
  /** 1-based count of occurrences of the key since it was created or last reset. */
  occurrence: number;
  /** Occurrences dropped since the previous logged one; meaningful only when `log` is true. */
  suppressed: number;
}

/**
 * Rate-limits a repeated warning by logging only the 1st, 2nd, 4th, 8th ... occurrence of each key
 * (Envoy's EVERY_POW_2 pattern). A key is usually `code + endpoint`, so one flapping endpoint cannot
 * drown out the others. Call `reset(key)` when the condition clears, so that the next occurrence is
 * logged again at once.
 *
 * Beyond `maxKeys` keys, the oldest key is forgotten, which bounds memory if a caller builds keys
 * from unbounded input. A forgotten key starts again at occurrence 1.
 */
export class RepeatLimiter {
  private readonly counts = new Map<string, { occurrence: number; lastLogged: number; nextLogged: number }>();

  constructor(private readonly maxKeys = 1024) {}

  /** Counts one occurrence of `key` and returns whether to log it. */
  record(key: string): RepeatDecision {
    const entry = this.counts.get(key) ?? { occurrence: 0, lastLogged: 0, nextLogged: 1 };
    entry.occurrence += 1;

    if (!this.counts.has(key)) {
      this.forgetOldestIfFull();
      this.counts.set(key, entry);
    }

    if (entry.occurrence < entry.nextLogged) {
      return { log: false, occurrence: entry.occurrence, suppressed: 0 };
    }

    const suppressed = entry.occurrence - entry.lastLogged - 1;
    entry.lastLogged = entry.occurrence;
    entry.nextLogged = entry.occurrence * 2;
    return { log: true, occurrence: entry.occurrence, suppressed };
  }

  /** Forgets `key`, so that its next occurrence is logged as the first. */
  reset(key: string): void {
    this.counts.delete(key);
  }

  private forgetOldestIfFull(): void {
    if (this.counts.size < this.maxKeys) {
      return;
    }
    const oldest = this.counts.keys().next();
    if (!oldest.done) {
      this.counts.delete(oldest.value);
    }
  }
}
