import type { IncomingHttpHeaders } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { UpstreamIdentityMode } from '../config/types.js';
import type { UpstreamIdentity } from '../upstream/identity.js';
import type { IdentityHeaderNames, IdentityHeaders } from './identity-headers.js';

/** The subject attributes Kubernetes reads from a client certificate: CN is the user, each O a group. */
export interface SubjectIdentity {
  commonName: string | undefined;
  organizations: string[];
}

export interface AdmissionPolicy {
  allowAnonymous: boolean;
  mode: UpstreamIdentityMode;
  /** Subject of the certificate that upstream sessions present now; undefined when none is configured. */
  upstreamSubject(): SubjectIdentity | undefined;
  headers: IdentityHeaderNames;
}

/**
 * Decides, before anything is forwarded, whose identity a local request travels upstream with:
 * - A bearer token travels with its own token on a session without a client certificate, because
 *   the API server would authenticate the certificate first and ignore the token.
 * - A client certificate that verified against listen.tls.clientCA travels, in static mode, as
 *   the identity in upstream.tls.cert, and only when its subject (CN and O) is that identity's, so
 *   no local client can borrow the node's identity. In front-proxy mode it travels as itself, in
 *   identity headers on a session that presents the front-proxy certificate.
 * - Anything else gets 401, unless listen.allowAnonymous is set: then it travels as the identity in
 *   upstream.tls.cert in static mode, and with no identity at all in front-proxy mode.
 * Client-sent identity headers are removed from every admitted request.
 */
export type Admission =
  | { admitted: true; identity: UpstreamIdentity; via: 'token' | 'certificate' | 'anonymous'; identityHeaders: IdentityHeaders }
  | { admitted: false; status: 401 | 403; reason: 'Unauthorized' | 'Forbidden'; message: string };

export function admitRequest(headers: IncomingHttpHeaders, socket: TLSSocket | undefined, policy: AdmissionPolicy): Admission {
  const authorization = headers.authorization;
  if (typeof authorization === 'string' && /^bearer\s+\S+/i.test(authorization)) {
    return { admitted: true, identity: 'anonymous', via: 'token', identityHeaders: policy.headers.none() };
  }

  if (socket !== undefined && socket.authorized && hasPeerCertificate(socket)) {
    return admitCertificate(readPeerSubject(socket), policy);
  }

  if (policy.allowAnonymous) {
    // Front-proxy mode asserts only identities it verified, so an anonymous request presents no certificate at all.
    const identity = policy.mode === 'front-proxy' ? 'anonymous' : 'client-cert';
    return { admitted: true, identity, via: 'anonymous', identityHeaders: policy.headers.none() };
  }
  return {
    admitted: false,
    status: 401,
    reason: 'Unauthorized',
    message:
      'the request carries neither a client certificate signed by listen.tls.clientCA nor a bearer token; ' +
      'configure the client with a certificate or a token (listen.allowAnonymous: true admits such requests)',
  };
}

function admitCertificate(subject: PeerSubject, policy: AdmissionPolicy): Admission {
  if (policy.mode === 'front-proxy') {
    const problem = describeUnassertableSubject(subject);
    if (problem !== undefined) return forbidden(`the client certificate cannot be passed on in identity headers: ${problem}`);

    const user = { name: subject.commonNames[0]!, groups: subject.organizations };
    return { admitted: true, identity: 'client-cert', via: 'certificate', identityHeaders: policy.headers.asserting(user) };
  }

  const upstream = policy.upstreamSubject();
  if (upstream === undefined) {
    return forbidden(
      'upstream.tls.cert is not set, so stallguard has no identity to send a client-certificate request as; ' +
        'send a bearer token instead, or configure upstream.tls.cert and upstream.tls.key',
    );
  }
  if (!sameSubject(subject, upstream)) {
    return forbidden(
      `the client certificate's subject (${describeSubject(subject.commonNames, subject.organizations)}) is not the identity ` +
        `stallguard sends upstream (${describeSubject(upstream.commonName === undefined ? [] : [upstream.commonName], upstream.organizations)}), ` +
        'and with upstream.identity: static only that identity may use stallguard without a token; ' +
        'send a bearer token, or use upstream.identity: front-proxy to pass each client\'s own identity on',
    );
  }
  return { admitted: true, identity: 'client-cert', via: 'certificate', identityHeaders: policy.headers.none() };
}

function forbidden(message: string): Admission {
  return { admitted: false, status: 403, reason: 'Forbidden', message };
}

export function hasPeerCertificate(socket: TLSSocket): boolean {
  const certificate = socket.getPeerCertificate?.();
  return certificate !== undefined && certificate !== null && Object.keys(certificate).length > 0;
}

/** The CN and O attributes of a peer certificate; a certificate may carry several of each. */
interface PeerSubject {
  commonNames: string[];
  organizations: string[];
}

function readPeerSubject(socket: TLSSocket): PeerSubject {
  const subject = socket.getPeerCertificate().subject as Record<string, string | string[] | undefined> | undefined;
  return { commonNames: asList(subject?.CN), organizations: asList(subject?.O) };
}

function asList(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

// Groups compare as a multiset: their order in the certificate carries no meaning for Kubernetes.
function sameSubject(peer: PeerSubject, upstream: SubjectIdentity): boolean {
  if (peer.commonNames.length !== 1 || peer.commonNames[0] !== upstream.commonName) return false;

  const peerGroups = [...peer.organizations].sort();
  const upstreamGroups = [...upstream.organizations].sort();
  return peerGroups.length === upstreamGroups.length && peerGroups.every((group, index) => group === upstreamGroups[index]);
}

// Printable ASCII only: Node rejects some other characters in header values, and kube-apiserver
// would read others differently from the certificate.
const HEADER_SAFE = /^[\x20-\x7e]+$/;

function describeUnassertableSubject(subject: PeerSubject): string | undefined {
  if (subject.commonNames.length !== 1) return `it has ${subject.commonNames.length} CN attributes, and exactly one names the user`;
  if (!HEADER_SAFE.test(subject.commonNames[0]!)) return 'its CN is empty or contains characters other than printable ASCII';
  if (!subject.organizations.every((group) => HEADER_SAFE.test(group))) return 'an O attribute is empty or contains characters other than printable ASCII';
  return undefined;
}

function describeSubject(commonNames: string[], organizations: string[]): string {
  const parts = [...commonNames.map((name) => `CN=${name}`), ...organizations.map((group) => `O=${group}`)];
  return parts.length > 0 ? parts.join(', ') : 'empty';
}
