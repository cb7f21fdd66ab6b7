import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import yaml from 'js-yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DurationSyntaxError, formatDuration, parseDuration } from '../src/config/duration.js';
import { loadConfig } from '../src/config/load.js';
import { redactConfig, renderConfigYaml } from '../src/config/redact.js';
import { CONFIG_KEYS } from '../src/config/schema.js';
import { formatSize, parseSize } from '../src/config/size.js';
import type { Config } from '../src/config/types.js';
import { runCommand, type RunDependencies } from '../src/cli/run.js';
import { ConfigError } from '../src/errors.js';
import { createLogger, RepeatLimiter } from '../src/log/logger.js';
import type { RunningStallguard } from '../src/server.js';

const ENDPOINT = 'https://127.0.0.1:6443';
let workDir: string;

beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), 'stallguard-config-'));
});

afterAll(() => {
  rmSync(workDir, { recursive: true, force: true });
});

function writeWorkFile(name: string, text: string): string {
  const path = join(workDir, name);
  writeFileSync(path, text);
  return path;
}

/** Returns the problems of the ConfigError that loading throws, failing the test if it loads. */
function problemsOf(argv: string[], env: NodeJS.ProcessEnv = {}): string[] {
  try {
    loadConfig({ argv, env });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error(`expected a ConfigError for ${argv.join(' ')}`);
}

function problemFor(problems: string[], key: string): string {
  const match = problems.find((problem) => problem.startsWith(`${key}:`) || problem.startsWith(`${key}[`));
  expect(match, `no problem for ${key} in:\n${problems.join('\n')}`).toBeDefined();
  return match!;
}

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['2s', 2000],
    ['1m', 60_000],
    ['1h30m', 5_400_000],
    ['1.5s', 1500],
    ['0.1s', 100],
    ['.5s', 500],
    ['1000us', 1],
    ['2000000ns', 2],
    ['1m0.25s', 60_250],
    ['0s', 0],
  ])('reads %s', (text, expected) => {
    expect(parseDuration(text)).toBe(expected);
  });

  it.each([
    ['1', 'write it with a unit'],
    ['0', 'write it with a unit'],
    ['', 'is not a duration'],
    ['-1s', 'is negative'],
    ['1x', 'units h, m, s, ms, us or ns'],
    ['1s 2s', 'units h, m, s, ms, us or ns'],
    ['250us', 'whole number of milliseconds'],
    ['1.0005s', 'whole number of milliseconds'],
    ['600h', 'is too long'],
  ])('rejects %j', (text, expected) => {
    expect(() => parseDuration(text)).toThrow(DurationSyntaxError);
    expect(() => parseDuration(text)).toThrow(expected);
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [1, '1ms'],
    [500, '500ms'],
    [1000, '1s'],
    [1500, '1.5s'],
    [60_000, '1m'],
    [5_400_000, '1h30m'],
    [90_061_500, '25h1m1.5s'],
  ])('writes %d ms as %s', (milliseconds, expected) => {
    expect(formatDuration(milliseconds)).toBe(expected);
    expect(parseDuration(expected)).toBe(milliseconds);
  });

  it('rejects negative and fractional input', () => {
    expect(() => formatDuration(-1)).toThrow(RangeError);
    expect(() => formatDuration(0.5)).toThrow(RangeError);
  });
});

describe('parseSize and formatSize', () => {
  it.each([
    [1_048_576, 1_048_576],
    ['2048', 2048],
    ['512KiB', 524_288],
    ['1MiB', 1_048_576],
    ['1.5MiB', 1_572_864],
    ['4MB', 4_000_000],
    ['1gib', 1_073_741_824],
    ['10B', 10],
  ])('reads %j', (value, expected) => {
    expect(parseSize(value)).toBe(expected);
  });

  it.each([['4XB'], [-1], [1.5], ['MiB'], [true], ['1.0000001MiB']])('rejects %j', (value) => {
    expect(() => parseSize(value)).toThrow('is not');
  });

  it.each([
    [1_048_576, '1MiB'],
    [524_288, '512KiB'],
    [4_000_000, '4MB'],
    [1000, '1KB'],
    [1023, '1023'],
  ])('writes %d as %s', (bytes, expected) => {
    expect(formatSize(bytes)).toBe(expected);
  });
});

describe('schema', () => {
  it('derives environment variables and flags from the key path', () => {
    const byPath = new Map(CONFIG_KEYS.map((spec) => [spec.path, spec]));

    expect(byPath.get('upstream.endpoints')!.env).toBe('STALLGUARD_UPSTREAM_ENDPOINTS');
    expect(byPath.get('health.pingInterval')!.env).toBe('STALLGUARD_HEALTH_PING_INTERVAL');
    expect(byPath.get('upstream.tls.serverName')!.env).toBe('STALLGUARD_UPSTREAM_TLS_SERVER_NAME');
    expect(byPath.get('listen.tls.clientCA')!.env).toBe('STALLGUARD_LISTEN_TLS_CLIENT_CA');
    expect(byPath.get('upstream.tls.serverName')!.flag).toBe('--upstream-tls-server-name');
    expect(byPath.get('listen.allowRemote')!.flag).toBe('--listen-allow-remote');
    expect(byPath.get('listen.tls.clientCA')!.flag).toBe('--listen-tls-client-ca');
  });

  it('documents every key with its default valid', () => {
    for (const spec of CONFIG_KEYS) {
      expect(spec.doc.length, spec.path).toBeGreaterThan(20);
      if (spec.path !== 'upstream.endpoints') {
        expect(spec.check(spec.default), spec.path).toEqual([]);
      }
    }
  });
});

