import convict from 'convict';
import { isIP } from 'node:net';
import { isAbsolute } from 'node:path';
import { AddressSyntaxError, isHostname, parseHostPort } from './address.js';
import { DurationSyntaxError, parseDuration } from './duration.js';
import { SizeSyntaxError, parseSize } from './size.js';

/**
 * One reason a value is invalid. `message` completes the sentence `<key>: <value> ...` and ends with
 * what to write instead. `value` and `subkey` narrow the report to one list entry when only that
 * entry is invalid.
 */
export interface Finding {
  message: string;
  value?: unknown;
  subkey?: string;
}

/** One configuration key: how it is documented, validated and read from each layer. */
export interface ConfigKeySpec {
  /** Dotted path in the file, e.g. "health.pingInterval". */
  path: string;
  /** Description of the setting and its unit, printed by `stallguard help`. */
  doc: string;
  /** Placeholder for the value in help text, e.g. "<duration>". */
  unit: string;
  /** Default in file form: durations and sizes as strings. */
  default: unknown;
  /** Returns every reason the value is invalid, or [] when it is valid. */
  check(value: unknown): Finding[];
  /** Converts text from an environment variable or a flag into the file form of the value. */
  coerce(text: string): unknown;
  /** Secret value: replaced by "[redacted]" in rendered configuration and validation messages. */
  sensitive: boolean;
  /** Environment variable: STALLGUARD_ and the path in upper snake case. */
  env: string;
  /** Command-line flag: -- and the path in kebab case. */
  flag: string;
}

type KeyDefinition = Omit<ConfigKeySpec, 'env' | 'flag' | 'sensitive' | 'coerce'> & {
  coerce?: (text: string) => unknown;
  sensitive?: boolean;
};

// Value checks. Each returns the findings for one value, so that validation can report every
// invalid key in one pass instead of stopping at the first.

function checkDuration(minimumMs: number): (value: unknown) => Finding[] {
  return (value) => {
    if (typeof value === 'number' || (typeof value === 'string' && /^\s*[+-]?\d+(\.\d*)?\s*$/.test(value))) {
      return [{ message: 'is not a duration; write it with a unit, e.g. "1s" or "500ms"' }];
    }
    if (typeof value !== 'string') {
      return [{ message: 'is not a duration; write it as a string with a unit, e.g. "1s" or "500ms"' }];
    }

    let milliseconds: number;
    try {
      milliseconds = parseDuration(value);
    } catch (err) {
      if (err instanceof DurationSyntaxError) {
        return [{ message: err.message }];
      }
      throw err;
    }

    if (milliseconds < minimumMs) {
      return [{ message: minimumMs === 1 ? 'must be longer than 0s; write e.g. "1s"' : `must be at least ${minimumMs}ms` }];
    }
    return [];
  };
}

function checkBoolean(value: unknown): Finding[] {
  return typeof value === 'boolean' ? [] : [{ message: 'is not a boolean; write true or false' }];
}

function coerceBoolean(text: string): unknown {
  const lower = text.trim().toLowerCase();
  if (lower === 'true') {
    return true;
  }
  if (lower === 'false') {
    return false;
  }
  // Left as text so that the check reports it, instead of convict's rule that any text but "false" is true.
  return text;
}

function checkInteger(minimum: number): (value: unknown) => Finding[] {
  return (value) => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
      return [{ message: `is not an integer; write a whole number of at least ${minimum}, e.g. ${Math.max(minimum, 3)}` }];
    }
    if (value < minimum) {
      return [{ message: `is below the minimum; write a whole number of at least ${minimum}` }];
    }
    return [];
  };
}

function checkPercent(value: unknown): Finding[] {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || value > 100) {
    return [{ message: 'is not a percentage; write a whole number from 0 to 100, e.g. 50' }];
  }
  return [];
}

function checkReadyPath(value: unknown): Finding[] {
  if (typeof value !== 'string' || !value.startsWith('/') || /\s/.test(value)) {
    return [{ message: 'is not an absolute request path; write one that starts with "/", e.g. "/readyz"' }];
  }
  return [];
}

