import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { parseBenchArgs } from '../src/bench/args.js';
import { summarizeBlackholePath } from '../src/bench/blackhole-metrics.js';
import type { BenchClient, ClientRequest, ClientResponse } from '../src/bench/clients/types.js';
import { areaOf, summarizeCpuProfile, type CpuProfile } from '../src/bench/cpu-profile.js';
import { BenchUsageError } from '../src/bench/errors.js';
import { auditWrites, summarizePath } from '../src/bench/failover-metrics.js';
import { simulateReconnect, simulateSteadyLoad, STALLGUARD_DEFAULT_TIMINGS } from '../src/bench/fleet-model.js';
import { parseH2loadLog, parseH2loadOutput } from '../src/bench/h2load.js';
import { haproxyServerNames, parseShowStat, renderHaproxyConfig } from '../src/bench/haproxy.js';
import { KubeletLoop, STATUS_UPDATE_ANNOTATION, type RequestRecord } from '../src/bench/kubelet-loop.js';
import { renderNginxConfig } from '../src/bench/nginx.js';
import { parseProcStatTicks, parseProcStatus, readProcessUsage } from '../src/bench/proc-stats.js';
import { SeededRandom } from '../src/bench/random.js';
import { writeAttachments } from '../src/bench/results.js';
import { renderStallguardConfig } from '../src/bench/stallguard-process.js';
import { median, percentile, ratio } from '../src/bench/stats.js';
import { niceCeiling, renderLineChart } from '../src/bench/svg-chart.js';
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
      { binary: 'haproxy', dir: '/run/x', frontendPem: '', backend: { ports: [6443], caPath: '/run/ca.crt' }, timeoutServerMs: 20_000 },
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

