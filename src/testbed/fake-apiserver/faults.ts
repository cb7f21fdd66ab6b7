/**
 * The request-level faults that tests switch on at run time: hanging requests, delayed response
 * headers, 429 responses, 403 and 404 responses for chosen paths and a failing readiness check.
 * Connection-level faults (GOAWAY, refused streams, destroyed sessions) act on sessions and live in
 * the server itself.
 */

export class RequestFaults {
  ready = true;
  refuseStreams = false;
  goawayAfterEachResponse = false;
  private hangPrefix: string | null = null;
  private headerDelay: { ms: number; pathPrefix: string } | null = null;
  private tooManyRequests: { fraction: number; retryAfterSeconds: number } | null = null;
  /** Path prefixes that get 403, each for one user or, without one, for every user. */
  private readonly forbidden: Array<{ pathPrefix: string; user: string | undefined }> = [];
  private readonly notFoundPrefixes = new Set<string>();

  // Accumulates the 429 fraction so that exactly `fraction` of the requests are rejected, in a
  // repeatable pattern, rather than a random sample that makes test counts flaky.
  private tooManyRequestsCredit = 0;

  setHang(pathPrefix: string | null): void {
    this.hangPrefix = pathPrefix;
  }

  setHeaderDelay(ms: number, pathPrefix: string): void {
    this.headerDelay = ms > 0 ? { ms, pathPrefix } : null;
  }

  setTooManyRequests(fraction: number, retryAfterSeconds: number): void {
    if (!(fraction >= 0 && fraction <= 1)) {
      throw new RangeError(`429 fraction must be between 0 and 1, got ${fraction}`);
    }
    this.tooManyRequests = fraction > 0 ? { fraction, retryAfterSeconds } : null;
    this.tooManyRequestsCredit = 0;
  }

  addForbidden(pathPrefix: string, user: string | undefined): void {
    this.forbidden.push({ pathPrefix, user });
  }

  clearForbidden(): void {
    this.forbidden.length = 0;
  }

  isForbidden(path: string, user: string): boolean {
    return this.forbidden.some((rule) => path.startsWith(rule.pathPrefix) && (rule.user === undefined || rule.user === user));
  }

  setNotFound(pathPrefix: string | null): void {
    if (pathPrefix === null) {
      this.notFoundPrefixes.clear();
      return;
    }
    this.notFoundPrefixes.add(pathPrefix);
  }

  isNotFound(path: string): boolean {
    return [...this.notFoundPrefixes].some((prefix) => path.startsWith(prefix));
  }

  shouldHang(path: string): boolean {
    return this.hangPrefix !== null && path.startsWith(this.hangPrefix);
  }

  headerDelayFor(path: string): number {
    return this.headerDelay !== null && path.startsWith(this.headerDelay.pathPrefix) ? this.headerDelay.ms : 0;
  }

  /** Returns the Retry-After seconds when this request is to be rejected with 429, else undefined. */
  takeTooManyRequests(): number | undefined {
    if (this.tooManyRequests === null) {
      return undefined;
    }
    this.tooManyRequestsCredit += this.tooManyRequests.fraction;
    if (this.tooManyRequestsCredit < 1 - 1e-9) {
      return undefined;
    }
    this.tooManyRequestsCredit -= 1;
    return this.tooManyRequests.retryAfterSeconds;
  }
}
