import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { parseBenchArgs } from '../src/bench/args.js';
import { BenchUsageError } from '../src/bench/errors.js';
import { auditWrites, summarizePath } from '../src/bench/failover-metrics.js';
import { parseH2loadLog, parseH2loadOutput } from '../src/bench/h2load.js';
import { parseShowStat, renderHaproxyConfig } from '../src/bench/haproxy.js';
import type { RequestRecord } from '../src/bench/kubelet-loop.js';
import { renderNginxConfig } from '../src/bench/nginx.js';
import { median, percentile, ratio } from '../src/bench/stats.js';
import { findTool, type ToolName } from '../src/bench/tools.js';

const repoRoot = resolve(import.meta.dirname, '..');
const benchMain = join(repoRoot, 'dist/bench/main.js');
const SCENARIOS = ['failover', 'latency'];

let outDir: string;

beforeAll(() => {
  outDir = mkdtempSync(join(tmpdir(), 'stallguard-bench-test-'));
});

afterAll(() => {
  rmSync(outDir, { recursive: true, force: true });
});

describe('bench arguments', () => {
  it('runs every scenario by default', () => {
    const parsed = parseBenchArgs([], SCENARIOS);

    expect(parsed.help).toBe(false);
    if (parsed.help) return;
    expect(parsed.options.scenarios).toEqual(SCENARIOS);
    expect(parsed.options.repeat).toBeUndefined();
    expect(parsed.options.quick).toBe(false);
    expect(parsed.options.out).toBe(join('bench', 'results'));
  });

  it('reads every option in both forms', () => {
    const parsed = parseBenchArgs(['latency', '--repeat=3', '--quick', '--out', '/tmp/x', '--seed', '42', 'latency'], SCENARIOS);

    if (parsed.help) throw new Error('expected options, got help');
    expect(parsed.options).toEqual({ scenarios: ['latency'], repeat: 3, quick: true, out: '/tmp/x', seed: 42 });
  });

  it('returns help for --help', () => {
    expect(parseBenchArgs(['failover', '--help'], SCENARIOS)).toEqual({ help: true });
  });

  it.each([
    [['nosuch'], 'unknown scenario "nosuch"; the scenarios are failover, latency'],
    [['--repeat', '0'], '--repeat must be an integer from 1 to 1000, got "0"'],
    [['--repeat', '2.5'], '--repeat must be an integer from 1 to 1000, got "2.5"'],
    [['--repeat'], '--repeat needs a value'],
    [['--seed', '-1'], '--seed must be an integer from 0 to 4294967295, got "-1"'],
    [['--out='], '--out needs a value'],
    [['--fast'], 'unknown option "--fast"'],
  ])('rejects %j', (argv, message) => {
    expect(() => parseBenchArgs(argv, SCENARIOS)).toThrow(BenchUsageError);
    expect(() => parseBenchArgs(argv, SCENARIOS)).toThrow(message);
  });
});

describe('bench statistics', () => {
  it('median of odd and even counts', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeUndefined();
  });

  it('percentile by nearest rank', () => {
    const samples = Array.from({ length: 100 }, (_, i) => 100 - i);

    expect(percentile(samples, 50)).toBe(50);
    expect(percentile(samples, 99)).toBe(99);
    expect(percentile(samples, 100)).toBe(100);
    expect(percentile([7], 99)).toBe(7);
    expect(() => percentile(samples, 0)).toThrow(RangeError);
  });

  it('ratio rounds and rejects a zero divisor', () => {
    expect(ratio(2, 3)).toBe(0.667);
    expect(ratio(1, 0)).toBeUndefined();
    expect(ratio(undefined, 1)).toBeUndefined();
  });
});

