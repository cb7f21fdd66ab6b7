import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { isHostname } from '../config/address.js';
import { describeError, errorCode } from '../errors.js';
import { parseEndpoint, type Endpoint } from '../upstream/endpoint.js';
import { endpointAtAddress } from './endpoint-address.js';

export const STATE_FILE_NAME = 'endpoints.json';

const FORMAT_VERSION = 1;

/**
 * One saved endpoint: the origin it dials and, for an address resolved from a host name, that
 * name, which stays its TLS server name. Server names are not saved: upstream.tls.serverName of
 * the next start applies.
 */
interface SavedEndpoint {
  url: string;
  hostName?: string;
}

interface StateDocument {
  version: number;
  savedAt: string;
  endpoints: SavedEndpoint[];
}

/**
 * The last known endpoints, kept in stateDir/endpoints.json so that a restart can dial the
 * replicas it knew even when the load balancer, DNS or the API is the part that is broken.
 * Writes are atomic (a temporary file in the same directory, renamed over the old one) and the
 * file has mode 0600. A missing, unreadable or corrupt file is logged and ignored, never fatal.
 */
export class EndpointStateFile {
  readonly path: string;
  readonly #log: Logger;
  readonly #serverNameOverride: string;
  #writes: Promise<void> = Promise.resolve();

  constructor(stateDir: string, serverNameOverride: string, log: Logger) {
    this.path = path.join(stateDir, STATE_FILE_NAME);
    this.#serverNameOverride = serverNameOverride;
    this.#log = log;
  }

  /** Reads the saved endpoints; returns [] when there are none or the file cannot be used. */
  async load(): Promise<Endpoint[]> {
    let text: string;
    try {
      text = await fs.readFile(this.path, 'utf8');
    } catch (err) {
      if (errorCode(err) === 'ENOENT') {
        this.#log.debug({ path: this.path }, 'no saved endpoints yet');
      } else {
        this.#log.warn({ path: this.path, err: describeError(err) }, 'cannot read the saved endpoints; ignoring them');
      }
      return [];
    }

    try {
      const endpoints = this.#parse(text);
      this.#log.info({ path: this.path, endpoints: endpoints.map((endpoint) => endpoint.id) }, 'loaded the saved endpoints');
      return endpoints;
    } catch (err) {
      this.#log.warn({ path: this.path, err: describeError(err) }, 'the saved endpoints file is corrupt; ignoring it');
      return [];
    }
  }

  /**
   * Replaces the saved endpoints. Writes run one after another, in call order, so the file always
   * ends with the latest list. Resolves when this list is written, or the write failed (logged).
   */
  save(endpoints: readonly Endpoint[]): Promise<void> {
    const document: StateDocument = {
      version: FORMAT_VERSION,
      savedAt: new Date().toISOString(),
      endpoints: endpoints.map((endpoint) => (endpoint.connectHost !== undefined ? { url: endpoint.id, hostName: endpoint.host } : { url: endpoint.id })),
    };
    this.#writes = this.#writes.then(() => this.#write(`${JSON.stringify(document, null, 2)}\n`));
    return this.#writes;
  }

  async #write(text: string): Promise<void> {
    const directory = path.dirname(this.path);
    const temporary = path.join(directory, `.${STATE_FILE_NAME}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);

    try {
      await fs.mkdir(directory, { recursive: true, mode: 0o700 });
      const handle = await fs.open(temporary, 'wx', 0o600);
      try {
        await handle.writeFile(text, 'utf8');
        await handle.sync();
      } finally {
        await handle.close();
      }
      await fs.rename(temporary, this.path);
      await syncDirectory(directory);
    } catch (err) {
      await fs.rm(temporary, { force: true }).catch(() => undefined);
      this.#log.warn({ path: this.path, err: describeError(err) }, 'cannot save the endpoints; the next start uses only the configured ones');
    }
  }

  #parse(text: string): Endpoint[] {
    const document = JSON.parse(text) as Partial<StateDocument> | null;
    if (typeof document !== 'object' || document === null || Array.isArray(document)) throw new Error('the file is not a JSON object');
    if (document.version !== FORMAT_VERSION) throw new Error(`version ${JSON.stringify(document.version)} is not ${FORMAT_VERSION}`);
    if (!Array.isArray(document.endpoints)) throw new Error('"endpoints" is not a list');

    return document.endpoints.map((entry: unknown, index) => {
      const saved = entry as Partial<SavedEndpoint> | null;
      if (typeof saved !== 'object' || saved === null || typeof saved.url !== 'string') throw new Error(`endpoints[${index}] has no "url"`);
      const endpoint = this.#endpointOf(saved.url, saved.hostName);
      if (endpoint === undefined) throw new Error(`endpoints[${index}] is not a valid endpoint: ${JSON.stringify(entry)}`);
      return endpoint;
    });
  }

  #endpointOf(url: string, hostName: unknown): Endpoint | undefined {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return undefined;
    }
    if (parsed.protocol !== 'https:' || parsed.pathname !== '/' || parsed.search !== '' || parsed.username !== '') return undefined;

    const endpoint = parseEndpoint(url, this.#serverNameOverride);
    if (endpoint.id !== url) return undefined;
    if (hostName === undefined) return endpoint;

    if (typeof hostName !== 'string' || !isHostname(hostName) || net.isIP(endpoint.host) === 0) return undefined;
    const named = parseEndpoint(`https://${hostName}:${endpoint.port}`, this.#serverNameOverride);
    return endpointAtAddress(named, endpoint.host);
  }
}

/** Makes the rename durable; some file systems cannot fsync a directory, which is not an error here. */
async function syncDirectory(directory: string): Promise<void> {
  try {
    const handle = await fs.open(directory, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // The rename itself succeeded; only its durability across a power loss is uncertain.
  }
}
