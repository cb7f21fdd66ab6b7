/**
 * Kubernetes `Status` bodies (meta/v1), the error format every Kubernetes client parses. A proxy
 * that answers with HTML or an empty body makes client-go report a decoding error instead of the
 * cause.
 */
export type StatusReason =
  | 'Unauthorized'
  | 'Forbidden'
  | 'BadRequest'
  | 'ServiceUnavailable'
  | 'Timeout'
  | 'InternalError'
  | 'RequestEntityTooLarge';

export interface StatusBody {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: StatusReason;
  code: number;
  details?: { causes?: Array<{ reason: string; message: string }>; retryAfterSeconds?: number };
}

export function statusBody(code: number, reason: StatusReason, message: string, retryAfterSeconds?: number): StatusBody {
  const body: StatusBody = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
  if (retryAfterSeconds !== undefined) body.details = { retryAfterSeconds };
  return body;
}
