import type { Logger } from 'pino';
import { describeError } from '../errors.js';
import { ensureLocalServingMaterial, type LocalServingMaterial } from './local-ca.js';

export interface ServingRenewalOptions {
  stateDir: string;
  /** The material the listener serves now, as ensureLocalServingMaterial returned it at start. */
  initial: LocalServingMaterial;
  log: Logger;
  /** Receives new material after a renewal; the listener swaps its secure context with it. */
  onRenewed(material: LocalServingMaterial): void;
  /** Time between two checks; one day unless given. */
  intervalMs?: number;
}

const DEFAULT_INTERVAL_MS = 24 * 60 * 60 * 1000;

/**
 * Renews the generated serving certificate of the local listener without a restart. Once a day it
 * runs ensureLocalServingMaterial, which reissues the certificate 30 days before it expires (and
 * recreates whatever is missing or broken in stateDir/tls/), and passes any new material on.
 */
export class ServingCertificateRenewer {
  readonly #options: ServingRenewalOptions;
  #current: LocalServingMaterial;
  #timer: NodeJS.Timeout | undefined;
  #checking: Promise<boolean> | undefined;

  constructor(options: ServingRenewalOptions) {
    this.#options = options;
    this.#current = options.initial;
  }

  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => void this.check(), this.#options.intervalMs ?? DEFAULT_INTERVAL_MS);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Checks the material now; resolves true when it was renewed. Failures are logged, never thrown. */
  check(): Promise<boolean> {
    this.#checking ??= this.#renewIfNeeded().finally(() => {
      this.#checking = undefined;
    });
    return this.#checking;
  }

  async #renewIfNeeded(): Promise<boolean> {
    const { log } = this.#options;
    let material: LocalServingMaterial;
    try {
      material = await ensureLocalServingMaterial(this.#options.stateDir);
    } catch (err) {
      log.warn({ err: describeError(err) }, 'serving certificate renewal failed; the current certificate stays in use');
      return false;
    }
    if (!material.generated && material.certPem === this.#current.certPem) return false;

    if (material.caPem !== this.#current.caPem) {
      log.warn({ ca: material.caPath }, 'local CA was recreated; clients must trust the new CA (run "stallguard kubeconfig" again)');
    }
    log.info({ cert: material.certPath }, 'serving certificate renewed');
    this.#current = material;
    try {
      this.#options.onRenewed(material);
    } catch (err) {
      log.error({ err: describeError(err) }, 'serving certificate swap failed; the listener keeps its current certificate');
    }
    return true;
  }
}
