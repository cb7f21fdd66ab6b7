/**
 * Reloads the upstream TLS material when its files change, as they do when kubelet rotates its
 * client certificate: kubelet writes kubelet-client-<timestamp>.pem and then swaps the
 * kubelet-client-current.pem symlink over to it with a rename.
 *
 * Two triggers start a check: fs.watch on every directory involved (the configured paths' and
 * their symlink targets'), and a timer every few seconds, because fs.watch misses events on some
 * file systems and after a watched directory is replaced. A check reads the files (a few KiB,
 * through any symlink) and hashes them. Only content whose SHA-256 differs from the material in
 * use is reloaded. Content that was rejected is not tried again until it changes, so a broken file
 * is logged once and not every few seconds. Comparing content rather than mtime also catches a
 * symlink swapped to a file with an older mtime.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { UpstreamConfig } from '../config/types.js';
import { ConfigError, describeError } from '../errors.js';
import {
  buildUpstreamTlsMaterial,
  readUpstreamTlsFiles,
  type LoadedUpstreamCertificate,
  type UpstreamTlsMaterial,
} from './upstream-material.js';

export type ReloadOutcome = 'success' | 'rejected';

export interface UpstreamTlsReloaderOptions {
  tls: UpstreamConfig['tls'];
  log: Logger;
  /** Receives the new material after each successful reload; typically pool.setTlsMaterial. */
  onMaterial(material: UpstreamTlsMaterial): void;
  /** Counts each reload attempt by outcome; the initial load is not a reload. */
  onReload?(outcome: ReloadOutcome): void;
  /** Time between two periodic checks of the files; 5 s unless given. */
  pollIntervalMs?: number;
  /** Delay from a file-system event to the check, so that a write in several steps settles; 200 ms unless given. */
  settleMs?: number;
  /** Time between two expiry warnings; one hour unless given. */
  expiryWarningIntervalMs?: number;
}

const DEFAULT_POLL_INTERVAL_MS = 5000;
const DEFAULT_SETTLE_MS = 200;
const DEFAULT_EXPIRY_WARNING_INTERVAL_MS = 60 * 60 * 1000;

/**
 * Owns the upstream TLS material: loads it at construction (throwing ConfigError when it is
 * unusable), and after start() reloads it on every change. A rejected reload leaves the previous
 * material in use.
 */
export class UpstreamTlsReloader {
  readonly #options: UpstreamTlsReloaderOptions;
  readonly #log: Logger;
  readonly #paths: string[];
  #material: UpstreamTlsMaterial;
  #certificates: LoadedUpstreamCertificate[];
  /** Content hash of the material in use. */
  #appliedHash: string;
  /** Content hash, or the problems of an unreadable file, of the last rejected check. */
  #rejectedKey: string | undefined;
  /** Each configured path resolved through symlinks; undefined while the file is missing. */
  #realpaths = new Map<string, string | undefined>();
  readonly #watchers = new Map<string, fs.FSWatcher>();
  #pollTimer: NodeJS.Timeout | undefined;
  #settleTimer: NodeJS.Timeout | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  #running = false;

  constructor(options: UpstreamTlsReloaderOptions) {
    this.#options = options;
    this.#log = options.log;
    const { ca, cert, key } = options.tls;
    this.#paths = [...new Set([ca, cert, key].filter((file) => file !== ''))];

    this.#realpaths = this.#resolveAll();
    const { files, problems } = readUpstreamTlsFiles(options.tls);
    if (problems.length > 0) throw new ConfigError(problems);
    const loaded = buildUpstreamTlsMaterial(options.tls, files);
    if (!loaded.ok) throw new ConfigError(loaded.problems);

    this.#material = loaded.material;
    this.#certificates = loaded.certificates;
    this.#appliedHash = hashFiles(files);
    this.#logLoaded('certificate loaded');
    this.#warnExpiring();
  }

  /** Returns the material in use now. */
  current(): UpstreamTlsMaterial {
    return this.#material;
  }