describe('loadConfig layers', () => {
  it('applies defaults with durations in ms', () => {
    const { config, sources } = loadConfig({ argv: ['--upstream-endpoints', ENDPOINT], env: {} });

    expect(config.mode).toBe('http2');
    expect(config.upstream.identity).toBe('static');
    expect(config.upstream.frontProxy).toEqual({ usernameHeader: 'X-Remote-User', groupHeader: 'X-Remote-Group', extraHeaderPrefix: 'X-Remote-Extra-' });
    expect(config.upstream.tls.expiryWarningMs).toBe(72 * 3_600_000);
    expect(config.listen.address).toBe('127.0.0.1:7446');
    expect(config.upstream.connectTimeoutMs).toBe(2000);
    expect(config.upstream.reconnectBackoff).toEqual({ baseMs: 250, maxMs: 5000 });
    expect(config.upstream.fallback).toEqual([]);
    expect(config.upstream.discovery).toBe('none');
    expect(config.upstream.resolveIntervalMs).toBe(30_000);
    expect(config.health).toEqual({
      pingIntervalMs: 1000,
      pingTimeoutMs: 1000,
      writeFreshnessMs: 250,
      readyPath: '/readyz',
      readyIntervalMs: 10_000,
      ejectionTimeMs: 5000,
      maxEjectionTimeMs: 60_000,
      maxEjectionPercent: 50,
    });
    expect(config.retry).toEqual({ maxAttempts: 3, budgetMs: 10_000, maxBodyBytes: 1_048_576 });
    expect(config.shutdown.drainTimeoutMs).toBe(10_000);
    expect(config.stateDir).toBe('/var/lib/stallguard');
    expect(sources['health.pingInterval']).toBe('default');
    expect(sources['upstream.endpoints']).toBe('flag');
  });

  it('ranks flag over env over file over default', () => {
    const file = writeWorkFile(
      'layers.yaml',
      [
        'upstream:',
        `  endpoints: ["${ENDPOINT}"]`,
        'health:',
        '  pingInterval: 2s',
        '  pingTimeout: 2s',
        '  writeFreshness: 2s',
        'retry:',
        '  budget: 20s',
      ].join('\n'),
    );
    const env = {
      STALLGUARD_HEALTH_PING_INTERVAL: '3s',
      STALLGUARD_HEALTH_PING_TIMEOUT: '3s',
      STALLGUARD_UPSTREAM_CONNECT_TIMEOUT: '3s',
    };

    const { config, sources, configFile } = loadConfig({
      argv: ['--config', file, '--health-ping-interval', '4s'],
      env,
    });

    expect(config.health.pingIntervalMs).toBe(4000);
    expect(sources['health.pingInterval']).toBe('flag');
    expect(config.health.pingTimeoutMs).toBe(3000);
    expect(sources['health.pingTimeout']).toBe('env');
    expect(config.health.writeFreshnessMs).toBe(2000);
    expect(sources['health.writeFreshness']).toBe('file');
    expect(config.upstream.connectTimeoutMs).toBe(3000);
    expect(config.retry.maxAttempts).toBe(3);
    expect(sources['retry.maxAttempts']).toBe('default');
    expect(configFile).toBe(resolve(file));
  });

  it('reads JSON by extension and by content', () => {
    const document = JSON.stringify({ upstream: { endpoints: [ENDPOINT] }, retry: { maxBodyBytes: '512KiB' } });
    const byExtension = writeWorkFile('config.json', document);
    const byContent = writeWorkFile('config.conf', document);

    for (const file of [byExtension, byContent]) {
      const { config } = loadConfig({ argv: ['--config', file], env: {} });
      expect(config.retry.maxBodyBytes).toBe(524_288);
      expect(config.upstream.endpoints).toEqual([ENDPOINT]);
    }
  });

  it('reads an empty YAML file as all defaults', () => {
    const file = writeWorkFile('empty.yaml', '# nothing set\n');

    const { config } = loadConfig({ argv: ['--config', file, `--upstream-endpoints=${ENDPOINT}`], env: {} });

    expect(config.health.pingIntervalMs).toBe(1000);
  });

  it('reads an empty section as defaults', () => {
    const file = writeWorkFile('empty-section.yaml', `listen:\n  # address: 127.0.0.2:7446\nupstream:\n  endpoints: ["${ENDPOINT}"]\n`);

    const { config } = loadConfig({ argv: ['--config', file], env: {} });

    expect(config.listen.address).toBe('127.0.0.1:7446');
  });

  it('accepts sizes as integers and with units', () => {
    const asInteger = loadConfig({ argv: ['--upstream-endpoints', ENDPOINT, '--retry-max-body-bytes', '2048'], env: {} });
    const asUnit = loadConfig({ argv: ['--upstream-endpoints', ENDPOINT], env: { STALLGUARD_RETRY_MAX_BODY_BYTES: '4MB' } });

    expect(asInteger.config.retry.maxBodyBytes).toBe(2048);
    expect(asUnit.config.retry.maxBodyBytes).toBe(4_000_000);
  });

  it('splits comma-separated endpoints and normalizes the port', () => {
    const { config } = loadConfig({
      argv: [],
      env: { STALLGUARD_UPSTREAM_ENDPOINTS: 'https://127.0.0.2:6443, https://localhost,https://[::1]:8443' },
    });

    expect(config.upstream.endpoints).toEqual(['https://127.0.0.2:6443', 'https://localhost:443', 'https://[::1]:8443']);
  });

  it('appends repeated endpoint flags', () => {
    const { config } = loadConfig({
      argv: ['--upstream-endpoints', 'https://127.0.0.2', '--upstream-endpoints=https://127.0.0.3'],
      env: {},
    });

    expect(config.upstream.endpoints).toEqual(['https://127.0.0.2:443', 'https://127.0.0.3:443']);
  });

  it('reads boolean flags with and without a value', () => {
    const base = ['--upstream-endpoints', ENDPOINT];

    expect(loadConfig({ argv: [...base, '--listen-allow-remote'], env: {} }).config.listen.allowRemote).toBe(true);
    expect(loadConfig({ argv: [...base, '--listen-allow-remote=true'], env: {} }).config.listen.allowRemote).toBe(true);
    expect(
      loadConfig({ argv: [...base, '--listen-allow-remote=false'], env: { STALLGUARD_LISTEN_ALLOW_REMOTE: 'true' } }).config.listen
        .allowRemote,
    ).toBe(false);
    expect(loadConfig({ argv: base, env: { STALLGUARD_LISTEN_ALLOW_REMOTE: 'TRUE' } }).config.listen.allowRemote).toBe(true);
  });

  it('warns about unknown STALLGUARD_ variables', () => {
    const { warnings } = loadConfig({
      argv: ['--upstream-endpoints', ENDPOINT],
      env: { STALLGUARD_HEALTH_PING_INTERVALL: '1s', PATH: '/usr/bin' },
    });

    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('STALLGUARD_HEALTH_PING_INTERVALL');
    expect(warnings[0]).toContain('did you mean STALLGUARD_HEALTH_PING_INTERVAL?');
  });
});

