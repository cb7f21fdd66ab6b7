import dns from 'node:dns/promises';
import type { Logger } from 'pino';
import { describeError } from '../errors.js';
import type { Endpoint } from '../upstream/endpoint.js';
import { endpointAtAddress } from './endpoint-address.js';

/** One address of a host name, as dns.lookup returns it. */
export interface LookupAddress {
  address: string;
  family: number;
}

/** Resolves a host name to every address; rejects when the name does not resolve. */
export type LookupFunction = (hostname: string) => Promise<LookupAddress[]>;

/**
 * The system resolver, as every other program on the node uses it: getaddrinfo(3) through
 * dns.lookup, so /etc/hosts and nsswitch.conf count, which dns.resolve* (DNS queries only) would
 * ignore.
 */
export const systemLookup: LookupFunction = (hostname) => dns.lookup(hostname, { all: true });

export interface DnsSourceOptions {
  /** Configured endpoints whose host is a name; IP endpoints need no lookup. */
  endpoints: readonly Endpoint[];
  lookup: LookupFunction;
  intervalMs: number;
  /** How long one lookup may take before the round counts it as failed. */
  timeoutMs: number;
  log: Logger;
  /** Called with a configured endpoint and one endpoint per address, when the addresses changed. */
  onResolved(configured: Endpoint, resolved: Endpoint[]): void;
}

/**
 * Per host name: the addresses of the last successful lookup, whether lookups fail now, and the
 * lookup still running, if any.
 */
interface NameState {
  addresses: string[] | undefined;
  failing: boolean;
  pending: Promise<void> | undefined;
}

/**
 * Resolves the host names of the configured endpoints every `intervalMs`. Each address is an
 * endpoint of its own. A failed or empty lookup keeps the addresses found before: a resolver that
 * is down says nothing about the API servers.
 */
export class DnsSource {
  readonly #options: DnsSourceOptions;
  readonly #names = new Map<string, NameState>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(options: DnsSourceOptions) {
    this.#options = options;
    for (const endpoint of options.endpoints) {
      this.#names.set(endpoint.host, { addresses: undefined, failing: false, pending: undefined });
    }
  }

  /** Looks up every name once; resolves when each lookup has finished or timed out, never rejects. */
  async resolveAll(): Promise<void> {
    await Promise.all([...this.#names.keys()].map((name) => this.#resolve(name)));
  }

  /** Starts the periodic lookups; the first comes after one interval. */
  start(): void {
    if (this.#names.size === 0 || this.#stopped) return;
    this.#schedule();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #schedule(): void {
    this.#timer = setTimeout(() => {
      void this.resolveAll().then(() => {
        if (!this.#stopped) this.#schedule();
      });
    }, this.#options.intervalMs);
    this.#timer.unref();
  }

  /**
   * One lookup of one name. A lookup still running from an earlier round is not started again:
   * getaddrinfo cannot be cancelled and occupies a libuv thread-pool thread, so lookups piling up
   * behind a dead resolver would stall file I/O too.
   */
  #resolve(name: string): Promise<void> {
    const state = this.#names.get(name)!;
    if (state.pending !== undefined) return Promise.resolve();

    const lookup = this.#options.lookup(name).then(
      (found) => this.#onAnswer(name, found),
      (err: unknown) => this.#onFailure(name, describeError(err)),
    );
    const pending = lookup.finally(() => {
      state.pending = undefined;
    });
    state.pending = pending;

    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#onFailure(name, `no answer within ${this.#options.timeoutMs}ms`);
        resolve();
      }, this.#options.timeoutMs);
      timer.unref();
      void pending.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  #onAnswer(name: string, found: LookupAddress[]): void {
    if (this.#stopped) return;
    const addresses = [...new Set(found.map((entry) => entry.address))];
    if (addresses.length === 0) {
      this.#onFailure(name, 'the resolver returned no address');
      return;
    }

    const state = this.#names.get(name)!;
    const changed = state.addresses === undefined || !sameSet(state.addresses, addresses);
    const recovered = state.failing;
    state.failing = false;
    state.addresses = addresses;

    if (changed) {
      this.#options.log.info({ host: name, addresses }, 'host name resolved');
      for (const configured of this.#options.endpoints) {
        if (configured.host !== name) continue;
        this.#options.onResolved(
          configured,
          addresses.map((address) => endpointAtAddress(configured, address)),
        );
      }
    } else if (recovered) {
      this.#options.log.info({ host: name, addresses }, 'host name resolves again');
    }
  }

  #onFailure(name: string, reason: string): void {
    if (this.#stopped) return;
    const state = this.#names.get(name)!;
    if (state.failing) return;

    state.failing = true;
    this.#options.log.warn(
      { host: name, err: reason, addresses: state.addresses ?? [] },
      state.addresses === undefined
        ? 'host name lookup failed; its endpoints are dialled by name until it resolves'
        : 'host name lookup failed; keeping the addresses found before',
    );
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((entry) => b.includes(entry));
}
