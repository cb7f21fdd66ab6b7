/**
 * Classifies requests by what a retry may do to them. GET, HEAD and OPTIONS are idempotent and may
 * be replayed until the client has seen a byte of the response; any other method is replayed only
 * when the upstream provably did not process it.
 */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export function isIdempotent(method: string): boolean {
  return IDEMPOTENT_METHODS.has(method);
}

/** A watch: `watch=true` or `watch=1` in the query, or a legacy `/watch/` path. */
export function isWatch(path: string): boolean {
  const queryStart = path.indexOf('?');
  const pathname = queryStart === -1 ? path : path.slice(0, queryStart);
  if (/^\/(api|apis)\/.*\/watch\//.test(pathname) || /^\/api\/v1\/watch\//.test(pathname)) return true;
  if (queryStart === -1) return false;

  const watch = new URLSearchParams(path.slice(queryStart + 1)).get('watch');
  return watch === 'true' || watch === '1';
}

/**
 * Returns the request's own deadline from its `timeout` query parameter (a Go duration, as
 * client-go sends it, e.g. `timeout=10s`), or undefined when there is none or it does not parse.
 */
export function requestTimeoutMs(path: string): number | undefined {
  const queryStart = path.indexOf('?');
  if (queryStart === -1) return undefined;
  const raw = new URLSearchParams(path.slice(queryStart + 1)).get('timeout');
  if (raw === null) return undefined;

  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(raw);
  if (match === null) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? 's']!;
  return Number(match[1]) * unit;
}
