/**
 * Test endpoints under /testbed/ that no real API server has: they give tests byte-exact bodies,
 * request trailers, slow responses and the request as the server received it.
 */
import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { buildStatus, sendJson, sendStatus, type RequestContext } from './http.js';

const PATTERN_BLOCK_SIZE = 64 * 1024;
const MAX_PATTERN_BYTES = 4 * 1024 * 1024 * 1024;

// The block length is a multiple of 256, so repeating the block continues the pattern exactly.
const PATTERN_BLOCK = Buffer.from(Array.from({ length: PATTERN_BLOCK_SIZE }, (_, index) => (index * 31 + 7) & 0xff));

/** Returns the first `length` bytes of the deterministic pattern that /testbed/bytes serves. */
export function patternBytes(length: number): Buffer {
  const buffer = Buffer.alloc(length);
  for (let offset = 0; offset < length; offset += PATTERN_BLOCK_SIZE) {
    PATTERN_BLOCK.copy(buffer, offset, 0, Math.min(PATTERN_BLOCK_SIZE, length - offset));
  }
  return buffer;
}

/** Returns the hex SHA-256 of the first `length` pattern bytes. */
export function patternSha256(length: number): string {
  const hash = createHash('sha256');
  for (let offset = 0; offset < length; offset += PATTERN_BLOCK_SIZE) {
    hash.update(PATTERN_BLOCK.subarray(0, Math.min(PATTERN_BLOCK_SIZE, length - offset)));
  }
  return hash.digest('hex');
}

/** Serves one /testbed/ request; returns false when the path is not a test endpoint. */
export async function handleTestbedRequest(context: RequestContext): Promise<boolean> {
  switch (context.url.pathname) {
    case '/testbed/echo':
      await echo(context);
      return true;
    case '/testbed/bytes':
      await sendPattern(context);
      return true;
    case '/testbed/slow':
      await slow(context);
      return true;
    case '/testbed/whoami':
      whoami(context);
      return true;
    default:
      return false;
  }
}

// Echoes body bytes as they arrive (full duplex on HTTP/2), then the request trailers as response trailers.
async function echo(context: RequestContext): Promise<void> {
  const { req, res } = context;
  res.writeHead(200, {
    'content-type': req.headers['content-type'] ?? 'application/octet-stream',
    ...(context.httpVersion === '1.1' ? { trailer: 'x-echo-trailers' } : {}),
  });
  res.flushHeaders();

  let received = 0;
  for await (const chunk of req) {
    received += (chunk as Buffer).length;
    if (!res.write(chunk as Buffer)) {
      await waitForDrain(res);
    }
  }

  const trailers: Record<string, string> = { 'x-echo-bytes': String(received) };
  for (const [name, value] of Object.entries(req.trailers)) {
    if (typeof value === 'string') {
      trailers[name] = value;
    }
  }
  res.addTrailers(trailers);
  res.end();
}

async function sendPattern(context: RequestContext): Promise<void> {
  const { res } = context;
  const length = Number(context.url.searchParams.get('n') ?? '0');
  if (!Number.isSafeInteger(length) || length < 0 || length > MAX_PATTERN_BYTES) {
    sendStatus(res, buildStatus(400, 'BadRequest', `n must be an integer between 0 and ${MAX_PATTERN_BYTES}`));
    return;
  }

  const digest = patternSha256(length);
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': String(length),
    'x-sha256': digest,
  });
  for (let offset = 0; offset < length && !res.destroyed; offset += PATTERN_BLOCK_SIZE) {
    if (!res.write(PATTERN_BLOCK.subarray(0, Math.min(PATTERN_BLOCK_SIZE, length - offset)))) {
      await waitForDrain(res);
    }
  }
  if (context.httpVersion === '2.0') {
    res.addTrailers({ 'x-sha256': digest });
  }
  res.end();
}

async function slow(context: RequestContext): Promise<void> {
  const { res } = context;
  const delayMs = Number(context.url.searchParams.get('ms') ?? '0');
  if (!Number.isFinite(delayMs) || delayMs < 0) {
    sendStatus(res, buildStatus(400, 'BadRequest', 'ms must be a non-negative number of milliseconds'));
    return;
  }
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, delayMs);
    res.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  if (!res.destroyed) {
    sendJson(res, 200, { delayedMs: delayMs });
  }
}

/**
 * Returns the authenticated user, every request header field as received and the client
 * certificate of the connection, so that tests can see which identity and certificate a proxy
 * used. Each header is a list with one entry per field, its name in lower case, and an
 * authorization value is replaced by "[sent]".
 */
function whoami(context: RequestContext): void {
  const socket = (context.stream?.session?.socket ?? context.req.socket) as TLSSocket;
  const certificate = socket.getPeerCertificate();
  const presented = certificate !== null && typeof certificate === 'object' && Object.keys(certificate).length > 0;

  const headers: Record<string, string[]> = {};
  const raw = context.req.rawHeaders;
  for (let index = 0; index + 1 < raw.length; index += 2) {
    const name = raw[index]!.toLowerCase();
    (headers[name] ??= []).push(name === 'authorization' ? '[sent]' : raw[index + 1]!);
  }

  sendJson(context.res, 200, {
    user: context.user,
    headers,
    clientCertificate: presented ? { subject: certificate.subject, serialNumber: certificate.serialNumber } : null,
  });
}

function waitForDrain(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}
