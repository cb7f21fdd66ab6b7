import type { TLSSocket } from 'node:tls';
import type { IncomingHttpHeaders } from 'node:http';
import type { UpstreamIdentity } from '../upstream/identity.js';

/**
 * Decides whose identity a local request travels upstream with, before anything is forwarded.
 * - A bearer token travels with its own token on a session without a client certificate, because
 *   the API server would authenticate the certificate first and ignore the token.
 * - A client certificate that verified against listen.tls.clientCA travels as the node's identity.
 * - Anything else gets 401, unless listen.allowAnonymous is set, so no process that can reach
 *   localhost acts as the node by default.
 */
export type Admission =
  | { admitted: true; identity: UpstreamIdentity; via: 'token' | 'certificate' | 'anonymous' }
  | { admitted: false; message: string };

export function admitRequest(headers: IncomingHttpHeaders, socket: TLSSocket | undefined, allowAnonymous: boolean): Admission {
  const authorization = headers.authorization;
  if (typeof authorization === 'string' && /^bearer\s+\S+/i.test(authorization)) {
    return { admitted: true, identity: 'anonymous', via: 'token' };
  }

  if (socket !== undefined && socket.authorized && hasPeerCertificate(socket)) {
    return { admitted: true, identity: 'client-cert', via: 'certificate' };
  }

  if (allowAnonymous) return { admitted: true, identity: 'client-cert', via: 'anonymous' };
  return {
    admitted: false,
    message:
      'the request carries neither a client certificate signed by listen.tls.clientCA nor a bearer token; ' +
      'configure the client with a certificate or a token (listen.allowAnonymous: true admits such requests)',
  };
}

export function hasPeerCertificate(socket: TLSSocket): boolean {
  const certificate = socket.getPeerCertificate?.();
  return certificate !== undefined && certificate !== null && Object.keys(certificate).length > 0;
}