describe('loadConfig validation', () => {
  it('reports a bare number duration with key, value and fix', () => {
    const problems = problemsOf(['--upstream-endpoints', ENDPOINT], { STALLGUARD_HEALTH_PING_INTERVAL: '1' });

    expect(problems).toEqual([
      'health.pingInterval: "1" is not a duration; write it with a unit, e.g. "1s" or "500ms" (set by STALLGUARD_HEALTH_PING_INTERVAL)',
    ]);
  });

  it.each([
    ['--mode', 'tcp', 'mode', 'tcp mode, which is not implemented yet; use mode: http2'],
    ['--mode', 'udp', 'mode', 'is not one of "http2", "tcp"'],
    ['--listen-address', 'localhost', 'listen.address', 'is not a host:port address'],
    ['--listen-address', '127.0.0.1:70000', 'listen.address', 'port above 65535'],
    ['--listen-allow-remote=yes', undefined, 'listen.allowRemote', 'write true or false'],
    ['--listen-plaintext', 'nohost', 'listen.plaintext', 'is not a host:port address'],
    ['--upstream-tls-server-name', 'https://api', 'upstream.tls.serverName', 'is not a DNS name or IP address'],
    ['--upstream-connect-timeout', '0s', 'upstream.connectTimeout', 'must be longer than 0s'],
    ['--upstream-reconnect-backoff-base', '0s', 'upstream.reconnectBackoff.base', 'must be longer than 0s'],
    ['--upstream-max-sessions-per-endpoint', 'many', 'upstream.maxSessionsPerEndpoint', 'is not an integer'],
    ['--health-ping-interval', '0s', 'health.pingInterval', 'must be longer than 0s'],
    ['--health-ping-timeout', '0ms', 'health.pingTimeout', 'must be longer than 0s'],
    ['--health-write-freshness', '250us', 'health.writeFreshness', 'whole number of milliseconds'],
    ['--retry-max-attempts', '0', 'retry.maxAttempts', 'write a whole number of at least 1'],
    ['--retry-max-attempts', '2.5', 'retry.maxAttempts', 'is not an integer'],
    ['--retry-budget', '10', 'retry.budget', 'write it with a unit'],
    ['--retry-max-body-bytes', '1 megabyte', 'retry.maxBodyBytes', 'is not a size'],
    ['--metrics-address', ':9464', 'metrics.address', 'has an invalid host'],
    ['--log-level', 'verbose', 'log.level', 'is not one of "trace", "debug", "info", "warn", "error", "fatal", "silent"'],
    ['--shutdown-drain-timeout', '-5s', 'shutdown.drainTimeout', 'is negative'],
    ['--state-dir', 'var/lib', 'stateDir', 'is not an absolute directory path'],
  ])('rejects %s %s', (flag, value, key, expected) => {
    const argv = ['--upstream-endpoints', ENDPOINT, flag, ...(value === undefined ? [] : [value])];
    const shownValue = value ?? flag.split('=')[1];

    const problem = problemFor(problemsOf(argv), key);

    // Integer flags are coerced before the check, so their value is shown as a number.
    const shownAsText = problem.startsWith(`${key}: ${JSON.stringify(shownValue)} `);
    const shownAsNumber = problem.startsWith(`${key}: ${shownValue} `);
    expect(shownAsText || shownAsNumber, problem).toBe(true);
    expect(problem).toContain(expected);
    expect(problem).toContain(`(set by ${flag.split('=')[0]})`);
  });

  it.each([
    ['http://127.0.0.1:6443', 'uses http', 'write "https://127.0.0.1:6443"'],
    ['127.0.0.1:6443', 'is not a URL', 'e.g. "https://127.0.0.1:6443"'],
    ['https://admin:pw@127.0.0.1', 'contains user information', 'upstream.tls.cert'],
    ['https://127.0.0.1/api', 'has a path, query or fragment', 'write only "https://127.0.0.1"'],
    ['https://127.0.0.1?watch=1', 'has a path, query or fragment', 'write only'],
    ['https://', 'is not a valid URL', 'https://HOST:PORT'],
  ])('rejects endpoint %s', (endpoint, reason, fix) => {
    const problem = problemFor(problemsOf(['--upstream-endpoints', endpoint]), 'upstream.endpoints');

    expect(problem).toContain(`upstream.endpoints[0]: ${JSON.stringify(endpoint)}`);
    expect(problem).toContain(reason);
    expect(problem).toContain(fix);
  });

  it('rejects an empty endpoint list with the three ways to set it', () => {
    const problem = problemFor(problemsOf([]), 'upstream.endpoints');

    expect(problem).toContain('upstream.endpoints: [] is empty');
    expect(problem).toContain('STALLGUARD_UPSTREAM_ENDPOINTS');
    expect(problem).toContain('--upstream-endpoints');
  });

  it('rejects a duplicate endpoint', () => {
    const problem = problemFor(problemsOf(['--upstream-endpoints', `${ENDPOINT},${ENDPOINT}/`]), 'upstream.endpoints');

    expect(problem).toContain('upstream.endpoints[1]');
    expect(problem).toContain('is listed twice');
  });

  it('reports every invalid key at once', () => {
    const file = writeWorkFile(
      'many-bad.yaml',
      [
        'mode: tcp',
        'upstream:',
        '  endpoints: ["http://127.0.0.1"]',
        'health:',
        '  pingInterval: 1',
        'retry:',
        '  maxAttempts: 0',
        '  maxBodyBytes: 4XB',
        'log:',
        '  level: loud',
      ].join('\n'),
    );

    const problems = problemsOf(['--config', file, '--metrics-address', 'nowhere']);

    for (const key of ['mode', 'upstream.endpoints', 'health.pingInterval', 'retry.maxAttempts', 'retry.maxBodyBytes', 'log.level', 'metrics.address']) {
      problemFor(problems, key);
    }
    expect(problems).toHaveLength(7);
    expect(problemFor(problems, 'health.pingInterval')).toContain(`health.pingInterval: 1 is not a duration`);
    expect(problemFor(problems, 'health.pingInterval')).toContain(`(set in ${file})`);
  });

  it('suggests the closest key for an unknown file key', () => {
    const file = writeWorkFile(
      'typo.yaml',
      ['health:', '  pingIntervall: 1s', 'pingTimeout: 2s', 'metricz:', '  address: 127.0.0.1:1', 'colour: blue'].join('\n'),
    );

    const problems = problemsOf(['--config', file, '--upstream-endpoints', ENDPOINT]);

    expect(problems).toContain(`health.pingIntervall: unknown key in ${file}; did you mean "health.pingInterval"?`);
    expect(problems).toContain(`pingTimeout: unknown key in ${file}; did you mean "health.pingTimeout"?`);
    expect(problems).toContain(`metricz: unknown key in ${file}; did you mean "metrics"?`);
    expect(problems).toContain(`colour: unknown key in ${file}; run "stallguard help" to list the keys`);
  });

  it('rejects a section written as a scalar', () => {
    const file = writeWorkFile('scalar-section.yaml', 'health: 5\n');

    const problems = problemsOf(['--config', file, '--upstream-endpoints', ENDPOINT]);

    expect(problems).toEqual([`health: 5 in ${file} is not a mapping; write the keys pingInterval, pingTimeout, writeFreshness, readyPath, readyInterval, ejectionTime, maxEjectionTime, maxEjectionPercent under it`]);
  });

  it('suggests the closest flag for an unknown flag', () => {
    const problems = problemsOf(['--upstream-endpoints', ENDPOINT, '--health-ping-intervl', '3s', '--frobnicate']);

    expect(problems).toEqual([
      'unknown option --health-ping-intervl; did you mean --health-ping-interval?',
      'unknown option --frobnicate; run "stallguard help" to list the options',
    ]);
  });

  it('rejects a flag without a value and a stray argument', () => {
    const problems = problemsOf(['--upstream-endpoints', ENDPOINT, 'extra', '--health-ping-interval']);

    expect(problems).toEqual([
      'unexpected argument "extra"; options are written as --name value or --name=value',
      '--health-ping-interval needs a value; write --health-ping-interval VALUE or --health-ping-interval=VALUE',
    ]);
  });

  it('names the path of a missing config file', () => {
    const missing = join(workDir, 'absent.yaml');

    const problems = problemsOf(['--config', missing]);

    expect(problems).toEqual([`config file "${missing}" does not exist; check the --config path`]);
  });

  it('reports invalid YAML and JSON with the file name', () => {
    const badYaml = writeWorkFile('broken.yaml', 'health:\n  pingInterval: [1s\n');
    const badJson = writeWorkFile('broken.json', '{"health": ');

    expect(problemsOf(['--config', badYaml])[0]).toContain(`config file "${badYaml}" is not valid YAML`);
    expect(problemsOf(['--config', badJson])[0]).toContain(`config file "${badJson}" is not valid JSON`);
  });
});

