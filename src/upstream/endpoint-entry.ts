import type { Endpoint } from './endpoint.js';
import type { EndpointHealth } from './endpoint-health.js';
import type { UpstreamIdentity } from './identity.js';
import type { UpstreamSession } from './session.js';

/**
 * The sessions of one (endpoint, identity) pair and the dialling state for it. `failures` counts
 * consecutive dial failures and session losses; it sets the backoff and resets on a successful dial.
 */
export class SessionGroup {
  readonly sessions: UpstreamSession[] = [];
  dialing: Promise<UpstreamSession> | undefined;
  failures = 0;
  nextDialAt = 0;
  redialTimer: NodeJS.Timeout | undefined;

  constructor(readonly identity: UpstreamIdentity) {}

  get open(): UpstreamSession[] {
    return this.sessions.filter((session) => session.state !== 'closed');
  }
}

export class EndpointEntry {
  /** Removed endpoints drain and leave the list once their last session has closed. */
  removed = false;
  readonly groups = new Map<UpstreamIdentity, SessionGroup>([
    ['client-cert', new SessionGroup('client-cert')],
    ['anonymous', new SessionGroup('anonymous')],
  ]);
  probeTimer: NodeJS.Timeout | undefined;
  ejectionTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly health: EndpointHealth,
    readonly role: 'primary' | 'fallback',
  ) {}

  get endpoint(): Endpoint {
    return this.health.endpoint;
  }

  group(identity: UpstreamIdentity): SessionGroup {
    return this.groups.get(identity)!;
  }

  allSessions(): UpstreamSession[] {
    return [...this.groups.values()].flatMap((group) => group.sessions);
  }

  hasReadySession(): boolean {
    return this.allSessions().some((session) => session.state === 'ready');
  }
}
