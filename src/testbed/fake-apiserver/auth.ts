/**
 * Per-request authentication as kube-apiserver does it. A client certificate that verifies
 * against the cluster CA names the user (CN) and the groups (O). Without one, the bearer token
 * must be in the configured token map. Anything else is unauthenticated, because the fake allows
 * anonymous requests only to /healthz, /livez and /readyz.
 */
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { AuthenticatedUser } from './http.js';

export interface AuthenticationResult {
  user?: AuthenticatedUser;
  clientCertificate: boolean;
  bearerToken: boolean;
}

export function authenticate(req: IncomingMessage, socket: TLSSocket, tokens: ReadonlyMap<string, AuthenticatedUser>): AuthenticationResult {
  const certificate = socket.getPeerCertificate();
  const clientCertificate = certificate !== null && typeof certificate === 'object' && Object.keys(certificate).length > 0;
  const authorization = req.headers.authorization;
  const bearer = typeof authorization === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(authorization) : null;
  const result: AuthenticationResult = { clientCertificate, bearerToken: authorization !== undefined };

  // A certificate that fails verification is an error for the x509 authenticator only:
  // kube-apiserver's union authenticator then tries the bearer token, and so does this one.
  if (clientCertificate && socket.authorized && typeof certificate.subject?.CN === 'string') {
    result.user = { name: certificate.subject.CN, groups: asList(certificate.subject.O) };
    return result;
  }

  const tokenUser = bearer ? tokens.get(bearer[1]) : undefined;
  if (tokenUser) {
    result.user = { name: tokenUser.name, groups: [...tokenUser.groups] };
  }
  return result;
}

function asList(value: string | string[] | undefined): string[] {
  if (value === undefined) {
    return [];
  }
  return Array.isArray(value) ? value : [value];
}