describe('endpoint source keys', () => {
  const FALLBACK = 'https://127.0.0.9:6443';

  it('reads fallback, discovery and resolveInterval', () => {
    const { config, sources } = loadConfig({
      argv: ['--upstream-endpoints', 'https://localhost:6443', '--upstream-fallback', 'https://127.0.0.9', '--upstream-discovery', 'endpointslices'],
      env: { STALLGUARD_UPSTREAM_RESOLVE_INTERVAL: '1m' },
    });

    expect(config.upstream.fallback).toEqual(['https://127.0.0.9:443']);
    expect(config.upstream.discovery).toBe('endpointslices');
    expect(config.upstream.resolveIntervalMs).toBe(60_000);
    expect(sources['upstream.resolveInterval']).toBe('env');
    expect(redactConfig(config).upstream).toMatchObject({ fallback: ['https://127.0.0.9:443'], discovery: 'endpointslices', resolveInterval: '1m' });
  });

  it('accepts a fallback without endpoints', () => {
    const { config } = loadConfig({ argv: ['--upstream-fallback', FALLBACK, '--upstream-discovery', 'endpointslices'], env: {} });

    expect(config.upstream.endpoints).toEqual([]);
    expect(config.upstream.fallback).toEqual([FALLBACK]);
  });

  it('rejects no endpoint and no fallback, naming both', () => {
    const problem = problemFor(problemsOf(['--upstream-discovery', 'endpointslices']), 'upstream.endpoints');

    expect(problem).toContain('upstream.endpoints: [] is empty');
    expect(problem).toContain('upstream.fallback');
  });

  it('rejects a fallback that is also an endpoint', () => {
    const problems = problemsOf(['--upstream-endpoints', FALLBACK, '--upstream-fallback', 'https://127.0.0.9:6443/']);

    expect(problemFor(problems, 'upstream.fallback')).toBe(
      `upstream.fallback: "https://127.0.0.9:6443/" is also listed in upstream.endpoints; a fallback address serves only while no endpoint is ready, so list it in one of the two (set by --upstream-fallback)`,
    );
  });

  it.each([
    ['--upstream-fallback', 'http://127.0.0.9', 'upstream.fallback', 'uses http'],
    ['--upstream-discovery', 'dns', 'upstream.discovery', 'is not one of "none", "endpointslices"'],
    ['--upstream-resolve-interval', '500ms', 'upstream.resolveInterval', 'must be at least 1000ms'],
    ['--upstream-resolve-interval', '30', 'upstream.resolveInterval', 'is not a duration'],
  ])('rejects %s %s', (flag, value, key, expected) => {
    const problem = problemFor(problemsOf(['--upstream-endpoints', ENDPOINT, flag, value]), key);

    expect(problem).toContain(expected);
  });
});

