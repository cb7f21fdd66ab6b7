import convict from 'convict';
import yaml from 'js-yaml';
import { readFileSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { ConfigError, describeError, errorCode } from '../errors.js';
import { parseDuration } from './duration.js';
import { parseFlags } from './flags.js';
import { checkRules } from './rules.js';
import { CONFIG_KEYS, CONFIG_KEY_BY_PATH, buildConvictSchema, normalizeEndpoint, type FileConfig } from './schema.js';
import { parseSize } from './size.js';
import { suggestClosest } from './suggest.js';
import type { Config } from './types.js';

/** The layer that set a key's effective value. Later layers win: flag > env > file > default. */
export type ValueSource = 'default' | 'file' | 'env' | 'flag';

export interface LoadedConfig {
  config: Config;
  /** The layer that set each key, by dotted path. */
  sources: Record<string, ValueSource>;
  /** Absolute path of the file named by --config, or null when none was given. */
  configFile: string | null;
  /** Problems that do not stop startup, such as an unknown STALLGUARD_ environment variable. */
  warnings: string[];
}

/**
 * Loads the configuration from the defaults, the file named by `--config` (YAML or JSON), the
 * STALLGUARD_* environment variables and the flags in `argv`, which must not include the command
 * name. Validates every key and the rules between keys, and throws ConfigError listing every
 * problem found, each with the key, the value, where it was set and how to fix it.
 */
export function loadConfig(input: { argv: string[]; env: NodeJS.ProcessEnv }): LoadedConfig {
  const flags = parseFlags(input.argv);
  const configFile = flags.configFile === null ? null : resolve(flags.configFile);
  const problems = [...flags.problems];

  let fileValues = new Map<string, unknown>();
  if (configFile !== null) {
    const read = readConfigFile(configFile);
    if ('problem' in read) {
      throw new ConfigError([...problems, read.problem]);
    }
    const flattened = flattenFileValues(read.document, configFile);
    fileValues = flattened.values;
    problems.push(...flattened.problems);
  }

  // convict applies the environment over the loaded file itself; flags go on last.
  const store = convict(buildConvictSchema(), { env: input.env, args: [] });
  store.load(nest(fileValues));
  for (const [path, { text }] of flags.values) {
    store.set(path, CONFIG_KEY_BY_PATH.get(path)!.coerce(text));
  }

  const sources: Record<string, ValueSource> = {};
  for (const spec of CONFIG_KEYS) {
    sources[spec.path] = flags.values.has(spec.path)
      ? 'flag'
      : input.env[spec.env] !== undefined
        ? 'env'
        : fileValues.has(spec.path)
          ? 'file'
          : 'default';
  }

  const describeSource = (path: string): string => {
    const spec = CONFIG_KEY_BY_PATH.get(path)!;
    switch (sources[path]) {
      case 'flag':
        return ` (set by ${flags.values.get(path)!.flag})`;
      case 'env':
        return ` (set by ${spec.env})`;
      case 'file':
        return ` (set in ${configFile})`;
      default:
        return '';
    }
  };
  const render = (path: string, value: unknown): string =>
    CONFIG_KEY_BY_PATH.get(path)!.sensitive ? '[redacted]' : JSON.stringify(value);

  const file = store.getProperties() as FileConfig;
  const invalidKeys = new Set<string>();
  for (const spec of CONFIG_KEYS) {
    const value = store.get(spec.path as never) as unknown;
    for (const finding of spec.check(value)) {
      invalidKeys.add(spec.path);
      const shown = 'value' in finding ? finding.value : value;
      problems.push(`${spec.path}${finding.subkey ?? ''}: ${render(spec.path, shown)} ${finding.message}${describeSource(spec.path)}`);
    }
  }

  for (const violation of checkRules(file, invalidKeys)) {
    problems.push(`${violation.key}: ${render(violation.key, violation.value)} ${violation.message}${describeSource(violation.key)}`);
  }

  if (problems.length > 0) {
    throw new ConfigError(problems);
  }
  return { config: toConfig(file), sources, configFile, warnings: findUnknownEnvironment(input.env) };
}

type ReadResult = { document: unknown } | { problem: string };

function readConfigFile(path: string): ReadResult {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') {
      return { problem: `config file "${path}" does not exist; check the --config path` };
    }
    return { problem: `config file "${path}" cannot be read (${describeError(err)}); check the --config path and its permissions` };
  }

  const isJson = extname(path).toLowerCase() === '.json' || text.trimStart().startsWith('{');
  try {
    // CORE_SCHEMA reads YAML 1.2 scalars only, so "yes" stays a string and dates stay text.
    const document = isJson ? JSON.parse(text) : yaml.load(text, { filename: path, schema: yaml.CORE_SCHEMA });
    return { document: document ?? {} };
  } catch (err) {
    const format = isJson ? 'JSON' : 'YAML';
    return { problem: `config file "${path}" is not valid ${format}: ${describeError(err)}` };
  }
}

/**
 * Flattens the parsed file into values by dotted key path. Unknown keys, and sections written as a
 * scalar or a list, become problems; everything else is kept for validation by the key checks.
 */