describe('failover metrics', () => {
  const get = (sentAtMs: number, endedAtMs: number, ok: boolean, extra: Partial<RequestRecord> = {}): RequestRecord => ({
    kind: 'get-node',
    tick: 0,
    sentAtMs,
    endedAtMs,
    ok,
    ...extra,
  });
  const put = (renewal: number, sentAtMs: number, endedAtMs: number, ok: boolean, extra: Partial<RequestRecord> = {}): RequestRecord => ({
    kind: 'put-lease',
    tick: 0,
    sentAtMs,
    endedAtMs,
    ok,
    renewal,
    ...extra,
  });

  it('measures recovery from requests sent after the switch', () => {
    const records = [
      get(0, 5, true),
      // Sent before the switch at 1000 and completed after it: not a recovery.
      get(990, 1001, true),
      get(1000, 11_000, false, { error: 'ETIMEDOUT' }),
      get(2000, 4000, true),
    ];

    const outcome = summarizePath(records, 1000, 12_000);

    expect(outcome.recoveryMs).toBe(3000);
    expect(outcome.healthyAtSwitch).toBe(true);
    expect(outcome.failed).toEqual({ get: 1, put: 0 });
    expect(outcome.failureCauses).toEqual({ ETIMEDOUT: 1 });
    expect(outcome.disruptionMs).toBe(10_000);
  });

  it('reports no recovery without a later success', () => {
    const outcome = summarizePath([get(0, 5, true), get(2000, 12_000, false, { status: 504 })], 1000, 13_000);

    expect(outcome.recoveryMs).toBeNull();
    expect(outcome.failureCauses).toEqual({ 'status 504': 1 });
  });

  it('measures the longest lease gap', () => {
    const records = [put(1, 0, 10, true), put(2, 2000, 2010, true), put(3, 4000, 14_000, false), put(4, 6000, 9010, true)];

    const outcome = summarizePath(records, 3000, 20_000);

    expect(outcome.maxLeaseGapMs).toBe(7000);
    expect(outcome.leaseGapCensored).toBe(false);
  });

  it('censors a lease gap without renewal after the switch', () => {
    const outcome = summarizePath([put(1, 0, 10, true), put(2, 2000, 12_000, false)], 1000, 30_000);

    expect(outcome.maxLeaseGapMs).toBe(29_990);
    expect(outcome.leaseGapCensored).toBe(true);
  });

  it('marks a path failing at the switch unhealthy', () => {
    const outcome = summarizePath([get(0, 5, true), get(500, 900, false, { error: 'ECONNRESET' })], 1000, 2000);

    expect(outcome.healthyAtSwitch).toBe(false);
  });

  it('audits applied, unacknowledged, duplicated and lost writes', () => {
    const records = [put(1, 0, 1, true), put(2, 10, 11, false), put(3, 20, 21, true), put(4, 30, 31, false)];

    expect(auditWrites(records, [1, 2, 3])).toEqual({ acknowledged: 2, appliedAtServer: 3, appliedUnacknowledged: 1, duplicated: 0, lost: 0 });
    expect(auditWrites(records, [1, 3, 3])).toMatchObject({ duplicated: 1, lost: 0 });
    expect(auditWrites(records, [1])).toMatchObject({ lost: 1 });
  });
});

describe('bench tool output parsing', () => {
  const h2loadOutput = [
    'starting benchmark...',
    'finished in 1.23s, 8123.45 req/s, 95.12MB/s',
    'requests: 10000 total, 10000 started, 9998 done, 9990 succeeded, 10 failed, 2 errored, 0 timeout',
    'status codes: 9990 2xx, 0 3xx, 0 4xx, 8 5xx',
  ].join('\n');

  it('reads the h2load summary', () => {
    const summary = parseH2loadOutput(h2loadOutput);

    expect(summary.requestsPerSecond).toBe(8123.45);
    expect(summary.durationS).toBe(1.23);
    expect(summary.counts).toEqual({ total: 10000, started: 10000, done: 9998, succeeded: 9990, failed: 10, errored: 2, timeout: 0 });
    expect(summary.status).toEqual({ '2xx': 9990, '3xx': 0, '4xx': 0, '5xx': 8 });
  });

  it('reads a duration in milliseconds', () => {
    expect(parseH2loadOutput(h2loadOutput.replace('1.23s', '950.50ms')).durationS).toBeCloseTo(0.9505);
  });

  it('rejects h2load output without its summary', () => {
    expect(() => parseH2loadOutput('connect error')).toThrow('line is missing');
  });

  it('reads the h2load log durations', () => {
    expect(parseH2loadLog('1733350000000000\t200\t812\n1733350000000900\t200\t1500\n')).toEqual([812, 1500]);
    expect(() => parseH2loadLog('garbage\n')).toThrow('invalid h2load log line');
  });

  it('reads the backend server row of show stat', () => {
    const csv = '# pxname,svname,status,chkdown\nkubelet,FRONTEND,OPEN,\napiserver,api,UP,0\napiserver,BACKEND,UP,0\n';

    const rows = parseShowStat(csv);

    expect(rows.find((row) => row.svname === 'api')).toEqual({ pxname: 'apiserver', svname: 'api', status: 'UP', chkdown: '0' });
  });

  it('renders configurations bound to loopback', () => {
    const haproxy = renderHaproxyConfig(
      { binary: 'haproxy', dir: '/run/x', frontendPem: '', backend: { port: 6443, caPath: '/run/ca.crt' }, timeoutServerMs: 20_000 },
      8443,
    );
    const nginx = renderNginxConfig({ binary: 'nginx', dir: '/run/x', certPath: '/c', keyPath: '/k', documents: {} }, 9443);

    expect(haproxy).toContain('bind 127.0.0.1:8443 ssl crt /run/x/frontend.pem alpn h2,http/1.1');
    expect(haproxy).toContain(
      'server api 127.0.0.1:6443 ssl verify required ca-file /run/ca.crt alpn h2 check inter 1s fall 2 rise 1 on-marked-down shutdown-sessions',
    );
    expect(haproxy).toContain('timeout server 20000ms');
    expect(nginx).toContain('listen 127.0.0.1:9443 ssl http2;');
    expect(nginx).not.toMatch(/listen (?!127\.0\.0\.1)/);
  });
});