describe('loadConfig rules between keys', () => {
  const withEndpoint = (...argv: string[]): string[] => ['--upstream-endpoints', ENDPOINT, ...argv];

  it.each([['0.0.0.0:7446'], ['10.1.2.3:7446'], ['[::]:7446'], ['example.internal:7446']])('rejects listen.address %s', (address) => {
    const problem = problemFor(problemsOf(withEndpoint('--listen-address', address)), 'listen.address');

    expect(problem).toContain(`listen.address: "${address}" is not a loopback address`);
    expect(problem).toContain('set listen.allowRemote: true');
  });

  it.each([['127.0.0.1:7446'], ['127.9.8.7:7446'], ['[::1]:7446'], ['localhost:7446'], ['127.0.0.1:0']])(
    'accepts loopback listen.address %s',
    (address) => {
      expect(loadConfig({ argv: withEndpoint('--listen-address', address), env: {} }).config.listen.address).toBe(address);
    },
  );

  it('accepts a remote listen.address with allowRemote', () => {
    const { config } = loadConfig({ argv: withEndpoint('--listen-address', '0.0.0.0:7446', '--listen-allow-remote'), env: {} });

    expect(config.listen.address).toBe('0.0.0.0:7446');
  });

  it('keeps listen.plaintext on loopback even with allowRemote', () => {
    const problems = problemsOf(withEndpoint('--listen-allow-remote', '--listen-plaintext', '0.0.0.0:7447'));

    expect(problemFor(problems, 'listen.plaintext')).toContain('is not a loopback address');
    expect(problems).toHaveLength(1);
    expect(loadConfig({ argv: withEndpoint('--listen-plaintext', '127.0.0.1:7447'), env: {} }).config.listen.plaintext).toBe(
      '127.0.0.1:7447',
    );
  });

  it('rejects two listeners on one address', () => {
    const problem = problemFor(problemsOf(withEndpoint('--metrics-address', '127.0.0.1:7446')), 'metrics.address');

    expect(problem).toContain('is also listen.address');
  });

  it('rejects reconnectBackoff.max below base', () => {
    const problem = problemFor(
      problemsOf(withEndpoint('--upstream-reconnect-backoff-base', '2s', '--upstream-reconnect-backoff-max', '1s')),
      'upstream.reconnectBackoff.max',
    );

    expect(problem).toContain('upstream.reconnectBackoff.max: "1s" is shorter than upstream.reconnectBackoff.base ("2s")');
    expect(loadConfig({ argv: withEndpoint('--upstream-reconnect-backoff-max', '250ms'), env: {} }).config.upstream.reconnectBackoff.maxMs).toBe(
      250,
    );
  });

  it('rejects a pingTimeout not below retry.budget', () => {
    const problem = problemFor(problemsOf(withEndpoint('--health-ping-timeout', '10s')), 'health.pingTimeout');

    expect(problem).toContain('health.pingTimeout: "10s" is not below retry.budget ("10s")');
    expect(problem).toContain('lower health.pingTimeout or raise retry.budget');
    expect(loadConfig({ argv: withEndpoint('--health-ping-timeout', '9999ms'), env: {} }).config.health.pingTimeoutMs).toBe(9999);
  });

  it('skips a rule whose input is already invalid', () => {
    const problems = problemsOf(withEndpoint('--health-ping-timeout', '10s', '--retry-budget', 'soon'));

    expect(problems).toHaveLength(1);
    expect(problemFor(problems, 'retry.budget')).toContain('is not a duration');
  });

  it('requires TLS cert and key together', () => {
    const cert = writeWorkFile('client.crt', 'not checked here');

    const listenProblems = problemsOf(withEndpoint('--listen-tls-cert', cert));
    const upstreamProblems = problemsOf(withEndpoint('--upstream-tls-key', cert));

    expect(problemFor(listenProblems, 'listen.tls.key')).toContain('is empty but listen.tls.cert is set; set both or neither');
    expect(problemFor(upstreamProblems, 'upstream.tls.cert')).toContain('is empty but upstream.tls.key is set; set both or neither');
  });

  it('names a missing TLS file and a directory', () => {
    const missing = join(workDir, 'no-such-ca.pem');
    const directory = join(workDir, 'a-directory');
    mkdirSync(directory, { recursive: true });

    const problems = problemsOf(withEndpoint('--upstream-tls-ca', missing, '--listen-tls-client-ca', directory));

    expect(problemFor(problems, 'upstream.tls.ca')).toBe(
      `upstream.tls.ca: "${missing}" names a file that does not exist; check the path (set by --upstream-tls-ca)`,
    );
    expect(problemFor(problems, 'listen.tls.clientCA')).toContain(`"${directory}" is not a regular file`);
  });

  it.skipIf(process.getuid?.() === 0)('names an unreadable TLS file', () => {
    const unreadable = writeWorkFile('unreadable.pem', 'secret');
    chmodSync(unreadable, 0o000);

    const problem = problemFor(problemsOf(withEndpoint('--upstream-tls-ca', unreadable)), 'upstream.tls.ca');

    expect(problem).toContain(`"${unreadable}" names a file that stallguard cannot read`);
  });

  it('accepts existing TLS files', () => {
    const cert = writeWorkFile('server.crt', 'pem');
    const key = writeWorkFile('server.key', 'pem');

    const { config } = loadConfig({ argv: withEndpoint('--listen-tls-cert', cert, '--listen-tls-key', key), env: {} });

    expect(config.listen.tls).toEqual({ cert, key, clientCA: '' });
  });
});