function flattenFileValues(document: unknown, configFile: string): { values: Map<string, unknown>; problems: string[] } {
  const values = new Map<string, unknown>();
  const problems: string[] = [];
  const sections = new Set<string>();
  for (const spec of CONFIG_KEYS) {
    const segments = spec.path.split('.');
    for (let length = 1; length < segments.length; length += 1) {
      sections.add(segments.slice(0, length).join('.'));
    }
  }

  const visit = (node: unknown, prefix: string): void => {
    // A section whose keys are all commented out parses as null; it means "all defaults".
    if (node === null) {
      return;
    }
    if (!isPlainObject(node)) {
      const where = prefix === '' ? 'the top level' : prefix;
      const expected = CONFIG_KEYS.filter((spec) => spec.path.startsWith(prefix === '' ? '' : `${prefix}.`))
        .map((spec) => spec.path.slice(prefix === '' ? 0 : prefix.length + 1).split('.')[0]);
      problems.push(
        `${where}: ${JSON.stringify(node)} in ${configFile} is not a mapping; write the keys ${[...new Set(expected)].join(', ')} under it`,
      );
      return;
    }

    for (const [name, child] of Object.entries(node)) {
      const path = prefix === '' ? name : `${prefix}.${name}`;
      if (CONFIG_KEY_BY_PATH.has(path)) {
        values.set(path, child);
      } else if (sections.has(path)) {
        visit(child, path);
      } else {
        problems.push(describeUnknownKey(path, configFile, [...sections, ...CONFIG_KEY_BY_PATH.keys()]));
      }
    }
  };

  visit(document, '');
  return { values, problems };
}

// `known` contains section paths too, so that a misspelled section ("metricz:") finds "metrics".
function describeUnknownKey(path: string, configFile: string, known: readonly string[]): string {
  const suggestion = suggestClosest(path, known);
  const hint = suggestion === undefined ? 'run "stallguard help" to list the keys' : `did you mean "${suggestion}"?`;
  return `${path}: unknown key in ${configFile}; ${hint}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// Rebuilds a nested object from dotted paths, for convict's load().
function nest(values: Map<string, unknown>): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const [path, value] of values) {
    const segments = path.split('.');
    const leaf = segments.pop()!;
    let section = root;
    for (const segment of segments) {
      section[segment] ??= {};
      section = section[segment] as Record<string, unknown>;
    }
    section[leaf] = value;
  }
  return root;
}

function findUnknownEnvironment(env: NodeJS.ProcessEnv): string[] {
  const known = CONFIG_KEYS.map((spec) => spec.env);
  return Object.keys(env)
    .filter((name) => name.startsWith('STALLGUARD_') && !known.includes(name))
    .map((name) => {
      const suggestion = suggestClosest(name, known);
      const hint = suggestion === undefined ? 'it is ignored' : `it is ignored; did you mean ${suggestion}?`;
      return `environment variable ${name} is not a stallguard setting; ${hint}`;
    });
}

/** Converts a validated file-form configuration into the typed Config, with durations in ms. */
function toConfig(file: FileConfig): Config {
  return {
    mode: file.mode as Config['mode'],
    listen: {
      address: file.listen.address,
      allowRemote: file.listen.allowRemote,
      allowAnonymous: file.listen.allowAnonymous,
      tls: { ...file.listen.tls },
      plaintext: file.listen.plaintext,
    },
    upstream: {
      endpoints: file.upstream.endpoints.map(normalizeEndpoint),
      fallback: file.upstream.fallback.map(normalizeEndpoint),
      discovery: file.upstream.discovery as Config['upstream']['discovery'],
      resolveIntervalMs: parseDuration(file.upstream.resolveInterval),
      tls: {
        ca: file.upstream.tls.ca,
        cert: file.upstream.tls.cert,
        key: file.upstream.tls.key,
        serverName: file.upstream.tls.serverName,
        insecureSkipVerify: file.upstream.tls.insecureSkipVerify,
        expiryWarningMs: parseDuration(file.upstream.tls.expiryWarning),
      },
      identity: file.upstream.identity as Config['upstream']['identity'],
      frontProxy: { ...file.upstream.frontProxy },
      connectTimeoutMs: parseDuration(file.upstream.connectTimeout),
      reconnectBackoff: {
        baseMs: parseDuration(file.upstream.reconnectBackoff.base),
        maxMs: parseDuration(file.upstream.reconnectBackoff.max),
      },
      maxSessionsPerEndpoint: file.upstream.maxSessionsPerEndpoint,
      warmEndpoints: file.upstream.warmEndpoints,
    },
    health: {
      pingIntervalMs: parseDuration(file.health.pingInterval),
      pingTimeoutMs: parseDuration(file.health.pingTimeout),
      writeFreshnessMs: parseDuration(file.health.writeFreshness),
      readyPath: file.health.readyPath,
      readyIntervalMs: parseDuration(file.health.readyInterval),
      ejectionTimeMs: parseDuration(file.health.ejectionTime),
      maxEjectionTimeMs: parseDuration(file.health.maxEjectionTime),
      maxEjectionPercent: file.health.maxEjectionPercent,
    },
    retry: {
      maxAttempts: file.retry.maxAttempts,
      budgetMs: parseDuration(file.retry.budget),
      maxBodyBytes: parseSize(file.retry.maxBodyBytes),
    },
    metrics: { address: file.metrics.address },
    log: { level: file.log.level as Config['log']['level'] },
    shutdown: { drainTimeoutMs: parseDuration(file.shutdown.drainTimeout) },
    stateDir: file.stateDir,
  };
}