  /** Returns the certificates of the material in use, with their expiry. */
  certificates(): LoadedUpstreamCertificate[] {
    return [...this.#certificates];
  }

  /** Subject of the upstream client certificate in use; undefined when none is configured. */
  clientSubject(): { commonName: string | undefined; organizations: string[] } | undefined {
    const client = this.#certificates.find((certificate) => certificate.role === 'upstream-client');
    return client === undefined ? undefined : { commonName: client.commonName, organizations: [...client.organizations] };
  }

  /** Starts the file watches, the periodic check and the hourly expiry warning. */
  start(): void {
    if (this.#running || this.#paths.length === 0) return;
    this.#running = true;

    this.#refreshWatchers();
    this.#pollTimer = setInterval(() => this.check(), this.#options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS);
    this.#pollTimer.unref();
    this.#expiryTimer = setInterval(() => this.#warnExpiring(), this.#options.expiryWarningIntervalMs ?? DEFAULT_EXPIRY_WARNING_INTERVAL_MS);
    this.#expiryTimer.unref();
  }

  stop(): void {
    this.#running = false;
    clearInterval(this.#pollTimer);
    clearInterval(this.#expiryTimer);
    clearTimeout(this.#settleTimer);
    for (const watcher of this.#watchers.values()) watcher.close();
    this.#watchers.clear();
  }

  /**
   * Reads the files now and reloads them if their content changed. Returns `unchanged` when the
   * content is the material in use or the content rejected last time.
   */
  check(): ReloadOutcome | 'unchanged' {
    this.#realpaths = this.#resolveAll();
    if (this.#running) this.#refreshWatchers();

    const { files, problems } = readUpstreamTlsFiles(this.#options.tls);
    const key = problems.length > 0 ? `unreadable: ${problems.join('; ')}` : hashFiles(files);
    if (key === this.#appliedHash) {
      // Back to the material in use (a broken file was restored): a later breakage is news again.
      this.#rejectedKey = undefined;
      return 'unchanged';
    }
    if (key === this.#rejectedKey) return 'unchanged';
    if (problems.length > 0) return this.#reject(problems, key);

    const loaded = buildUpstreamTlsMaterial(this.#options.tls, files);
    if (!loaded.ok) return this.#reject(loaded.problems, key);

    this.#material = loaded.material;
    this.#certificates = loaded.certificates;
    this.#appliedHash = key;
    this.#rejectedKey = undefined;
    this.#logLoaded('certificate reloaded');
    this.#warnExpiring();
    this.#options.onMaterial(loaded.material);
    this.#options.onReload?.('success');
    return 'success';
  }

  #reject(problems: string[], key: string): ReloadOutcome {
    this.#rejectedKey = key;
    this.#log.warn({ reason: problems.join('; '), files: this.#paths }, 'TLS material reload rejected; the previous material stays in use');
    this.#options.onReload?.('rejected');
    return 'rejected';
  }

  #resolveAll(): Map<string, string | undefined> {
    const realpaths = new Map<string, string | undefined>();
    for (const file of this.#paths) {
      try {
        realpaths.set(file, fs.realpathSync(file));
      } catch {
        realpaths.set(file, undefined);
      }
    }
    return realpaths;
  }

  /** Watches the directory of every configured path and of every symlink target, and drops the rest. */
  #refreshWatchers(): void {
    const wanted = new Set<string>();
    for (const file of this.#paths) {
      wanted.add(path.dirname(path.resolve(file)));
      const realpath = this.#realpaths.get(file);
      if (realpath !== undefined) wanted.add(path.dirname(realpath));
    }

    for (const [directory, watcher] of this.#watchers) {
      if (wanted.has(directory)) continue;
      watcher.close();
      this.#watchers.delete(directory);
    }
    for (const directory of wanted) {
      if (this.#watchers.has(directory)) continue;
      try {
        const watcher = fs.watch(directory, { persistent: false }, () => this.#scheduleCheck());
        watcher.on('error', (err) => {
          // The periodic check still covers this directory, and the next check watches it again.
          this.#log.debug({ directory, err: describeError(err) }, 'file watch failed');
          watcher.close();
          this.#watchers.delete(directory);
        });
        this.#watchers.set(directory, watcher);
      } catch (err) {
        this.#log.debug({ directory, err: describeError(err) }, 'file watch failed');
      }
    }
  }

  #scheduleCheck(): void {
    if (!this.#running || this.#settleTimer !== undefined) return;
    this.#settleTimer = setTimeout(() => {
      this.#settleTimer = undefined;
      if (this.#running) this.check();
    }, this.#options.settleMs ?? DEFAULT_SETTLE_MS);
    this.#settleTimer.unref();
  }

  #logLoaded(message: string): void {
    for (const certificate of this.#certificates) {
      this.#log.info(
        {
          role: certificate.role,
          path: certificate.path,
          subject: certificate.subject,
          serialNumber: certificate.serialNumber,
          notAfter: certificate.notAfter.toISOString(),
        },
        message,
      );
    }
  }

  #warnExpiring(): void {
    const now = Date.now();
    for (const certificate of this.#certificates) {
      const remainingMs = certificate.notAfter.getTime() - now;
      if (remainingMs > this.#options.tls.expiryWarningMs) continue;

      const fields = { role: certificate.role, path: certificate.path, subject: certificate.subject, notAfter: certificate.notAfter.toISOString() };
      if (remainingMs <= 0) this.#log.warn(fields, 'certificate expired');
      else this.#log.warn({ ...fields, remainingHours: Math.floor(remainingMs / 3_600_000) }, 'certificate expires soon');
    }
  }
}

// Hashes path and content of every file in a fixed order, so that the same files give the same hash.
function hashFiles(files: ReadonlyMap<string, Buffer>): string {
  const hash = createHash('sha256');
  for (const file of [...files.keys()].sort()) {
    hash.update(file).update('\0').update(files.get(file)!).update('\0');
  }
  return hash.digest('hex');
}