describe('identity keys', () => {
  const withEndpoint = (...argv: string[]): string[] => ['--upstream-endpoints', ENDPOINT, ...argv];

  function withFrontProxyCert(...argv: string[]): string[] {
    const cert = writeWorkFile('front-proxy.crt', 'pem');
    const key = writeWorkFile('front-proxy.key', 'pem');
    return withEndpoint('--upstream-identity', 'front-proxy', '--upstream-tls-cert', cert, '--upstream-tls-key', key, ...argv);
  }

  it('reads front-proxy mode, header names and expiryWarning', () => {
    const { config } = loadConfig({
      argv: withFrontProxyCert('--upstream-front-proxy-username-header', 'X-Auth-User', '--upstream-tls-expiry-warning', '24h'),
      env: { STALLGUARD_UPSTREAM_FRONT_PROXY_GROUP_HEADER: 'X-Auth-Group' },
    });

    expect(config.upstream.identity).toBe('front-proxy');
    expect(config.upstream.frontProxy).toEqual({ usernameHeader: 'X-Auth-User', groupHeader: 'X-Auth-Group', extraHeaderPrefix: 'X-Remote-Extra-' });
    expect(config.upstream.tls.expiryWarningMs).toBe(24 * 3_600_000);
  });

  it('rejects an unknown identity mode', () => {
    const problem = problemFor(problemsOf(withEndpoint('--upstream-identity', 'impersonate')), 'upstream.identity');

    expect(problem).toContain('is not one of "static", "front-proxy"');
  });

  it('requires a client certificate in front-proxy mode', () => {
    const problem = problemFor(problemsOf(withEndpoint('--upstream-identity', 'front-proxy')), 'upstream.tls.cert');

    expect(problem).toContain('is empty but upstream.identity is "front-proxy"');
    expect(problem).toContain('--requestheader-client-ca-file');
  });

  it('rejects a header name that is not a token', () => {
    const problem = problemFor(problemsOf(withEndpoint('--upstream-front-proxy-username-header', 'X Remote User')), 'upstream.frontProxy.usernameHeader');

    expect(problem).toContain('is not an HTTP header name');
  });

  it('rejects identity headers that requests need', () => {
    const problems = problemsOf(withEndpoint('--upstream-front-proxy-username-header', 'Authorization', '--upstream-front-proxy-extra-header-prefix', 'Content-'));

    expect(problemFor(problems, 'upstream.frontProxy.usernameHeader')).toContain('is a header that requests need for themselves');
    expect(problemFor(problems, 'upstream.frontProxy.extraHeaderPrefix')).toContain('would also match the "content-encoding" header');
  });

  it('rejects one name for user and group, and a name under the extra prefix', () => {
    const same = problemsOf(withEndpoint('--upstream-front-proxy-group-header', 'x-remote-user'));
    const prefixed = problemsOf(withEndpoint('--upstream-front-proxy-username-header', 'X-Remote-Extra-User'));

    expect(problemFor(same, 'upstream.frontProxy.groupHeader')).toContain('is also upstream.frontProxy.usernameHeader');
    expect(problemFor(prefixed, 'upstream.frontProxy.usernameHeader')).toContain('starts with upstream.frontProxy.extraHeaderPrefix');
  });

  it('renders the identity keys in file form', () => {
    const { config } = loadConfig({ argv: withFrontProxyCert(), env: {} });

    const fileForm = redactConfig(config);

    expect(fileForm.upstream.identity).toBe('front-proxy');
    expect(fileForm.upstream.tls.expiryWarning).toBe('72h');
    expect(fileForm.upstream.frontProxy.groupHeader).toBe('X-Remote-Group');
  });
});

