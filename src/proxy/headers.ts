import type http from 'node:http';
import http2 from 'node:http2';
import type { IdentityHeaders } from '../downstream/identity-headers.js';

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) and the ones HTTP/2 forbids (RFC 9113 §8.2.2). They
 * describe one connection and are never forwarded; `te` is kept only as "trailers".
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'host',
  'http2-settings',
  'trailer',
]);

/**
 * Builds the upstream request headers. `:authority` is always the endpoint's, so nothing a client
 * sends (Host, :authority, an absolute URI) can steer the request anywhere else. `identity`
 * removes the client's identity headers and adds stallguard's (see downstream/identity-headers.ts).
 */
export function upstreamRequestHeaders(
  method: string,
  path: string,
  incoming: http.IncomingHttpHeaders,
  authority: string,
  identity?: IdentityHeaders,
): http2.OutgoingHttpHeaders {
  const headers: http2.OutgoingHttpHeaders = {
    [http2.constants.HTTP2_HEADER_METHOD]: method,
    [http2.constants.HTTP2_HEADER_PATH]: path,
    [http2.constants.HTTP2_HEADER_SCHEME]: 'https',
    [http2.constants.HTTP2_HEADER_AUTHORITY]: authority,
  };

  const named = connectionNamedHeaders(incoming.connection);
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || name.startsWith(':')) continue;
    if (HOP_BY_HOP.has(name) || named.has(name)) continue;
    if (identity?.isIdentityHeader(name)) continue;
    headers[name] = value;
  }
  if (identity !== undefined) Object.assign(headers, identity.set);

  if (typeof incoming.te === 'string' && /(^|,)\s*trailers\s*(,|$)/i.test(incoming.te)) headers.te = 'trailers';
  return headers;
}

/** Filters upstream response headers for the client: pseudo-headers and hop-by-hop ones go. */
export function downstreamResponseHeaders(incoming: http2.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = {};
  const named = connectionNamedHeaders(incoming.connection);
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || name.startsWith(':')) continue;
    if (HOP_BY_HOP.has(name) || named.has(name)) continue;
    headers[name] = value;
  }
  return headers;
}

/** Filters trailers both ways: the same rules as headers, and no pseudo-headers. */
export function forwardableTrailers(incoming: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const trailers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || name.startsWith(':') || HOP_BY_HOP.has(name)) continue;
    trailers[name] = value;
  }
  return trailers;
}

function connectionNamedHeaders(connection: string | string[] | undefined): Set<string> {
  if (connection === undefined) return new Set();
  const list = Array.isArray(connection) ? connection.join(',') : connection;
  return new Set(
    list
      .split(',')
      .map((token) => token.trim().toLowerCase())
      .filter((token) => token !== ''),
  );
}