function coerceInteger(text: string): unknown {
  return /^\s*[+-]?\d+\s*$/.test(text) ? Number(text) : text;
}

function checkSize(value: unknown): Finding[] {
  try {
    parseSize(value);
    return [];
  } catch (err) {
    if (err instanceof SizeSyntaxError) {
      return [{ message: err.message }];
    }
    throw err;
  }
}

function coerceSize(text: string): unknown {
  return /^\s*\d+\s*$/.test(text) ? Number(text) : text;
}

function checkAddress(options: { optional: boolean }): (value: unknown) => Finding[] {
  return (value) => {
    if (typeof value !== 'string') {
      return [{ message: 'is not a host:port address; write it as a string, e.g. "127.0.0.1:7446"' }];
    }
    if (value === '' && options.optional) {
      return [];
    }

    try {
      parseHostPort(value);
      return [];
    } catch (err) {
      if (err instanceof AddressSyntaxError) {
        return [{ message: err.message }];
      }
      throw err;
    }
  };
}

function checkFilePath(value: unknown): Finding[] {
  // Whether the file exists is checked with the other rules in rules.ts, after every key is read.
  return typeof value === 'string' ? [] : [{ message: 'is not a file path; write the path as a string, or "" to leave it unset' }];
}

function checkStateDir(value: unknown): Finding[] {
  if (typeof value !== 'string' || !isAbsolute(value)) {
    return [{ message: 'is not an absolute directory path; write e.g. "/var/lib/stallguard"' }];
  }
  return [];
}

function checkServerName(value: unknown): Finding[] {
  if (typeof value !== 'string') {
    return [{ message: 'is not a host name; write it as a string, e.g. "kubernetes.default.svc", or "" to use the endpoint host' }];
  }
  if (value === '' || isHostname(value) || isIP(value) !== 0) {
    return [];
  }
  return [{ message: 'is not a DNS name or IP address; write the name on the API server certificate, e.g. "kubernetes.default.svc"' }];
}

function checkOneOf(allowed: readonly string[]): (value: unknown) => Finding[] {
  return (value) =>
    typeof value === 'string' && allowed.includes(value)
      ? []
      : [{ message: `is not one of ${allowed.map((name) => `"${name}"`).join(', ')}; write one of them` }];
}

// RFC 9110 token characters, the only ones a header field name may contain.
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

function checkHeaderName(value: unknown): Finding[] {
  if (typeof value !== 'string' || !HEADER_NAME.test(value)) {
    return [{ message: 'is not an HTTP header name; write letters, digits and hyphens, e.g. "X-Remote-User"' }];
  }
  return [];
}

function checkMode(value: unknown): Finding[] {
  if (value === 'tcp') {
    return [{ message: 'selects tcp mode, which is not implemented yet; use mode: http2' }];
  }
  return checkOneOf(['http2', 'tcp'])(value);
}

function coerceList(text: string): unknown {
  return text
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
}

// An empty upstream.endpoints is valid on its own when upstream.fallback is set; rules.ts reports
// the case where both are empty.
function checkEndpoints(value: unknown): Finding[] {
  if (!Array.isArray(value)) {
    return [{ message: 'is not a list; write a list of https:// URLs, e.g. ["https://10.0.0.10:6443"]' }];
  }

  const findings: Finding[] = [];
  const seen = new Set<string>();
  value.forEach((entry: unknown, index) => {
    const problem = describeEndpointProblem(entry);
    if (problem !== undefined) {
      findings.push({ subkey: `[${index}]`, value: entry, message: problem });
      return;
    }

    const normalized = normalizeEndpoint(entry as string);
    if (seen.has(normalized)) {
      findings.push({ subkey: `[${index}]`, value: entry, message: 'is listed twice; remove the duplicate' });
    }
    seen.add(normalized);
  });
  return findings;
}