describe('redactConfig', () => {
  const loaded = (): Config => loadConfig({ argv: ['--upstream-endpoints', ENDPOINT, '--health-ping-interval', '1h30m'], env: {} }).config;

  it('renders durations and sizes in file form', () => {
    const fileForm = redactConfig(loaded());

    expect(fileForm.health.pingInterval).toBe('1h30m');
    expect(fileForm.upstream.reconnectBackoff.base).toBe('250ms');
    expect(fileForm.retry.maxBodyBytes).toBe('1MiB');
  });

  it('replaces sensitive values, set or empty', () => {
    const keys = CONFIG_KEYS.map((spec) =>
      spec.path === 'upstream.tls.key' || spec.path === 'listen.tls.key' ? { ...spec, sensitive: true } : spec,
    );
    const config = loaded();
    config.upstream.tls.key = '/etc/stallguard/client.key';

    const fileForm = redactConfig(config, keys);
    const text = renderConfigYaml(config, keys);

    expect(fileForm.upstream.tls.key).toBe('[redacted]');
    expect(fileForm.listen.tls.key).toBe('[redacted]');
    expect(fileForm.upstream.tls.cert).toBe('');
    expect(text).not.toContain('client.key');
    expect(text).toContain('[redacted]');
  });

  it('renders YAML that loads back to the same config', () => {
    const config = loaded();
    const file = writeWorkFile('rendered.yaml', renderConfigYaml(config));

    expect(loadConfig({ argv: ['--config', file], env: {} }).config).toEqual(config);
  });
});

describe('createLogger', () => {
  function captureLines(): { destination: Writable; lines: () => Array<Record<string, unknown>> } {
    const chunks: string[] = [];
    const destination = new Writable({
      write(chunk, _encoding, callback) {
        chunks.push(String(chunk));
        callback();
      },
    });
    const lines = (): Array<Record<string, unknown>> =>
      chunks.join('').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as Record<string, unknown>);
    return { destination, lines };
  }

  it('writes JSON with the stallguard name and the level threshold', () => {
    const { destination, lines } = captureLines();
    const logger = createLogger('warn', destination);

    logger.info('not written');
    logger.warn({ endpoint: ENDPOINT }, 'session evicted');

    expect(lines()).toHaveLength(1);
    expect(lines()[0]).toMatchObject({ name: 'stallguard', msg: 'session evicted', endpoint: ENDPOINT, level: 40 });
    expect(lines()[0]).not.toHaveProperty('pid');
  });

  it('redacts authorization and cookies', () => {
    const { destination, lines } = captureLines();
    const logger = createLogger('info', destination);

    logger.info(
      {
        authorization: 'Bearer top',
        headers: { authorization: 'Bearer h', cookie: 'c=1', 'set-cookie': 's=1', accept: 'application/json' },
        req: { headers: { authorization: 'Bearer r', 'proxy-authorization': 'Basic p' } },
        upstream: { authorization: 'Bearer u', token: 't' },
      },
      'request',
    );
    const text = JSON.stringify(lines()[0]);

    for (const secret of ['Bearer top', 'Bearer h', 'c=1', 's=1', 'Bearer r', 'Basic p', 'Bearer u', '"t"']) {
      expect(text).not.toContain(secret);
    }
    expect(text).toContain('application/json');
    expect(text).toContain('[redacted]');
  });
});

describe('RepeatLimiter', () => {
  it('logs powers of two with the suppressed count', () => {
    const limiter = new RepeatLimiter();

    const decisions = Array.from({ length: 9 }, () => limiter.record('SG_ERR_CONNECT https://127.0.0.1:6443'));

    expect(decisions.map((decision) => decision.log)).toEqual([true, true, false, true, false, false, false, true, false]);
    expect(decisions.filter((decision) => decision.log).map((decision) => decision.suppressed)).toEqual([0, 0, 1, 3]);
    expect(decisions[8].occurrence).toBe(9);
  });

  it('keeps keys apart and restarts after reset', () => {
    const limiter = new RepeatLimiter();
    limiter.record('a');
    limiter.record('a');
    limiter.record('a');

    expect(limiter.record('b')).toEqual({ log: true, occurrence: 1, suppressed: 0 });
    limiter.reset('a');
    expect(limiter.record('a')).toEqual({ log: true, occurrence: 1, suppressed: 0 });
  });

  it('forgets the oldest key beyond maxKeys', () => {
    const limiter = new RepeatLimiter(2);
    limiter.record('a');
    limiter.record('a');
    limiter.record('b');
    limiter.record('c');

    expect(limiter.record('a')).toEqual({ log: true, occurrence: 1, suppressed: 0 });
  });
});

