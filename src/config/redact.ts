import yaml from 'js-yaml';
import { formatDuration } from './duration.js';
import { CONFIG_KEYS, type ConfigKeySpec, type FileConfig } from './schema.js';
import { formatSize } from './size.js';
import type { Config } from './types.js';

export const REDACTED = '[redacted]';

/** Converts the typed Config back into file form: durations and sizes as strings. */
export function toFileForm(config: Config): FileConfig {
  return {
    mode: config.mode,
    listen: {
      address: config.listen.address,
      allowRemote: config.listen.allowRemote,
      allowAnonymous: config.listen.allowAnonymous,
      tls: { ...config.listen.tls },
      plaintext: config.listen.plaintext,
    },
    upstream: {
      endpoints: [...config.upstream.endpoints],
      fallback: [...config.upstream.fallback],
      discovery: config.upstream.discovery,
      resolveInterval: formatDuration(config.upstream.resolveIntervalMs),
      tls: {
        ca: config.upstream.tls.ca,
        cert: config.upstream.tls.cert,
        key: config.upstream.tls.key,
        serverName: config.upstream.tls.serverName,
        insecureSkipVerify: config.upstream.tls.insecureSkipVerify,
        expiryWarning: formatDuration(config.upstream.tls.expiryWarningMs),
      },
      identity: config.upstream.identity,
      frontProxy: { ...config.upstream.frontProxy },
      connectTimeout: formatDuration(config.upstream.connectTimeoutMs),
      reconnectBackoff: {
        base: formatDuration(config.upstream.reconnectBackoff.baseMs),
        max: formatDuration(config.upstream.reconnectBackoff.maxMs),
      },
      maxSessionsPerEndpoint: config.upstream.maxSessionsPerEndpoint,
      warmEndpoints: config.upstream.warmEndpoints,
    },
    health: {
      pingInterval: formatDuration(config.health.pingIntervalMs),
      pingTimeout: formatDuration(config.health.pingTimeoutMs),
      writeFreshness: formatDuration(config.health.writeFreshnessMs),
      readyPath: config.health.readyPath,
      readyInterval: formatDuration(config.health.readyIntervalMs),
      ejectionTime: formatDuration(config.health.ejectionTimeMs),
      maxEjectionTime: formatDuration(config.health.maxEjectionTimeMs),
      maxEjectionPercent: config.health.maxEjectionPercent,
    },
    retry: {
      maxAttempts: config.retry.maxAttempts,
      budget: formatDuration(config.retry.budgetMs),
      maxBodyBytes: formatSize(config.retry.maxBodyBytes),
    },
    metrics: { address: config.metrics.address },
    log: { level: config.log.level },
    shutdown: { drainTimeout: formatDuration(config.shutdown.drainTimeoutMs) },
    stateDir: config.stateDir,
  };
}

/**
 * Returns the effective configuration in file form with every sensitive value replaced by
 * "[redacted]", even an empty one, so that the output does not reveal whether a secret is set.
 * `keys` defaults to the stallguard schema.
 */
export function redactConfig(config: Config, keys: readonly ConfigKeySpec[] = CONFIG_KEYS): FileConfig {
  const fileForm = toFileForm(config) as unknown as Record<string, unknown>;

  for (const spec of keys) {
    if (!spec.sensitive) {
      continue;
    }
    const segments = spec.path.split('.');
    const leaf = segments.pop()!;
    let section = fileForm;
    for (const segment of segments) {
      section = section[segment] as Record<string, unknown>;
    }
    section[leaf] = REDACTED;
  }
  return fileForm as unknown as FileConfig;
}

/** Renders the redacted effective configuration as YAML in the file form that `--config` reads. */
export function renderConfigYaml(config: Config, keys: readonly ConfigKeySpec[] = CONFIG_KEYS): string {
  return yaml.dump(redactConfig(config, keys), { lineWidth: -1, noRefs: true });
}
