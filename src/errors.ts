/**
 * The error catalogue. Every error that stallguard raises or reports carries a stable `code`
 * (never reused once retired) and says whether the failure was local-origin (stallguard could not
 * reach or keep a session) or upstream (the API server answered badly). Branch on `code`, never
 * on the message. docs/errors.md lists each code with the operator action.
 */
export type ErrorOrigin = 'local' | 'upstream' | 'client' | 'config';

export class StallguardError extends Error {
  readonly code: string;
  readonly origin: ErrorOrigin;

  constructor(code: string, origin: ErrorOrigin, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.origin = origin;
  }
}

export class ConfigError extends StallguardError {
  /** One entry per invalid key: the key, the value found and what is expected. */
  readonly problems: string[];

  constructor(problems: string[]) {
    super('SG_ERR_CONFIG_INVALID', 'config', `invalid configuration:\n  ${problems.join('\n  ')}`);
    this.problems = problems;
  }
}

export class ConnectTimeoutError extends StallguardError {
  constructor(endpoint: string, timeoutMs: number) {
    super(
      'SG_ERR_UPSTREAM_CONNECT_TIMEOUT',
      'local',
      `connect to ${endpoint} timed out after ${timeoutMs}ms (TCP, TLS and the first SETTINGS must complete within upstream.connectTimeout)`,
    );
  }
}

export class ConnectError extends StallguardError {
  constructor(endpoint: string, cause: unknown) {
    super('SG_ERR_UPSTREAM_CONNECT', 'local', `connect to ${endpoint} failed: ${describeError(cause)}`, { cause });
  }
}

export class TlsError extends StallguardError {
  constructor(endpoint: string, cause: unknown) {
    super(
      'SG_ERR_UPSTREAM_TLS',
      'local',
      `TLS handshake with ${endpoint} failed: ${describeError(cause)}; check upstream.tls.ca and upstream.tls.serverName`,
      { cause },
    );
  }
}

export class PingTimeoutError extends StallguardError {
  constructor(endpoint: string, timeoutMs: number) {
    super('SG_ERR_SESSION_PING_TIMEOUT', 'local', `no PING ACK from ${endpoint} within ${timeoutMs}ms; session evicted`);
  }
}

export class SessionClosedError extends StallguardError {
  constructor(endpoint: string, reason: string, cause?: unknown) {
    super('SG_ERR_SESSION_CLOSED', 'local', `session to ${endpoint} closed: ${reason}`, { cause });
  }
}

export class NoReadyEndpointError extends StallguardError {
  /** One line per endpoint tried, with the reason it could not take the request. */
  readonly attempts: string[];

  constructor(attempts: string[]) {
    super(
      'SG_ERR_NO_READY_ENDPOINT',
      'local',
      attempts.length > 0
        ? `no API-server endpoint could take the request: ${attempts.join('; ')}`
        : 'no API-server endpoint could take the request',
    );
    this.attempts = attempts;
  }
}

/** Returns a one-line description of any thrown value, with its code when it has one. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/** Returns the `code` property of an error-like value, or undefined. */
export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

export class StateDirError extends StallguardError {
  constructor(directory: string, action: string, cause: unknown) {
    super(
      'SG_ERR_STATE_DIR',
      'config',
      `state directory ${directory}: failed to ${action}: ${describeError(cause)}; make it writable by the user stallguard runs as, or set stateDir to a writable directory`,
      { cause },
    );
  }
}