describe('bench command', () => {
  beforeAll(() => {
    // Emits even when another module in src/ has a type error, so this file tests the runner alone.
    try {
      execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: repoRoot, stdio: 'pipe' });
    } catch {
      // Type errors elsewhere are reported by `npm run typecheck`; the emitted runner is still usable.
    }
    expect(existsSync(benchMain)).toBe(true);
  }, 120_000);

  it('exits 2 on a usage error', async () => {
    const run = await runBench(['nosuch']);

    expect(run.status).toBe(2);
    expect(run.stderr).toContain('unknown scenario "nosuch"');
  });

  it('failover --quick keeps the invariants', async (context) => {
    requireToolsOrSkip(context, ['haproxy']);
    const out = join(outDir, 'failover');

    const run = await runBench(['failover', '--quick', '--seed', '7', '--out', out]);

    const result = readOnlyResult(out, 'failover', run.stderr);
    expect(result.quick).toBe(true);
    expect(result.seed).toBe(7);
    expectMachineDescribed(result.machine);
    expect(result.invariants).toEqual({
      equalRequestCounts: true,
      noDuplicatedWrites: true,
      noLostWrites: true,
      serverCountsMatchClients: true,
      allProcessesEnded: true,
    });
    expect(run.status, tail(run.stderr)).toBe(0);

    expect(result.repetitions).toHaveLength(1);
    const paths = Object.values(result.repetitions[0].paths) as FailoverPathResult[];
    expect(paths).toHaveLength(4);
    for (const path of paths) {
      expect(path.requests).toEqual(paths[0]!.requests);
      expect(path.requests.put).toBeGreaterThan(0);
      expect(path.writes.duplicated).toBe(0);
      expect(path.writes.lost).toBe(0);
      expect(path.serverLeaseUpdates).toBe(path.writes.acknowledged + path.writes.appliedUnacknowledged);
      expect(path.writes.appliedUnacknowledged).toBeLessThanOrEqual(path.failed.put);
    }
    expectProcessesEnded(result.processes, ['haproxy']);
    expect(run.stdout).toContain(`failover: ${out}/failover-`);
  });

  it('latency --quick keeps the invariants', async (context) => {
    requireToolsOrSkip(context, ['haproxy', 'h2load', 'nginx']);
    const out = join(outDir, 'latency');

    const run = await runBench(['latency', '--quick', '--out', out]);

    const result = readOnlyResult(out, 'latency', run.stderr);
    expectMachineDescribed(result.machine);
    expect(result.stallguardExits).toEqual([]);
    expect(result.invariants).toEqual({
      everyRunRecorded: true,
      equalRequestCounts: true,
      everyRequestSucceeded: true,
      stallguardKeptRunning: true,
      allProcessesEnded: true,
    });
    expect(run.status, tail(run.stderr)).toBe(0);

    const runs = result.runs as LatencyRunResult[];
    for (const load of ['one-stream', 'multiplexed']) {
      const done = ['direct', 'stallguard', 'haproxy'].map((path) => runs.filter((entry) => entry.load === load && entry.path === path).map((entry) => entry.counts.done));
      expect(done[1]).toEqual(done[0]);
      expect(done[2]).toEqual(done[0]);
    }
    for (const entry of runs) expect(entry.status['2xx']).toBe(entry.counts.total);
    expectProcessesEnded(result.processes, ['nginx', 'haproxy', 'stallguard', 'h2load-one-stream-stallguard-1']);
  });

  it('Ctrl-C stops HAProxy and exits 130', async (context) => {
    requireToolsOrSkip(context, ['haproxy']);
    const out = join(outDir, 'interrupted');
    let haproxy: { pid: number; args: string[] } | undefined;

    const run = await runBench(['failover', '--out', out], (line, child) => {
      const entry = parseLogLine(line);
      if (entry?.msg === 'child process started' && entry.process === 'haproxy') haproxy ??= { pid: entry.pid as number, args: entry.args as string[] };
      // Interrupt once traffic runs, so that the handler has clients, HAProxy and stallguard to stop.
      if (entry?.msg === 'balancer failed over') child.kill('SIGINT');
    });

    expect(run.status, tail(run.stderr)).toBe(130);
    expect(haproxy).toBeDefined();
    expect(isRunning(haproxy!.pid)).toBe(false);
    const configPath = haproxy!.args[haproxy!.args.indexOf('-f') + 1]!;
    expect(configPath).toContain('stallguard-bench-failover-');
    expect(existsSync(dirname(configPath))).toBe(false);
    expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
  });
});

