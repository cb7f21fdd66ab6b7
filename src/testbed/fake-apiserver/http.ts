/**
 * The response and request helpers that every fake API-server handler uses. HTTP/1.1 and
 * HTTP/2 requests both arrive through Node's compatibility API, so one handler serves both.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ServerHttp2Stream } from 'node:http2';

/** Everything a handler needs about one request. */
export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  url: URL;
  /** '1.1' or '2.0'. */
  httpVersion: string;
  sessionId: number;
  /** The HTTP/2 stream, absent for HTTP/1.1. */
  stream?: ServerHttp2Stream;
  user: AuthenticatedUser;
}

export interface AuthenticatedUser {
  name: string;
  groups: string[];
}

/** The Kubernetes metav1.Status object that the API server returns for every failure. */
export interface KubeStatus {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure' | 'Success';
  message?: string;
  reason?: string;
  details?: { name?: string; group?: string; kind?: string; retryAfterSeconds?: number };
  code: number;
}

export class BodyTooLargeError extends Error {}

export function buildStatus(code: number, reason: string, message: string, details?: KubeStatus['details']): KubeStatus {
  const status: KubeStatus = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
  if (details) {
    status.details = details;
  }
  return status;
}

export function sendJson(res: ServerResponse, statusCode: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const payload = JSON.stringify(body);
  res.writeHead(statusCode, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

export function sendStatus(res: ServerResponse, status: KubeStatus, headers: Record<string, string> = {}): void {
  sendJson(res, status.code, status, headers);
}

export function sendText(res: ServerResponse, statusCode: number, text: string): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(statusCode, {
    'content-type': 'text/plain; charset=utf-8',
    'x-content-type-options': 'nosniff',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** Reads the whole request body, rejecting with BodyTooLargeError past `limitBytes`. */
export async function readBody(req: IncomingMessage, limitBytes = 3 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    const buffer = chunk as Buffer;
    total += buffer.length;
    if (total > limitBytes) {
      throw new BodyTooLargeError(`request body larger than ${limitBytes} bytes`);
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks);
}
