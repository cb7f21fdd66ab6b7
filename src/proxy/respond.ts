import type http from 'node:http';
import http2 from 'node:http2';
import { statusBody, type StatusReason } from './status.js';

export type DownstreamRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type DownstreamResponse = http.ServerResponse | http2.Http2ServerResponse;

/** Answers with a Kubernetes Status body; `Retry-After` is set for 503 and 429 answers. */
export function sendStatus(
  res: DownstreamResponse,
  status: number,
  reason: StatusReason,
  message: string,
  retryAfterSeconds?: number,
): void {
  if (res.headersSent) return;

  const body = JSON.stringify(statusBody(status, reason, message, retryAfterSeconds));
  const headers: http.OutgoingHttpHeaders = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-cache, private',
  };
  if (retryAfterSeconds !== undefined) headers['retry-after'] = String(retryAfterSeconds);

  (res as http.ServerResponse).writeHead(status, headers);
  res.end(body);
}

/**
 * Aborts a response so the client sees an error, never a complete-looking body: RST_STREAM for an
 * HTTP/2 client, the connection closed for an HTTP/1.1 one.
 */
export function abortResponse(req: DownstreamRequest, res: DownstreamResponse): void {
  const stream = (res as http2.Http2ServerResponse).stream as http2.ServerHttp2Stream | undefined;
  if (stream !== undefined) {
    if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  req.socket.destroy();
}
