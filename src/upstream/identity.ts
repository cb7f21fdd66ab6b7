/**
 * Whom an upstream session authenticates as. The API server authenticates a connection's client
 * certificate before it looks at a bearer token, so a token request must never ride a session
 * that presents the node's certificate: sessions are keyed by identity and never shared across.
 *
 * - `client-cert`: presents upstream.tls.cert/key (the node's identity).
 * - `anonymous`: presents no certificate; carries requests that bring their own bearer token.
 */
export type UpstreamIdentity = 'client-cert' | 'anonymous';

export const UPSTREAM_IDENTITIES: readonly UpstreamIdentity[] = ['client-cert', 'anonymous'];