/** Returns why `entry` is not an acceptable endpoint URL, or undefined when it is acceptable. */
function describeEndpointProblem(entry: unknown): string | undefined {
  if (typeof entry !== 'string') {
    return 'is not a URL; write it as a string, e.g. "https://10.0.0.10:6443"';
  }
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(entry)) {
    return `is not a URL; add the scheme, e.g. "https://${entry}"`;
  }

  let url: URL;
  try {
    url = new URL(entry);
  } catch {
    return 'is not a valid URL; write it as https://HOST or https://HOST:PORT, e.g. "https://10.0.0.10:6443"';
  }

  if (url.protocol !== 'https:') {
    return `uses ${url.protocol.slice(0, -1)}; stallguard reaches the API server over TLS only, so write "https://${url.host}"`;
  }
  if (url.username !== '' || url.password !== '') {
    return 'contains user information; remove the "user@" part and give client credentials in upstream.tls.cert and upstream.tls.key';
  }
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') {
    return `has a path, query or fragment; stallguard forwards each request path unchanged, so write only "https://${url.host}"`;
  }
  return undefined;
}

/**
 * Returns an endpoint URL in the form `https://host:port`, with the default port 443 written out,
 * so that two spellings of one endpoint compare equal and the port is always explicit.
 */
export function normalizeEndpoint(entry: string): string {
  const url = new URL(entry);
  return `https://${url.hostname}:${url.port === '' ? '443' : url.port}`;
}

function identity(text: string): unknown {
  return text;
}

