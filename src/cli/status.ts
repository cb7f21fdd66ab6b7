import http from 'node:http';
import { isLoopbackHost, parseHostPort, type HostPort } from '../config/address.js';
import { loadConfig } from '../config/load.js';
import { CONFIG_KEY_BY_PATH } from '../config/schema.js';
import { ConfigError, describeError } from '../errors.js';
import type { EndpointStatus, StateDocument } from '../metrics/state.js';
import { formatConfigError } from './run.js';

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

// /state is built from memory, so a stallguard that does not respond within this is not healthy either.
const REQUEST_TIMEOUT_MS = 5000;
const LAST_ERROR_WIDTH = 70;
// Matches the certificate-expiry alert, so the table and the alert agree on "soon".
const EXPIRY_WARNING_MS = 72 * 3600 * 1000;

export interface StatusOptions {
  configFile: string | undefined;
  metricsAddress: string | undefined;
  output: 'table' | 'json';
}

export interface StatusDependencies {
  env: NodeJS.ProcessEnv;
  write(text: string): void;
  writeError(text: string): void;
}

/** The address to read /state from, and where it came from, for error messages. */
export interface StatusTarget {
  host: string;
  port: number;
  /** Origin of the address, for messages: "--metrics-address", the config file, or the default. */
  source: string;
}

class StatusUsageError extends Error {}
class StatusTargetError extends Error {}

/**
 * Runs `stallguard status`: reads /state from a running stallguard's metrics address and prints it
 * as a table, or as the raw JSON document with `--output json`. Returns the exit status: 0 when the
 * state was printed, 1 when it could not be read, 2 on a usage error.
 */
export async function runStatusCommand(argv: string[], deps: StatusDependencies): Promise<number> {
  let options: StatusOptions;
  let target: StatusTarget;
  try {
    options = parseStatusArgs(argv);
    target = resolveStatusTarget(options, deps.env);
  } catch (err) {
    if (err instanceof StatusUsageError) {
      deps.writeError(`${err.message}\n`);
      return EXIT_USAGE;
    }
    if (err instanceof ConfigError) {
      deps.writeError(formatConfigError(err));
      return EXIT_FAILED;
    }
    if (err instanceof StatusTargetError) {
      deps.writeError(`${err.message}\n`);
      return EXIT_FAILED;
    }
    throw err;
  }

  let document: StateDocument;
  try {
    document = await fetchState(target);
  } catch (err) {
    deps.writeError(`${describeFetchFailure(target, err)}\n`);
    return EXIT_FAILED;
  }

  if (options.output === 'json') deps.write(`${JSON.stringify(document, null, 2)}\n`);
  else deps.write(renderStatusTable(document, `${formatHostPort(target)}`));
  return EXIT_OK;
}

/** Parses the status flags; `--flag value` and `--flag=value` are both accepted. */
export function parseStatusArgs(argv: string[]): StatusOptions {
  const options: StatusOptions = { configFile: undefined, metricsAddress: undefined, output: 'table' };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const equals = arg.indexOf('=');
    const name = arg.startsWith('--') && equals > 0 ? arg.slice(0, equals) : arg;
    const inline = arg.startsWith('--') && equals > 0 ? arg.slice(equals + 1) : undefined;
    const value = (): string => {
      if (inline !== undefined) return inline;
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new StatusUsageError(`${name} needs a value; run "stallguard help" for the options`);
      i++;
      return next;
    };

    switch (name) {
      case '--config':
        options.configFile = value();
        break;
      case '--metrics-address':
        options.metricsAddress = value();
        break;
      case '--output': {
        const output = value();
        if (output !== 'table' && output !== 'json') throw new StatusUsageError(`--output ${JSON.stringify(output)} is not supported; use table or json`);
        options.output = output;
        break;
      }
      default:
        throw new StatusUsageError(
          `unknown option ${JSON.stringify(arg)} for status; it takes --config FILE, --metrics-address host:port and --output table|json`,
        );
    }
  }
  return options;
}

/**
 * Picks the address to read /state from. An address given with --metrics-address is used as is.
 * One taken from the configuration must be a loopback address: a wildcard (0.0.0.0, ::) is read
 * on loopback, and any other host needs --metrics-address, so that the command never reaches
 * another machine unless the user named it.
 */