interface FailoverPathResult {
  requests: { get: number; put: number };
  failed: { get: number; put: number };
  writes: { acknowledged: number; appliedUnacknowledged: number; duplicated: number; lost: number };
  serverLeaseUpdates: number;
}

interface LatencyRunResult {
  load: string;
  path: string;
  counts: { total: number; done: number };
  status: { '2xx': number };
}

interface ProcessRecordResult {
  name: string;
  pid: number;
  ended: boolean;
  args: string[];
}

/** Fails under CI=true when a tool is missing, because CI must run every scenario; skips otherwise. */
function requireToolsOrSkip(context: TestContext, tools: ToolName[]): void {
  const missing = tools.filter((tool) => findTool(tool) === undefined);
  if (missing.length === 0) return;

  const message = `${missing.join(', ')} not found on PATH or in /usr/sbin; install the Debian packages haproxy, nghttp2-client and nginx`;
  if (process.env.CI === 'true') throw new Error(`CI must run the bench smoke tests: ${message}`);
  context.skip(message);
}

function runBench(
  args: string[],
  onStderrLine: (line: string, child: ReturnType<typeof spawn>) => void = () => {},
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [benchMain, ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let pending = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 50_000);

    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) onStderrLine(line, child);
    });
    child.once('error', reject);
    child.once('close', (status) => {
      clearTimeout(timer);
      resolvePromise({ status, stdout, stderr });
    });
  });
}

function parseLogLine(line: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function readOnlyResult(dir: string, scenario: string, stderr: string): any {
  const files = existsSync(dir) ? readdirSync(dir) : [];
  expect(files, `no result file; the run's stderr ends with:\n${tail(stderr)}`).toHaveLength(1);
  expect(files[0]).toMatch(new RegExp(`^${scenario}-\\d{4}-\\d{2}-\\d{2}T\\d{6}Z\\.json$`));
  return JSON.parse(readFileSync(join(dir, files[0]!), 'utf8'));
}

/** Returns the last 20 lines of a run's output, for assertion messages. */
function tail(output: string): string {
  return output.trimEnd().split('\n').slice(-20).join('\n');
}

function expectMachineDescribed(machine: Record<string, unknown>): void {
  expect(machine.cpuModel).toBeTypeOf('string');
  expect(machine.cores).toBeGreaterThan(0);
  expect(machine.node).toBe(process.version);
  expect(machine.haproxy).toMatch(/^HAProxy version /);
}

/** Asserts that every recorded process ended, none still runs, and each expected name appears. */
function expectProcessesEnded(processes: ProcessRecordResult[], expectedNames: string[]): void {
  for (const name of expectedNames) expect(processes.map((entry) => entry.name)).toContain(name);
  for (const entry of processes) {
    expect(entry.ended, entry.name).toBe(true);
    expect(isRunning(entry.pid), `${entry.name} (pid ${entry.pid})`).toBe(false);
  }
  // A process started from the run's temporary directory (its configuration is there) would show up here.
  const leftovers = processes.flatMap((entry) => entry.args.filter((arg) => arg.includes('stallguard-bench-')));
  for (const arg of leftovers) expect(commandLinesContaining(arg)).toEqual([]);
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

function commandLinesContaining(text: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const commandLine = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (commandLine.includes(text)) found.push(`${entry}: ${commandLine}`);
    } catch {
      // The process ended while the list was read.
    }
  }
  return found;
}
