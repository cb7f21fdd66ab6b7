/**
 * Per-request authentication as kube-apiserver does it. A client certificate that verifies
 * against the cluster CA names the user (CN) and the groups (O). Without one, the bearer token
 * must be in the configured token map. Anything else is unauthenticated, because the fake allows
 * anonymous requests only to /healthz, /livez and /readyz. The fake has no authorizer, so the 403
 * Status built here is sent only for the paths a test forbids with FakeApiServer.forbid().
 */
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { parseResourcePath } from './api-handler.js';
import { buildStatus, type AuthenticatedUser, type KubeStatus } from './http.js';

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

const VERB_BY_METHOD: Record<string, string> = { POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' };

/** Builds the 403 Status that kube-apiserver's RBAC authorizer returns, naming the user, verb and resource. */
export function buildForbiddenStatus(method: string, url: URL, user: string): KubeStatus {
  const route = parseResourcePath(url.pathname);
  if (route === undefined) {
    return buildStatus(403, 'Forbidden', `forbidden: User "${user}" cannot ${method.toLowerCase()} path "${url.pathname}"`);
  }

  const watch = route.legacyWatch || url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
  let verb = VERB_BY_METHOD[method] ?? method.toLowerCase();
  if (method === 'GET' && watch) verb = 'watch';
  else if (method === 'GET') verb = route.name === undefined ? 'list' : 'get';
  const { type } = route;
  const qualified = type.group === '' ? type.name : `${type.name}.${type.group}`;
  const subject = route.name === undefined || watch ? qualified : `${qualified} "${route.name}"`;
  const scope = route.namespace === undefined ? 'at the cluster scope' : `in the namespace "${route.namespace}"`;
  return buildStatus(
    403,
    'Forbidden',
    `${subject} is forbidden: User "${user}" cannot ${verb} resource "${type.name}" in API group "${type.group}" ${scope}`,
    { name: route.name, group: type.group || undefined, kind: type.name },
  );
}