/** Every configuration key, in the order of the documented file. */
const KEY_DEFINITIONS: KeyDefinition[] = [
  {
    path: 'mode',
    doc: 'Proxy mode: "http2" terminates and re-originates HTTP/2 streams; "tcp" is not implemented yet.',
    unit: '<http2|tcp>',
    default: 'http2',
    check: checkMode,
  },
  {
    path: 'listen.address',
    doc: 'host:port of the TLS listener that kubelet connects to; loopback only unless listen.allowRemote is true.',
    unit: '<host:port>',
    default: '127.0.0.1:7446',
    check: checkAddress({ optional: false }),
  },
  {
    path: 'listen.allowRemote',
    doc: 'Allow listen.address to be a non-loopback address, so that other hosts can connect.',
    unit: '<bool>',
    default: false,
    check: checkBoolean,
    coerce: coerceBoolean,
  },
  {
    path: 'listen.allowAnonymous',
    doc: 'Admit requests that carry neither a verified client certificate nor a bearer token; they travel upstream as the identity in upstream.tls.cert (front-proxy mode: as anonymous).',
    unit: '<bool>',
    default: false,
    check: checkBoolean,
    coerce: coerceBoolean,
  },
  {
    path: 'listen.tls.cert',
    doc: 'Path to the PEM certificate chain of the TLS listener; set together with listen.tls.key.',
    unit: '<path>',
    default: '',
    check: checkFilePath,
  },
  {
    path: 'listen.tls.key',
    doc: 'Path to the PEM private key of the TLS listener; set together with listen.tls.cert.',
    unit: '<path>',
    default: '',
    check: checkFilePath,
  },
  {
    path: 'listen.tls.clientCA',
    doc: 'Path to the PEM bundle of CAs that sign the client certificates the TLS listener accepts.',
    unit: '<path>',
    default: '',
    check: checkFilePath,
  },
  {
    path: 'listen.plaintext',
    doc: 'host:port of an optional plaintext listener (HTTP/1.1 and h2c), always loopback only; "" disables it.',
    unit: '<host:port>',
    default: '',
    check: checkAddress({ optional: true }),
  },
  {
    path: 'upstream.endpoints',
    doc: 'https:// URLs of the API servers or their load balancer (port 443 if omitted); a host name stands for each of its addresses; comma-separated in flags and environment.',
    unit: '<url,...>',
    default: [],
    check: checkEndpoints,
    coerce: coerceList,
  },
  {
    path: 'upstream.fallback',
    doc: 'https:// URLs used only while no other endpoint is ready, typically the load balancer; comma-separated in flags and environment.',
    unit: '<url,...>',
    default: [],
    check: checkEndpoints,
    coerce: coerceList,
  },
  {
    path: 'upstream.discovery',
    doc: 'Where more replicas come from: "endpointslices" reads and watches the kubernetes Service\'s EndpointSlices in the default namespace; "none" uses only the configured endpoints.',
    unit: '<none|endpointslices>',
    default: 'none',
    check: checkOneOf(['none', 'endpointslices']),
  },
  {
    path: 'upstream.resolveInterval',
    doc: 'Duration between DNS lookups of the host names in upstream.endpoints; each address found is an endpoint of its own.',
    unit: '<duration>',
    default: '30s',
    check: checkDuration(1000),
  },
  {
    path: 'upstream.tls.ca',
    doc: 'Path to the PEM bundle of CAs that verify the API server certificate; "" uses the Node.js default CAs.',
    unit: '<path>',
    default: '',
    check: checkFilePath,
  },
  {
    path: 'upstream.tls.cert',
    doc: 'Path to the PEM client certificate presented to the API server; set together with upstream.tls.key.',
    unit: '<path>',
    default: '',
    check: checkFilePath,
  },
  {
    path: 'upstream.tls.key',
    doc: 'Path to the PEM private key of the upstream client certificate; set together with upstream.tls.cert.',
    unit: '<path>',
    default: '',
    check: checkFilePath,
  },
  {
    path: 'upstream.tls.serverName',
    doc: 'Name checked against the API server certificate (SNI); "" uses the host of each endpoint.',
    unit: '<name>',
    default: '',
    check: checkServerName,
  },
  {
    path: 'upstream.tls.insecureSkipVerify',
    doc: 'Skip verification of the API server certificate; for tests only, never in production.',
    unit: '<bool>',
    default: false,
    check: checkBoolean,
    coerce: coerceBoolean,
  },
  {
    path: 'upstream.tls.expiryWarning',
    doc: 'Duration before a loaded certificate expires from which stallguard logs a warning once an hour (an expired one too).',
    unit: '<duration>',
    default: '72h',
    check: checkDuration(1),
  },
  {
    path: 'upstream.identity',
    doc: 'Whom requests without a bearer token act as upstream: "static" (the identity in upstream.tls.cert) or "front-proxy" (each local client\'s own certificate identity, sent in headers).',
    unit: '<static|front-proxy>',
    default: 'static',
    check: checkOneOf(['static', 'front-proxy']),
  },
  {
    path: 'upstream.frontProxy.usernameHeader',
    doc: 'Header that carries the local client\'s user name (certificate CN) in front-proxy mode; kube-apiserver --requestheader-username-headers.',
    unit: '<header>',
    default: 'X-Remote-User',
    check: checkHeaderName,
  },
  {
    path: 'upstream.frontProxy.groupHeader',
    doc: 'Header that carries the local client\'s groups (certificate O, one header each) in front-proxy mode; kube-apiserver --requestheader-group-headers.',
    unit: '<header>',
    default: 'X-Remote-Group',
    check: checkHeaderName,
  },
  {
    path: 'upstream.frontProxy.extraHeaderPrefix',
    doc: 'Prefix of the headers that carry extra user attributes; stallguard sets none, and removes every client-sent one in every mode.',
    unit: '<prefix>',
    default: 'X-Remote-Extra-',
    check: checkHeaderName,
  },
  {
    path: 'upstream.connectTimeout',
    doc: 'Duration within which TCP, TLS and the first SETTINGS of a new session must complete.',
    unit: '<duration>',
    default: '2s',
    check: checkDuration(1),
  },
  {
    path: 'upstream.reconnectBackoff.base',
    doc: 'Duration of the first delay before reconnecting to a failed endpoint; later delays grow up to max.',
    unit: '<duration>',
    default: '250ms',
    check: checkDuration(1),
  },
  {
    path: 'upstream.reconnectBackoff.max',
    doc: 'Duration that caps the reconnect delay; must be at least reconnectBackoff.base.',
    unit: '<duration>',
    default: '5s',
    check: checkDuration(1),
  },
  {
    path: 'upstream.maxSessionsPerEndpoint',
    doc: 'Maximum number of HTTP/2 sessions (connections) open to one endpoint.',
    unit: '<int>',
    default: 8,
    check: checkInteger(1),
    coerce: coerceInteger,
  },
  {
    path: 'upstream.warmEndpoints',
    doc: 'Number of endpoints that always keep a live session, so a failover never waits for a TCP and TLS handshake.',
    unit: '<int>',
    default: 2,
    check: checkInteger(1),
    coerce: coerceInteger,
  },
  {
    path: 'health.pingInterval',
    doc: 'Duration without reading anything on a session after which a PING is sent.',
    unit: '<duration>',
    default: '1s',
    check: checkDuration(1),
  },
  {
    path: 'health.pingTimeout',
    doc: 'Duration to wait for a PING ACK before the session is evicted; must be below retry.budget.',
    unit: '<duration>',
    default: '1s',
    check: checkDuration(1),
  },
  {
    path: 'health.writeFreshness',
    doc: 'Duration since the last successful read within which a session counts as fresh for a new stream.',
    unit: '<duration>',
    default: '250ms',
    check: checkDuration(0),
  },
  {
    path: 'health.readyPath',
    doc: 'Path of the readiness probe sent to each endpoint on its existing session.',
    unit: '<path>',
    default: '/readyz',
    check: checkReadyPath,
  },
  {
    path: 'health.readyInterval',
    doc: 'Duration between readiness probes of one endpoint (shortened by up to 20 % at random).',
    unit: '<duration>',
    default: '10s',
    check: checkDuration(100),
  },
  {
    path: 'health.ejectionTime',
    doc: 'Duration an endpoint stays ejected after a local-origin failure, multiplied by the ejections in a row.',
    unit: '<duration>',
    default: '5s',
    check: checkDuration(1),
  },
  {
    path: 'health.maxEjectionTime',
    doc: 'Duration that caps one ejection; must be at least health.ejectionTime.',
    unit: '<duration>',
    default: '60s',
    check: checkDuration(1),
  },
  {
    path: 'health.maxEjectionPercent',
    doc: 'Maximum share of endpoints, in percent, that may be ejected at once.',
    unit: '<percent>',
    default: 50,
    check: checkPercent,
    coerce: coerceInteger,
  },
  {
    path: 'retry.maxAttempts',
    doc: 'Maximum number of times one request is sent, counting the first attempt.',
    unit: '<int>',
    default: 3,
    check: checkInteger(1),
    coerce: coerceInteger,
  },
  {
    path: 'retry.budget',
    doc: 'Duration from the first attempt after which a request is no longer retried.',
    unit: '<duration>',
    default: '10s',
    check: checkDuration(1),
  },
  {
    path: 'retry.maxBodyBytes',
    doc: 'Largest request body, in bytes or with a unit (512KiB, 1MiB, 4MB), buffered so that the request can be replayed.',
    unit: '<size>',
    default: '1MiB',
    check: checkSize,
    coerce: coerceSize,
  },
  {
    path: 'metrics.address',
    doc: 'host:port of the Prometheus /metrics and health endpoints.',
    unit: '<host:port>',
    default: '127.0.0.1:9464',
    check: checkAddress({ optional: false }),
  },
  {
    path: 'log.level',
    doc: 'Lowest pino level that is logged: trace, debug, info, warn, error, fatal or silent.',
    unit: '<level>',
    default: 'info',
    check: checkOneOf(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']),
  },
  {
    path: 'shutdown.drainTimeout',
    doc: 'Duration that in-flight requests get to finish after SIGTERM before sessions are closed.',
    unit: '<duration>',
    default: '10s',
    check: checkDuration(0),
  },
  {
    path: 'stateDir',
    doc: 'Absolute path of the directory where stallguard keeps state across restarts.',
    unit: '<dir>',
    default: '/var/lib/stallguard',
    check: checkStateDir,
  },
];

function toUpperSnake(segment: string): string {
  return segment.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

function toKebab(segment: string): string {
  return segment.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();
}

/**
 * Every configuration key, with its environment variable and flag. No key contains a secret today:
 * TLS keys are named by file path, and no key file is read while loading the configuration. A key
 * that does contain a secret must set `sensitive`, which redact.ts and the validation messages honour.
 */
export const CONFIG_KEYS: readonly ConfigKeySpec[] = KEY_DEFINITIONS.map((definition) => ({
  ...definition,
  coerce: definition.coerce ?? identity,
  sensitive: definition.sensitive ?? false,
  env: `STALLGUARD_${definition.path.split('.').map(toUpperSnake).join('_')}`,
  flag: `--${definition.path.split('.').map(toKebab).join('-')}`,
}));

export const CONFIG_KEY_BY_PATH: ReadonlyMap<string, ConfigKeySpec> = new Map(CONFIG_KEYS.map((spec) => [spec.path, spec]));

/**
 * The configuration in file form, as the file, the environment and the flags write it: durations
 * and sizes are still strings. load.ts converts it into the typed Config.
 */
export interface FileConfig {
  mode: string;
  listen: {
    address: string;
    allowRemote: boolean;
    allowAnonymous: boolean;
    tls: { cert: string; key: string; clientCA: string };
    plaintext: string;
  };
  upstream: {
    endpoints: string[];
    fallback: string[];
    discovery: string;
    resolveInterval: string;
    tls: { ca: string; cert: string; key: string; serverName: string; insecureSkipVerify: boolean; expiryWarning: string };
    identity: string;
    frontProxy: { usernameHeader: string; groupHeader: string; extraHeaderPrefix: string };
    connectTimeout: string;
    reconnectBackoff: { base: string; max: string };
    maxSessionsPerEndpoint: number;
    warmEndpoints: number;
  };
  health: {
    pingInterval: string;
    pingTimeout: string;
    writeFreshness: string;
    readyPath: string;
    readyInterval: string;
    ejectionTime: string;
    maxEjectionTime: string;
    maxEjectionPercent: number;
  };
  retry: { maxAttempts: number; budget: string; maxBodyBytes: number | string };
  metrics: { address: string };
  log: { level: string };
  shutdown: { drainTimeout: string };
  stateDir: string;
}

let formatsRegistered = false;

/**
 * Registers one convict format per key. convict keeps formats in a module-wide registry, and a
 * named format is the only way to give a key its own coercion for environment text, so each key
 * gets the name "stallguard:<path>".
 */
function registerFormats(): void {
  if (formatsRegistered) {
    return;
  }

  for (const spec of CONFIG_KEYS) {
    convict.addFormat({
      name: formatName(spec),
      validate(value: unknown) {
        const findings = spec.check(value);
        if (findings.length > 0) {
          throw new Error(findings.map((finding) => finding.message).join('; '));
        }
      },
      coerce: (text: string) => spec.coerce(text),
    });
  }
  formatsRegistered = true;
}

function formatName(spec: ConfigKeySpec): string {
  return `stallguard:${spec.path}`;
}

/** Builds the nested convict schema from CONFIG_KEYS. */
export function buildConvictSchema(): convict.Schema<FileConfig> {
  registerFormats();

  const schema: Record<string, unknown> = {};
  for (const spec of CONFIG_KEYS) {
    const segments = spec.path.split('.');
    const leafName = segments.pop()!;

    let section = schema;
    for (const segment of segments) {
      section[segment] ??= {};
      section = section[segment] as Record<string, unknown>;
    }
    section[leafName] = {
      doc: spec.doc,
      default: spec.default,
      format: formatName(spec),
      env: spec.env,
      sensitive: spec.sensitive,
    };
  }
  return schema as convict.Schema<FileConfig>;
}