export function resolveStatusTarget(options: StatusOptions, env: NodeJS.ProcessEnv): StatusTarget {
  if (options.metricsAddress !== undefined) {
    const address = parseAddress(options.metricsAddress, '--metrics-address');
    if (address.port === 0) throw new StatusUsageError('--metrics-address has port 0; give the port stallguard listens on');
    return { ...address, source: '--metrics-address' };
  }

  let text = String(CONFIG_KEY_BY_PATH.get('metrics.address')!.default);
  let source = 'the default metrics.address';
  if (options.configFile !== undefined) {
    text = loadConfig({ argv: ['--config', options.configFile], env }).config.metrics.address;
    source = `metrics.address in ${options.configFile}`;
  }

  const address = parseAddress(text, source);
  if (address.port === 0) {
    throw new StatusTargetError(
      `${source} is ${text}: port 0 is chosen by the system at start; pass --metrics-address with the address stallguard logged as "metrics" when it started`,
    );
  }
  if (address.host === '0.0.0.0') return { host: '127.0.0.1', port: address.port, source };
  if (address.host === '::') return { host: '::1', port: address.port, source };
  if (!isLoopbackHost(address.host)) {
    throw new StatusTargetError(
      `${source} is ${text}, which is not a loopback address; stallguard status reads another host only when you name it: pass --metrics-address ${text}`,
    );
  }
  return { ...address, source };
}

function parseAddress(text: string, source: string): HostPort {
  try {
    return parseHostPort(text);
  } catch (err) {
    throw new StatusUsageError(`${source} ${JSON.stringify(text)} ${(err as Error).message}`);
  }
}

function formatHostPort(target: HostPort): string {
  return target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}

