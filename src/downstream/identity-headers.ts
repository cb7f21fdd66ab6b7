import type { FrontProxyHeaders } from '../config/types.js';

/**
 * Identity headers of one request: the client-sent ones are removed, and stallguard's own are
 * added. kube-apiserver trusts these headers only on a connection that presents a front-proxy
 * certificate. A client-sent one is removed in every mode anyway, so that no local client asserts
 * an identity that stallguard did not verify, whatever the mode or a later change of it.
 */
export interface IdentityHeaders {
  /** True for a lower-case header name that is never forwarded from the client. */
  isIdentityHeader(name: string): boolean;
  /** Headers to add, lower-case names; a list is sent as one header field per entry. */
  set: Readonly<Record<string, string | string[]>>;
}

/** The user that a front-proxy request asserts: the CN and the O attributes of the client certificate. */
export interface AssertedUser {
  name: string;
  groups: string[];
}

/** The configured identity header names, and the headers for one request. */
export class IdentityHeaderNames {
  readonly #username: string;
  readonly #group: string;
  readonly #extraPrefix: string;

  constructor(names: FrontProxyHeaders) {
    this.#username = names.usernameHeader.toLowerCase();
    this.#group = names.groupHeader.toLowerCase();
    this.#extraPrefix = names.extraHeaderPrefix.toLowerCase();
  }

  readonly isIdentityHeader = (name: string): boolean => {
    const lower = name.toLowerCase();
    return lower === this.#username || lower === this.#group || lower.startsWith(this.#extraPrefix);
  };

  /** Headers for a request that asserts no identity: client-sent identity headers are removed. */
  none(): IdentityHeaders {
    return { isIdentityHeader: this.isIdentityHeader, set: {} };
  }

  /** Headers for a front-proxy request on behalf of `user`: one group header per group. */
  asserting(user: AssertedUser): IdentityHeaders {
    const set: Record<string, string | string[]> = { [this.#username]: user.name };
    if (user.groups.length > 0) set[this.#group] = [...user.groups];
    return { isIdentityHeader: this.isIdentityHeader, set };
  }
}