describe('runCommand', () => {
  interface Harness {
    deps: RunDependencies;
    exits: number[];
    errors: string[];
    lines: () => Array<Record<string, unknown>>;
    signal: (name: 'SIGTERM' | 'SIGINT') => void;
  }

  function createHarness(start: RunDependencies['start']): Harness {
    const chunks: string[] = [];
    const handlers = new Map<string, () => void>();
    const exits: number[] = [];
    const errors: string[] = [];
    const destination = new Writable({
      write(chunk, _encoding, callback) {
        chunks.push(String(chunk));
        callback();
      },
    });

    return {
      exits,
      errors,
      lines: () => chunks.join('').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as Record<string, unknown>),
      signal: (name) => handlers.get(name)!(),
      deps: {
        start,
        createLogger: (level) => createLogger(level, destination),
        onSignal: (name, handler) => handlers.set(name, handler),
        exit: (code) => exits.push(code),
        writeError: (text) => errors.push(text),
      },
    };
  }

  function fakeRunning(close: () => Promise<void>): RunningStallguard {
    return { addresses: { listen: '127.0.0.1:7446', metrics: '127.0.0.1:9464' }, close };
  }

  it('logs the config, closes on SIGTERM and exits 0', async () => {
    let closeCalls = 0;
    const harness = createHarness(async () => fakeRunning(async () => void (closeCalls += 1)));

    await runCommand(['--upstream-endpoints', ENDPOINT], {}, harness.deps);
    harness.signal('SIGTERM');
    await new Promise((resolveWait) => setImmediate(resolveWait));

    const messages = harness.lines().map((line) => line.msg);
    expect(messages).toEqual(['effective configuration', 'stallguard started', 'shutdown started', 'shutdown complete']);
    expect((harness.lines()[0].config as { health: { pingInterval: string } }).health.pingInterval).toBe('1s');
    expect(closeCalls).toBe(1);
    expect(harness.exits).toEqual([0]);
  });

  it('exits at once on a second signal', async () => {
    const harness = createHarness(async () => fakeRunning(() => new Promise<void>(() => {})));

    await runCommand(['--upstream-endpoints', ENDPOINT], {}, harness.deps);
    harness.signal('SIGINT');
    harness.signal('SIGTERM');

    expect(harness.exits).toEqual([143]);
    expect(harness.lines().at(-1)).toMatchObject({ msg: 'second signal, exiting without waiting for the drain', signal: 'SIGTERM' });
  });

  it('exits 1 when start fails', async () => {
    const harness = createHarness(async () => {
      throw new Error('listen EADDRINUSE 127.0.0.1:7446');
    });

    await runCommand(['--upstream-endpoints', ENDPOINT], {}, harness.deps);

    expect(harness.exits).toEqual([1]);
    expect(harness.lines().at(-1)).toMatchObject({ msg: 'start failed', level: 60 });
  });

  it('exits 1 with every problem on an invalid config', async () => {
    const harness = createHarness(async () => {
      throw new Error('start must not be called');
    });

    await runCommand(['--health-ping-interval', '1'], {}, harness.deps);

    expect(harness.exits).toEqual([1]);
    expect(harness.errors.join('')).toContain('invalid configuration (2 problems):');
    expect(harness.errors.join('')).toContain('health.pingInterval: "1" is not a duration');
    expect(harness.lines()).toEqual([]);
  });
});

describe('built CLI', () => {
  const repoRoot = resolve(import.meta.dirname, '..');
  const mainJs = join(repoRoot, 'dist/cli/main.js');

  beforeAll(() => {
    // Emits even when another module in src/ has a type error, so this file tests the CLI alone.
    try {
      execFileSync('npx', ['tsc', '-p', 'tsconfig.json', '--noEmitOnError', 'false'], { cwd: repoRoot, stdio: 'pipe' });
    } catch {
      // Type errors elsewhere are reported by `npm run typecheck`; the emitted CLI is still usable.
    }
    expect(existsSync(mainJs)).toBe(true);
  }, 120_000);

  function runCli(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
    const result = spawnSync(process.execPath, [mainJs, ...args], {
      cwd: workDir,
      env: { PATH: process.env.PATH, ...env },
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  it('check-config exits 1 with every problem', () => {
    const file = writeWorkFile('cli-bad.yaml', 'listen:\n  address: 0.0.0.0:7446\nhealth:\n  pingTimeout: 1\n');

    const result = runCli(['check-config', '--config', file]);

    expect(result.status).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain('invalid configuration (3 problems):');
    expect(result.stderr).toContain('listen.address: "0.0.0.0:7446" is not a loopback address');
    expect(result.stderr).toContain('health.pingTimeout: 1 is not a duration; write it with a unit');
    expect(result.stderr).toContain('upstream.endpoints: [] is empty');
  });

  it('check-config rejects the shipped default file unchanged', () => {
    const result = runCli(['check-config', '--config', join(repoRoot, 'config/stallguard.yaml')]);

    expect(result.status).toBe(1);
    expect(result.stderr).toContain('invalid configuration (1 problem):');
    expect(result.stderr).toContain('upstream.endpoints: [] is empty');
  });

  it('check-config prints the effective config as YAML', () => {
    const result = runCli(['check-config', '--config', join(repoRoot, 'config/stallguard.yaml'), '--health-ping-timeout', '3s'], {
      STALLGUARD_UPSTREAM_ENDPOINTS: ENDPOINT,
    });

    expect(result.status).toBe(0);
    const printed = yaml.load(result.stdout) as { upstream: { endpoints: string[] }; health: { pingTimeout: string }; stateDir: string };
    expect(printed.upstream.endpoints).toEqual([ENDPOINT]);
    expect(printed.health.pingTimeout).toBe('3s');
    expect(printed.stateDir).toBe('/var/lib/stallguard');
  });

  it('exits 2 on an unknown command', () => {
    const result = runCli(['serve']);

    expect(result.status).toBe(2);
    expect(result.stderr).toContain('unknown command "serve"');
  });

  it('help lists every option with its default', () => {
    const result = runCli(['help']);

    expect(result.status).toBe(0);
    for (const spec of CONFIG_KEYS) {
      expect(result.stdout).toContain(spec.flag);
      expect(result.stdout).toContain(spec.env);
    }
    expect(result.stdout).toContain('--health-ping-interval <duration>');
    expect(result.stdout).toContain('default: 1s; file key: health.pingInterval');
    expect(runCli(['--help']).stdout).toBe(result.stdout);
  });

  it('version prints the package version', () => {
    const result = runCli(['version']);

    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/^stallguard \d+\.\d+\.\d+\n$/);
  });
});