/** GETs /state and parses it. Rejects on a connection error, a timeout, a status other than 200 or invalid JSON. */
function fetchState(target: StatusTarget): Promise<StateDocument> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: target.host, port: target.port, path: '/state', timeout: REQUEST_TIMEOUT_MS, headers: { accept: 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) {
          reject(new Error(`/state responded with HTTP ${res.statusCode}: ${body.trim().slice(0, 200)}`));
          return;
        }
        try {
          resolve(parseStateDocument(body));
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no response within ${REQUEST_TIMEOUT_MS}ms`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
  });
}

function parseStateDocument(body: string): StateDocument {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new Error('/state did not return JSON; is this address a stallguard metrics address?');
  }
  const document = parsed as Partial<StateDocument>;
  if (typeof parsed !== 'object' || parsed === null || !Array.isArray(document.endpoints) || typeof document.version !== 'string') {
    throw new Error('/state returned JSON without "version" and "endpoints"; is this address a stallguard metrics address?');
  }
  return parsed as StateDocument;
}

function describeFetchFailure(target: StatusTarget, err: unknown): string {
  const address = formatHostPort(target);
  const code = (err as NodeJS.ErrnoException).code;
  const fix =
    target.source === '--metrics-address'
      ? 'check that stallguard is running there and that --metrics-address matches its metrics.address'
      : `check that stallguard is running, or pass --metrics-address host:port (or --config FILE) naming its metrics.address`;

  if (code === 'ECONNREFUSED') return `stallguard is not reachable at ${address} (from ${target.source}): connection refused; ${fix}`;
  if (code === 'ETIMEDOUT') return `stallguard is not reachable at ${address} (from ${target.source}): no response within ${REQUEST_TIMEOUT_MS}ms; ${fix}`;
  if (code !== undefined) return `stallguard is not reachable at ${address} (from ${target.source}): ${describeError(err)}; ${fix}`;
  return `failed to read the state of stallguard at ${address}: ${describeError(err)}`;
}

/** Renders the state document as text a person can read at a glance. */
export function renderStatusTable(document: StateDocument, address: string): string {
  const now = Date.parse(document.generatedAt);
  const readyCount = document.endpoints.filter((endpoint) => endpoint.state === 'ready').length;
  const lines: string[] = [];

  const uptime = formatDuration(now - Date.parse(document.startedAt));
  const verdict = document.ready ? `READY (${readyCount} of ${document.endpoints.length} endpoints ready)` : `NOT READY: ${document.notReadyReason ?? 'no endpoint is ready'}`;
  lines.push(`stallguard ${document.version} at ${address}, up ${uptime}: ${verdict}`, '');

  const header = ['ENDPOINT', 'STATE', 'SINCE', 'PING RTT', 'SESSIONS', 'STREAMS', 'WATCHES', 'LAST ERROR'];
  const rows = document.endpoints.map((endpoint) => endpointRow(endpoint, now));
  lines.push(...formatColumns([header, ...rows]), '');

  if (document.identity !== null) {
    lines.push(`Identity: ${document.identity.subject} (upstream client certificate, expires ${describeExpiry(document.identity.notAfter, now)})`);
  } else {
    lines.push('Identity: none (no upstream client certificate; requests carry their own credentials)');
  }

  if (document.certificates.length > 0) {
    lines.push('Certificates:');
    const certificateRows = document.certificates.map((certificate) => [`  ${certificate.role}`, `expires ${describeExpiry(certificate.notAfter, now)}`, certificate.path]);
    lines.push(...formatColumns(certificateRows));
  }

  const { evictions, retries, rejected } = document.totals;
  lines.push(
    '',
    'Totals since start:',
    `  evictions: ${evictions.total}${breakdown(evictions.byReason)}`,
    `  retries:   ${retries.byOutcome['retried'] ?? 0} retried${breakdown(retries.byOutcome, 'retried')}`,
    `  rejected:  ${rejected.total}${breakdown(rejected.byReason)}`,
    `  requests:  ${document.totals.requests}; open now: ${document.activeRequests} requests, ${document.activeWatches} watches, ${document.tunnels} tunnels`,
  );
  return `${lines.join('\n')}\n`;
}

function endpointRow(endpoint: EndpointStatus, now: number): string[] {
  const sessions = endpoint.sessions.filter((session) => session.state !== 'closed').length;
  let lastError = '-';
  if (endpoint.lastError !== undefined) {
    const age = formatDuration(now - Date.parse(endpoint.lastError.at));
    lastError = truncate(`${age} ago: ${endpoint.lastError.message}`, LAST_ERROR_WIDTH);
  }

  return [
    endpoint.endpoint,
    endpoint.state,
    `${formatDuration(now - Date.parse(endpoint.since))} ago`,
    endpoint.rttMs === undefined ? '-' : formatMilliseconds(endpoint.rttMs),
    String(sessions),
    String(endpoint.activeStreams),
    endpoint.activeWatches === null ? '-' : String(endpoint.activeWatches),
    lastError,
  ];
}

function describeExpiry(notAfter: string, now: number): string {
  const remaining = Date.parse(notAfter) - now;
  const date = notAfter.replace(/\.\d{3}Z$/, 'Z');
  if (remaining <= 0) return `${date}, EXPIRED ${formatDuration(-remaining)} ago`;
  const warning = remaining < EXPIRY_WARNING_MS ? ' (EXPIRES SOON)' : '';
  return `${date}, in ${formatDuration(remaining)}${warning}`;
}

function breakdown(values: Record<string, number>, skip?: string): string {
  const parts = Object.entries(values)
    .filter(([key, value]) => value > 0 && key !== skip)
    .sort((a, b) => b[1] - a[1])
    .map(([key, value]) => `${key} ${value}`);
  return parts.length > 0 ? ` (${parts.join(', ')})` : '';
}

/** Pads each column to its widest cell; the last column is not padded. */
function formatColumns(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd());
}

function truncate(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 1)}…`;
}

/** Formats a duration in ms as its two largest units: 850ms, 12s, 3m20s, 5h2m, 29d23h. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  if (ms < 1000) return `${Math.round(ms)}ms`;

  const seconds = Math.floor(ms / 1000);
  const units: Array<[string, number]> = [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ];
  const parts: string[] = [];
  let rest = seconds;
  for (const [name, size] of units) {
    const count = Math.floor(rest / size);
    rest -= count * size;
    if (count > 0 || parts.length > 0) parts.push(`${count}${name}`);
    if (parts.length === 2) break;
  }
  return parts.join('').replace(/^(\d+[dhm])0[hms]$/, '$1');
}

function formatMilliseconds(ms: number): string {
  return ms < 10 ? `${ms.toFixed(2)}ms` : `${Math.round(ms)}ms`;
}