describe('bench helpers of the new scenarios', () => {
  it('haproxy config lists every backend server', () => {
    const config = renderHaproxyConfig(
      { binary: 'haproxy', dir: '/run/x', frontendPem: '', backend: { ports: [7001, 7002, 7003], caPath: '/run/ca.crt', clientPemPath: '/run/node.pem' }, timeoutServerMs: 20_000 },
      8443,
    );

    expect(haproxyServerNames(3)).toEqual(['api1', 'api2', 'api3']);
    expect(haproxyServerNames(1)).toEqual(['api']);
    for (const [index, port] of [7001, 7002, 7003].entries()) {
      expect(config).toContain(
        `server api${index + 1} 127.0.0.1:${port} ssl verify required ca-file /run/ca.crt crt /run/node.pem alpn h2 check inter 1s fall 2 rise 1 on-marked-down shutdown-sessions`,
      );
    }
    expect(() => renderHaproxyConfig({ binary: 'haproxy', dir: '/run/x', frontendPem: '', backend: { ports: [], caPath: '/c' }, timeoutServerMs: 1 }, 1)).toThrow(RangeError);
  });

  it('stallguard config binds loopback only', () => {
    const config = renderStallguardConfig(
      { dir: '/run/x', certPath: '/c', keyPath: '/k', caPath: '/ca', endpoints: ['https://127.0.0.1:7001'], upstreamClient: { certPath: '/nc', keyPath: '/nk' }, name: 'sg' },
      9443,
      9090,
    ) as Record<string, any>;

    expect(config.listen.address).toBe('127.0.0.1:9443');
    expect(config.metrics.address).toBe('127.0.0.1:9090');
    expect(config.upstream.tls).toEqual({ ca: '/ca', cert: '/nc', key: '/nk' });
    expect(config.stateDir).toBe('/run/x/sg-state');
  });

  it('proc status and stat parsing', () => {
    const status = 'Name:\tnode\nVmHWM:\t  81234 kB\nVmRSS:\t   76016 kB\nThreads:\t11\n';
    // A command name with a space and a ")" must not shift the fields.
    const stat = '4242 (my proc) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 11 0 123 456 789';

    expect(parseProcStatus(status)).toEqual({ rssKiB: 76016, peakRssKiB: 81234 });
    expect(parseProcStatTicks(stat)).toBe(325);
    expect(() => parseProcStatus('Name:\tnode\n')).toThrow('no VmRSS line');
    expect(() => parseProcStatTicks('garbage')).toThrow('parentheses');
  });

  it('proc usage of this process', () => {
    const usage = readProcessUsage(process.pid);

    expect(usage.rssKiB).toBeGreaterThan(1024);
    expect(usage.peakRssKiB).toBeGreaterThanOrEqual(usage.rssKiB);
    expect(usage.cpuMs).toBeGreaterThan(0);
  });

  it('cpu profile self time from the timeline', () => {
    const profile: CpuProfile = {
      nodes: [
        { id: 1, callFrame: { functionName: '(root)', url: '', lineNumber: -1 }, children: [2, 3, 4] },
        { id: 2, callFrame: { functionName: 'forward', url: 'file:///repo/dist/proxy/forward.js', lineNumber: 9 } },
        { id: 3, callFrame: { functionName: '(idle)', url: '', lineNumber: -1 } },
        { id: 4, callFrame: { functionName: 'request', url: 'node:internal/http2/core', lineNumber: 99 } },
      ],
      startTime: 0,
      endTime: 10_000,
      // Sample i lasts until sample i+1: forward 3 ms, idle 2 ms, request 4 ms, forward 1 ms to the end.
      samples: [2, 3, 4, 2],
      timeDeltas: [0, 3000, 2000, 4000],
    };

    const summary = summarizeCpuProfile(profile, 2);

    expect(summary.durationMs).toBe(10);
    expect(summary.busyMs).toBe(8);
    expect(summary.topFunctions).toEqual([
      { name: 'forward', location: 'dist/proxy/forward.js:10', area: 'stallguard proxy', selfMs: 4, percent: 40 },
      { name: 'request', location: 'node:internal/http2/core:100', area: 'node http2', selfMs: 4, percent: 40 },
    ]);
    expect(summary.areas.find((area) => area.area === 'idle')).toEqual({ area: 'idle', selfMs: 2, percent: 20 });
  });

  it('cpu profile areas', () => {
    expect(areaOf('(garbage collector)', '')).toBe('garbage collector');
    expect(areaOf('onread', 'node:_tls_wrap')).toBe('node tls and crypto');
    expect(areaOf('write', 'file:///r/node_modules/pino/lib/proto.js')).toBe('pino (logging)');
    expect(areaOf('acquire', 'file:///r/dist/upstream/pool.js')).toBe('stallguard upstream');
  });

  it('blackhole metrics count failed requests with their latency', () => {
    const records: RequestRecord[] = [
      { kind: 'get-node', tick: 0, sentAtMs: 0, endedAtMs: 5, ok: true, status: 200 },
      { kind: 'get-node', tick: 1, sentAtMs: 100, endedAtMs: 3100, ok: false, error: 'ERR_STREAM_RESET' },
      { kind: 'put-lease', tick: 1, sentAtMs: 100, endedAtMs: 1600, ok: true, status: 200, renewal: 1 },
      { kind: 'patch-status', tick: 2, sentAtMs: 200, endedAtMs: 260, ok: false, status: 503, statusUpdate: 1 },
      { kind: 'get-node', tick: 3, sentAtMs: 300 },
    ];

    const outcome = summarizeBlackholePath(records);

    expect(outcome.requests).toEqual({ 'get-node': 3, 'put-lease': 1, 'patch-status': 1 });
    expect(outcome.failed).toEqual({ 'get-node': 1, 'put-lease': 0, 'patch-status': 1 });
    expect(outcome.failureCauses).toEqual({ ERR_STREAM_RESET: 1, 'status 503': 1 });
    expect(outcome.latencyMs.max).toBe(3000);
    expect(outcome.slowRequests).toBe(2);
    expect(outcome.unfinished).toBe(1);
  });

  it('audits status patches by their own numbers', () => {
    const records: RequestRecord[] = [
      { kind: 'patch-status', tick: 0, sentAtMs: 0, endedAtMs: 1, ok: true, statusUpdate: 1 },
      { kind: 'patch-status', tick: 1, sentAtMs: 1, endedAtMs: 2, ok: true, statusUpdate: 2 },
      { kind: 'put-lease', tick: 0, sentAtMs: 0, endedAtMs: 1, ok: true, renewal: 1 },
    ];

    expect(auditWrites(records, [1, 2], 'patch-status')).toEqual({ acknowledged: 2, appliedAtServer: 2, appliedUnacknowledged: 0, duplicated: 0, lost: 0 });
    expect(auditWrites(records, [1], 'patch-status')).toMatchObject({ lost: 1 });
  });

  it('kubelet loop patches status between renewals', async () => {
    const sent: ClientRequest[] = [];
    const client: BenchClient = {
      counters: { sessionsOpened: 0, sessionsDropped: 0, pingsSent: 0, pingsTimedOut: 0 },
      send: async (request): Promise<ClientResponse> => {
        sent.push(request);
        return { status: 200, headers: {}, body: Buffer.alloc(0), trailers: {} };
      },
      close: () => undefined,
    };
    const loop = new KubeletLoop(client, 'n7', { tickMs: 100, leaseEveryTicks: 4, statusEveryTicks: 4, requestTimeoutMs: 1000 }, () => 0);

    for (let tick = 0; tick < 8; tick++) loop.tick(tick);
    await loop.settle();

    const patches = loop.records.filter((record) => record.kind === 'patch-status');
    expect(patches.map((record) => [record.tick, record.statusUpdate])).toEqual([[2, 1], [6, 2]]);
    expect(loop.records.filter((record) => record.kind === 'put-lease').map((record) => record.tick)).toEqual([0, 4]);
    const patch = sent.find((request) => request.method === 'PATCH')!;
    expect(patch.path).toBe('/api/v1/nodes/n7/status');
    expect(JSON.parse(String(patch.body)).metadata.annotations[STATUS_UPDATE_ANNOTATION]).toBe('1');
  });

  it('fleet model reconnects each session once, after the outage', () => {
    const random = new SeededRandom(1);
    const draw = () => random.next();

    for (const jitter of ['full', 'fixed'] as const) {
      const outcome = simulateReconnect({ nodes: 500, sessionsPerNode: 2, jitter, outageMs: 10_000 }, STALLGUARD_DEFAULT_TIMINGS, draw);

      expect(outcome.handshakesPerBin.reduce((sum, count) => sum + count, 0)).toBe(1000);
      expect(outcome.handshakesPerBin.slice(0, 100).every((count) => count === 0)).toBe(true);
      expect(outcome.failedDials).toBeGreaterThan(1000);
    }
  });

  it('fleet model: full jitter spreads a late reconnect', () => {
    const random = new SeededRandom(2);
    const draw = () => random.next();
    const run = { nodes: 1000, sessionsPerNode: 2, outageMs: 30_000 };

    const full = simulateReconnect({ ...run, jitter: 'full' }, STALLGUARD_DEFAULT_TIMINGS, draw);
    const fixed = simulateReconnect({ ...run, jitter: 'fixed' }, STALLGUARD_DEFAULT_TIMINGS, draw);

    // Without jitter every session keeps the offset it got from its PING timing (under 1 s apart).
    expect(fixed.reconnectedMs.all - fixed.handshakesPerBin.findIndex((count) => count > 0) * fixed.binMs).toBeLessThanOrEqual(1100);
    // With full jitter the last backoff step (up to 5 s) spreads them further.
    expect(full.reconnectedMs.all - full.reconnectedMs.p50).toBeGreaterThan(1000);
  });

  it('fleet model: idle PINGs are at least one per interval', () => {
    const random = new SeededRandom(3);
    const steady = simulateSteadyLoad(100, 2, STALLGUARD_DEFAULT_TIMINGS, () => random.next(), 60_000);

    // shortenedInterval() shortens by up to 20 %, so the rate lies between 1 and 1.25 per interval.
    expect(steady.pingsPerSecond).toBeGreaterThanOrEqual(200);
    expect(steady.pingsPerSecond).toBeLessThanOrEqual(250);
    expect(steady.probesPerSecond).toBeGreaterThanOrEqual(20);
    expect(steady.probesPerSecond).toBeLessThanOrEqual(25);
    expect(steady.pingFrameBytesPerSecond).toBe(Math.round(steady.pingsPerSecond * 34));
  });

  it('svg chart draws one line per series', () => {
    const svg = renderLineChart({
      title: 'a < b & c',
      xLabel: 's',
      yLabel: 'per s',
      panels: [
        { title: 'one', series: [{ name: 'x', color: '#000', points: [[0, 1], [1, 3]] }, { name: 'y', color: '#f00', points: [[0, 2], [1, 0]] }] },
        { title: 'two', series: [{ name: 'x', color: '#000', points: [[0, 5]] }, { name: 'y', color: '#f00', points: [[0, 7]] }] },
      ],
    });

    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg.match(/<polyline /g)).toHaveLength(4);
    expect(svg).toContain('a &lt; b &amp; c');
    expect(niceCeiling(23_140)).toBe(50_000);
    expect(niceCeiling(7)).toBe(10);
  });

  it('attachments reject an invalid extension', () => {
    const dir = join(outDir, 'attachments');

    expect(() => writeAttachments(dir, 'fleet', new Date(0), { json: '{}' })).toThrow('invalid attachment extension');
    expect(() => writeAttachments(dir, 'fleet', new Date(0), { '../x': '' })).toThrow('invalid attachment extension');
    expect(writeAttachments(dir, 'fleet', new Date(0), { svg: '<svg/>' })).toEqual({ svg: join(dir, 'fleet-1970-01-01T000000Z.svg') });
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

  it('replica-blackhole --quick keeps the invariants', async (context) => {
    requireToolsOrSkip(context, ['haproxy']);
    const out = join(outDir, 'replica-blackhole');

    const run = await runBench(['replica-blackhole', '--quick', '--seed', '7', '--out', out]);

    const result = readOnlyResult(out, 'replica-blackhole', run.stderr);
    expectMachineDescribed(result.machine);
    expect(result.invariants).toEqual({
      equalRequestCounts: true,
      everyRequestEnded: true,
      noDuplicatedWrites: true,
      noLostWrites: true,
      allProcessesEnded: true,
    });
    expect(run.status, tail(run.stderr)).toBe(0);

    expect(result.repetitions).toHaveLength(1);
    const repetition = result.repetitions[0];
    expect(repetition.stallguardReplicasInUse).toContain(repetition.victim);
    const paths = Object.values(repetition.paths) as BlackholePathResult[];
    expect(paths).toHaveLength(2);
    for (const path of paths) {
      expect(path.requests).toEqual(paths[0]!.requests);
      expect(path.requests['put-lease']).toBeGreaterThan(0);
      expect(path.requests['patch-status']).toBeGreaterThan(0);
      for (const writes of [path.leaseWrites, path.statusWrites]) {
        expect(writes.duplicated).toBe(0);
        expect(writes.lost).toBe(0);
      }
    }
    expectProcessesEnded(result.processes, ['haproxy']);
  });

  it('footprint --quick keeps the invariants', async (context) => {
    requireToolsOrSkip(context, ['haproxy']);
    const out = join(outDir, 'footprint');

    const run = await runBench(['footprint', '--quick', '--out', out]);

    const result = readOnlyResult(out, 'footprint', run.stderr);
    expect(result.invariants).toEqual({
      everyRepetitionMeasured: true,
      equalRequestCounts: true,
      everyRequestSucceeded: true,
      everyWatchStayedOpen: true,
      noDuplicatedWrites: true,
      noLostWrites: true,
      allProcessesEnded: true,
    });
    expect(run.status, tail(run.stderr)).toBe(0);

    const paths = result.repetitions[0].paths as Record<string, FootprintPathResult>;
    expect(Object.keys(paths)).toEqual(['stallguard', 'haproxy']);
    for (const path of Object.values(paths)) {
      expect(path.watchesOpen).toBe(result.parameters.watches);
      expect(path.idle.rssKiB).toBeGreaterThan(0);
      expect(path.loaded.rssKiB).toBeGreaterThan(0);
    }
    const stallguard = (result.processes as ProcessRecordResult[]).find((entry) => entry.name === 'stallguard')!;
    expect(stallguard.args).toContain('--config');
    expectProcessesEnded(result.processes, ['stallguard', 'haproxy']);
  });

  it('scale --quick loses nothing', async (context) => {
    requireToolsOrSkip(context, ['haproxy']);
    const out = join(outDir, 'scale');

    const run = await runBench(['scale', '--quick', '--out', out]);

    const result = readOnlyResult(out, 'scale', run.stderr);
    expect(result.invariants).toEqual({
      equalRequestCounts: true,
      everyWatchOpened: true,
      everyWatchReceivedEveryEvent: true,
      everyRequestAnswered: true,
      noWatchEnded: true,
      allProcessesEnded: true,
    });
    expect(run.status, tail(run.stderr)).toBe(0);

    for (const path of Object.values(result.paths) as ScalePathResult[]) {
      expect(path.watchesOpen).toBe(result.parameters.watches);
      expect(path.events.map((event) => event.receivedBy)).toEqual([result.parameters.watches, result.parameters.watches]);
      expect(path.burst.answered).toBe(result.parameters.burstRequests);
    }
    expectProcessesEnded(result.processes, ['stallguard', 'haproxy']);
  });

  it('fleet --quick keeps the invariants and writes the chart', async () => {
    const out = join(outDir, 'fleet');

    const run = await runBench(['fleet', '--quick', '--seed', '7', '--out', out]);

    expect(run.status, tail(run.stderr)).toBe(0);
    const files = readdirSync(out).sort();
    expect(files).toHaveLength(2);
    expect(files[1]).toBe(files[0]!.replace(/\.json$/, '.svg'));
    const result = JSON.parse(readFileSync(join(out, files[0]!), 'utf8'));
    expect(result.invariants).toEqual({
      everyRunSimulated: true,
      everySessionReconnectedOnce: true,
      noHandshakeDuringOutage: true,
      equalSessionCounts: true,
      allProcessesEnded: true,
    });
    expect(result.attachments.svg).toBe(join(out, files[1]!));
    expect(result.processes).toEqual([]);
    expect(readFileSync(join(out, files[1]!), 'utf8')).toMatch(/^<svg [^>]*>[\s\S]*<polyline [\s\S]*<\/svg>\n$/);
  });

  it('profile --quick writes a profile with samples', async (context) => {
    requireToolsOrSkip(context, ['h2load', 'nginx']);
    const out = join(outDir, 'profile');

    const run = await runBench(['profile', '--quick', '--out', out]);

    const result = readOnlyResult(out, 'profile', run.stderr);
    expect(result.invariants).toEqual({ everyRequestSucceeded: true, stallguardExitedCleanly: true, profileHasSamples: true, allProcessesEnded: true });
    expect(run.status, tail(run.stderr)).toBe(0);
    expect(result.profileFile).toMatch(new RegExp(`^${out}/tmp/stallguard-.*\\.cpuprofile$`));
    expect(existsSync(result.profileFile)).toBe(true);
    const stallguard = (result.processes as ProcessRecordResult[]).find((entry) => entry.name === 'stallguard')!;
    expect(stallguard.args[0]).toBe('--cpu-prof');
    expectProcessesEnded(result.processes, ['nginx', 'stallguard']);
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

interface BlackholePathResult {
  requests: Record<string, number>;
  leaseWrites: { duplicated: number; lost: number };
  statusWrites: { duplicated: number; lost: number };
}

interface FootprintPathResult {
  watchesOpen: number;
  idle: { rssKiB: number };
  loaded: { rssKiB: number };
}

interface ScalePathResult {
  watchesOpen: number;
  events: Array<{ receivedBy: number }>;
  burst: { answered: number };
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
  // A scenario may keep other files beside its result (the profile keeps a tmp/ directory).
  const files = (existsSync(dir) ? readdirSync(dir) : []).filter((name) => name.endsWith('.json'));
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
