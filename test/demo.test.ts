import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { demoClients } from '../src/demo/clients.js';
import { renderSummary, summarize, type SummaryInput } from '../src/demo/summary.js';
import { FakeApiServer } from '../src/testbed/fake-apiserver.js';
import { FaultRelay } from '../src/testbed/fault-relay.js';
import { ClientRecord, clientGoHealthCheck, KubeletClient, kubeletTimings, type KubeletEvent, type KubeletOperation } from '../src/testbed/kubelet-client.js';
import { GoHttp2Connection } from '../src/testbed/kubelet/go-connection.js';
import { createTestPki, type TestPki } from '../src/testbed/pki.js';
import { ReplicatedStores } from '../src/testbed/replicated-store.js';
import { sleep, waitFor } from './helpers/wait.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DEMO = path.join(ROOT, 'dist', 'demo', 'main.js');

interface DemoRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the built demo; `onStdout` may act on the output so far, such as sending a signal. */
function runDemo(args: string[], timeoutMs: number, onStdout?: (stdout: string, child: ReturnType<typeof spawn>) => void): Promise<DemoRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DEMO, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`demo ${args.join(' ')} did not exit within ${timeoutMs} ms; output so far:\n${stdout}\n${stderr}`));
    }, timeoutMs);

    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      onStdout?.(stdout, child);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Removes the temporary directory of stallguard's log that the demo named in its output. */
function removeLogDir(stdout: string): void {
  const logFile = /stallguard's log: (\S+)/.exec(stdout)?.[1];
  if (logFile !== undefined && path.basename(path.dirname(logFile)).startsWith('stallguard-demo-')) {
    fs.rmSync(path.dirname(logFile), { recursive: true, force: true });
  }
}

/** Command lines of running processes that mention `marker`. */
function processesMentioning(marker: string): string[] {
  const listing = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
  return listing.split('\n').filter((line) => line.includes(marker) && !line.includes('ps -eo'));
}

let workDir: string;

beforeAll(() => {
  if (!fs.existsSync(DEMO)) execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-demo-test-'));
  return () => fs.rmSync(workDir, { recursive: true, force: true });
}, 120_000);

describe('npm run demo', () => {
  let cleanupLogDir: (() => void) | undefined;

  afterEach(() => {
    cleanupLogDir?.();
    cleanupLogDir = undefined;
  });

  it('short run passes through stallguard', async () => {
    const jsonPath = path.join(workDir, 'summary.json');
    const run = await runDemo(['--scale', '0.2', '--duration', '16s', '--json', jsonPath], 45_000);
    cleanupLogDir = () => removeLogDir(run.stdout);

    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('INCIDENT');
    expect(run.stdout).toContain('PASS');
    expect(processesMentioning(jsonPath)).toEqual([]);

    const summary = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
    expect(summary.scale).toBe(0.2);
    expect(summary.passed).toBe(true);
    const detectionMs = summary.timers.clientGo.readIdleTimeoutMs + summary.timers.clientGo.pingTimeoutMs;
    expect(detectionMs).toBe(9000);

    const throughStallguard = summary.clients.find((client: { name: string }) => client.name === 'stallguard');
    expect(throughStallguard.requestsFailed).toBe(0);
    expect(throughStallguard.leaseRequestsFailed).toBe(0);
    expect(throughStallguard.requests).toBeGreaterThan(10);
    expect(throughStallguard.notReady).toBe(false);
    expect(throughStallguard.watchEvents.missed).toBe(0);
    // stallguard ended the watch cleanly, so the reflector resumed it without a second LIST.
    expect(throughStallguard.watchesEndedCleanly).toBeGreaterThanOrEqual(1);
    expect(throughStallguard.lists).toBe(1);
    expect(throughStallguard.watchEvents.emitted).toBeGreaterThan(20);
    expect(throughStallguard.recoveredAfterMs).toBeLessThan(detectionMs / 2);
    expect(summary.stallguard.sessionsEvictedAfterPingTimeout).toBeGreaterThanOrEqual(1);

    // A stock kubelet straight to the balancer closes its connection after two failed heartbeats,
    // so it recovers before client-go's health check would; it still fails requests meanwhile.
    const kubelet = summary.clients.find((client: { name: string }) => client.name === 'kubelet');
    expect(kubelet.connectionsClosed['heartbeat-failure']).toBeGreaterThanOrEqual(1);
    expect(kubelet.requestsFailed).toBeGreaterThan(0);
    expect(kubelet.recoveredAfterMs).toBeGreaterThan(throughStallguard.recoveredAfterMs);

    const direct = summary.clients.find((client: { name: string }) => client.name === 'client-go');
    expect(direct.longestSilenceMs).toBeGreaterThan(detectionMs);
    expect(direct.recoveredAfterMs).toBeGreaterThan(throughStallguard.recoveredAfterMs);
    expect(direct.leaseRequestsFailed).toBeGreaterThan(0);
    expect(direct.connectionsClosed['health-check']).toBe(1);
    expect(direct.watchEvents.missed).toBeGreaterThan(0);
    expect(direct.watchesBroken).toBe(1);
    expect(direct.lists).toBe(2);
    expect(fs.existsSync(summary.stallguard.logFile)).toBe(true);
    expect(fs.readFileSync(summary.stallguard.logFile, 'utf8')).toContain('"reason":"ping_timeout"');
  }, 60_000);

  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
] as const)('%s mid-run cleans up and exits %i', async (signal, expectedCode) => {
    let sent = false;
    const run = await runDemo(['--scale', '0.2', '--duration', '30s'], 20_000, (stdout, child) => {
      if (!sent && stdout.includes('INCIDENT')) {
        sent = true;
        child.kill(signal);
      }
    });
    cleanupLogDir = () => removeLogDir(run.stdout);

    expect(sent).toBe(true);
    expect(run.code).toBe(expectedCode);
    expect(run.stdout).toContain('interrupted');
    expect(run.stdout).not.toContain('PASS');
    expect(run.stderr).toBe('');
  }, 30_000);

  it('invalid options exit 2 with the fix', async () => {
    const cases: Array<[string[], string]> = [
      [['--scale', '0'], 'invalid --scale "0"'],
      [['--scale', '0.1'], 'shorter than stallguard'],
      [['--duration', '1s'], 'is too short'],
      [['--duration', 'soon'], 'invalid --duration "soon"'],
      [['--nave'], 'did you mean --naive?'],
      [['--json'], 'option --json needs a value'],
    ];
    for (const [args, message] of cases) {
      const run = await runDemo(args, 10_000);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr, args.join(' ')).toContain(message);
    }
  });
});

describe('kubelet-like client', () => {
  let pki: TestPki;
  const cleanups: Array<() => Promise<void> | void> = [];

  beforeAll(async () => {
    pki = await createTestPki(path.join(workDir, 'pki'));
  });

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function serverBehindRelay(): Promise<{ server: FakeApiServer; relay: FaultRelay; url: string }> {
    const server = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem });
    await server.listen(0, '127.0.0.1');
    cleanups.push(() => server.close());
    const relay = new FaultRelay({ target: { host: '127.0.0.1', port: server.port } });
    await relay.listen(0, '127.0.0.1');
    cleanups.push(() => relay.close());
    return { server, relay, url: `https://127.0.0.1:${relay.port}` };
  }

  function connection(url: string, events: KubeletEvent[], healthCheck?: { readIdleTimeoutMs: number; pingTimeoutMs: number }): GoHttp2Connection {
    const conn = new GoHttp2Connection({
      client: 'test',
      url,
      tls: { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem },
      healthCheck,
      dialTimeoutMs: 2000,
      userAgent: 'test',
      emit: (event) => events.push(event),
    });
    cleanups.push(() => conn.stop());
    return conn;
  }

  it('timed-out request keeps the connection', async () => {
    const { server, relay, url } = await serverBehindRelay();
    const events: KubeletEvent[] = [];
    const conn = connection(url, events);
    expect((await conn.request({ operation: 'node-get', method: 'GET', path: '/api/v1/nodes/n1' })).status).toBe(200);

    // A delay, not a blackhole: dropped frames would desynchronise HPACK and break the session.
    relay.delay(1000);
    await expect(conn.request({ operation: 'node-get', method: 'GET', path: '/api/v1/nodes/n1', timeoutMs: 300 })).rejects.toMatchObject({ code: 'timeout' });
    relay.delay(0);
    expect((await conn.request({ operation: 'node-get', method: 'GET', path: '/api/v1/nodes/n1', timeoutMs: 2000 })).status).toBe(200);

    const sessions = new Set(server.requests.map((request) => request.sessionId));
    expect(sessions.size).toBe(1);
    expect(events.filter((event) => event.type === 'connection-opened')).toHaveLength(1);
    const failed = events.filter((event) => event.type === 'request' && !event.ok);
    expect(failed).toHaveLength(1);
  });

  it('health check closes a silent connection', async () => {
    const { relay, url } = await serverBehindRelay();
    const events: KubeletEvent[] = [];
    const conn = connection(url, events, { readIdleTimeoutMs: 400, pingTimeoutMs: 300 });
    expect((await conn.request({ operation: 'node-get', method: 'GET', path: '/api/v1/nodes/n1' })).status).toBe(200);
    const lastRead = Date.now();

    relay.failover();
    const pending = conn.request({ operation: 'node-get', method: 'GET', path: '/api/v1/nodes/n1' });
    await expect(pending).rejects.toMatchObject({ code: 'connection-lost' });
    const closedAfter = Date.now() - lastRead;

    expect(closedAfter).toBeGreaterThanOrEqual(400 + 300);
    expect(closedAfter).toBeLessThan(400 + 300 + 1000);
    await waitFor(() => events.some((event) => event.type === 'connection-closed'), 1000, 'the connection-closed event');
    expect(events.find((event) => event.type === 'connection-closed')).toMatchObject({ reason: 'health-check' });
    expect(events.filter((event) => event.type === 'health-check').map((event) => event.type === 'health-check' && event.outcome)).toEqual(['ping-sent', 'ping-timeout']);
    expect((await conn.request({ operation: 'node-get', method: 'GET', path: '/api/v1/nodes/n1', timeoutMs: 2000 })).status).toBe(200);
  });

  it('without health check stays on a silent connection', async () => {
    const { relay, url } = await serverBehindRelay();
    const events: KubeletEvent[] = [];
    const conn = connection(url, events);
    expect((await conn.request({ operation: 'node-get', method: 'GET', path: '/api/v1/nodes/n1' })).status).toBe(200);

    relay.failover();
    for (let i = 0; i < 3; i++) {
      await expect(conn.request({ operation: 'node-get', method: 'GET', path: '/api/v1/nodes/n1', timeoutMs: 200 })).rejects.toMatchObject({ code: 'timeout' });
    }
    expect(events.filter((event) => event.type === 'connection-opened')).toHaveLength(1);
    expect(events.filter((event) => event.type === 'connection-closed')).toHaveLength(0);
  });

  it('stop ends a dial into a tarpit', async () => {
    const { relay, url } = await serverBehindRelay();
    relay.tarpit();
    const events: KubeletEvent[] = [];
    const conn = connection(url, events);

    const pending = conn.request({ operation: 'node-get', method: 'GET', path: '/api/v1/nodes/n1' });
    await sleep(100);
    const stoppedAt = Date.now();
    conn.stop();

    await expect(pending).rejects.toMatchObject({ code: 'stopped' });
    expect(Date.now() - stoppedAt).toBeLessThan(500);
    expect(events).toEqual([]);
  });

  it('renews its lease with the stored resourceVersion', async () => {
    const { server, url } = await serverBehindRelay();
    server.putObject('nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' }, status: {} });
    const record = new ClientRecord('test');
    const client = new KubeletClient({
      name: 'test',
      nodeName: 'node-a',
      url,
      tls: { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem },
      timings: kubeletTimings(0.02),
      healthCheck: undefined,
      onEvent: (event) => record.add(event),
    });
    client.start();
    cleanups.push(() => client.stop());

    await waitFor(() => server.writeCounts('leases', 'kube-node-lease', 'node-a').updates >= 3, 5000, 'three lease renewals');
    await client.stop();

    expect(server.writeCounts('leases', 'kube-node-lease', 'node-a').creates).toBe(1);
    const leaseWrites = server.requests.filter((request) => request.path.includes('/leases'));
    expect(leaseWrites[0]).toMatchObject({ method: 'GET', status: 404 });
    expect(leaseWrites[1]).toMatchObject({ method: 'POST', status: 201 });
    // A PUT still in flight when the client stopped has no status. Every PUT with a response succeeded.
    const putStatuses = leaseWrites.filter((request) => request.method === 'PUT' && request.status !== undefined).map((request) => request.status);
    expect(putStatuses.length).toBeGreaterThanOrEqual(3);
    expect(putStatuses.filter((status) => status !== 200)).toEqual([]);
    expect(leaseWrites[2]!.path).toContain('timeout=200ms');
    expect(record.failedRequests).toBe(0);
    expect(record.lists).toBe(1);
    expect(server.writeCounts('nodes', undefined, 'node-a').updates).toBeGreaterThanOrEqual(1);
  });
});

describe('replicated stores', () => {
  it('keep resourceVersions equal across replicas', async () => {
    const pki = await createTestPki(path.join(workDir, 'pki-replicas'));
    const servers = [0, 1, 2].map(() => new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem }));
    const replication = new ReplicatedStores(servers.map((server) => server.store));

    const created = servers[0]!.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'a', namespace: 'default' } });
    const updated = servers[2]!.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'a', namespace: 'default' }, data: { k: 'v' } });
    expect(servers[1]!.deleteObject('configmaps', 'default', 'a')).toBe(true);
    replication.stop();
    const afterStop = servers[0]!.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'b', namespace: 'default' } });

    expect(Number(updated.metadata.resourceVersion)).toBe(Number(created.metadata.resourceVersion) + 1);
    for (const server of servers) {
      expect(server.getObject('configmaps', 'default', 'a')).toBeUndefined();
      expect(server.store.changesSince(Number(created.metadata.resourceVersion) - 1).map((change) => change.type)).toEqual(
        server === servers[0] ? ['ADDED', 'MODIFIED', 'DELETED', 'ADDED'] : ['ADDED', 'MODIFIED', 'DELETED'],
      );
    }
    expect(servers[1]!.getObject('configmaps', 'default', 'b')).toBeUndefined();
    expect(afterStop.metadata.name).toBe('b');
    await sleep(0);
  });

  it('reject stores that already differ', async () => {
    const pki = await createTestPki(path.join(workDir, 'pki-differ'));
    const servers = [0, 1].map(() => new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem }));
    servers[0]!.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'a', namespace: 'default' } });

    expect(() => new ReplicatedStores(servers.map((server) => server.store))).toThrow(/different resourceVersions/);
  });
});

describe('demo summary', () => {
  const T0 = 1_000_000;

  function request(client: string, atMs: number, operation: KubeletOperation, ok: boolean): KubeletEvent {
    return {
      type: 'request',
      client,
      at: T0 + atMs,
      operation,
      method: 'PUT',
      ok,
      latencyMs: ok ? 5 : 10_000,
      failure: ok ? undefined : { code: 'timeout', message: 'timed out; stream reset with CANCEL, connection kept' },
    };
  }

  function input(records: Map<string, ClientRecord>): SummaryInput {
    const changes = [10, 11, 12, 13, 14, 15].map((resourceVersion, i) => ({ resourceVersion, at: T0 + 2000 * (i + 1) }));
    return {
      version: 'test',
      scale: 1,
      durationMs: 90_000,
      gracePeriodMs: 40_000,
      stallguardUpstream: 'balancer',
      timers: { kubelet: kubeletTimings(1), clientGo: clientGoHealthCheck(1), stallguard: { pingIntervalMs: 1000, pingTimeoutMs: 1000 } },
      clients: demoClients({ naive: false, healthCheck: clientGoHealthCheck(1) }).filter((client) => client.name !== 'kubelet'),
      records,
      podChanges: new Map([
        ['node-client-go', changes],
        ['node-stallguard', changes],
      ]),
      startedAt: T0,
      endedAt: T0 + 90_000,
      incidentAt: T0 + 12_500,
      stallguard: { sessionsEvictedAfterPingTimeout: 1, sessionsEvicted: 1, logFile: '/tmp/stallguard.log' },
    };
  }

  function records(): Map<string, ClientRecord> {
    const direct = new ClientRecord('client-go');
    const throughStallguard = new ClientRecord('stallguard');
    for (const record of [direct, throughStallguard]) {
      record.add({ type: 'pods-listed', client: record.name, at: T0 + 50, resourceVersion: '10', podVersions: ['10'] });
      record.add(request(record.name, 100, 'lease-create', true));
      record.add(request(record.name, 10_100, 'lease-update', true));
    }

    direct.add({ type: 'watch-event', client: 'client-go', at: T0 + 4000, eventType: 'MODIFIED', resourceVersion: '11' });
    direct.add(request('client-go', 30_100, 'lease-update', false));
    direct.add(request('client-go', 57_000, 'lease-update', true));
    for (let at = 67_000; at <= 87_000; at += 10_000) direct.add(request('client-go', at, 'lease-update', true));

    for (const version of ['11', '12', '13', '14', '15']) {
      throughStallguard.add({ type: 'watch-event', client: 'stallguard', at: T0 + 14_000, eventType: 'MODIFIED', resourceVersion: version });
    }
    for (let at = 20_100; at <= 80_100; at += 10_000) throughStallguard.add(request('stallguard', at, 'lease-update', true));
    return new Map([
      ['client-go', direct],
      ['stallguard', throughStallguard],
    ]);
  }

  it('summary measures gaps, recovery and misses', () => {
    const summary = summarize(input(records()));
    const [direct, throughStallguard] = summary.clients;

    expect(direct!.longestLeaseGapMs).toBe(46_900);
    expect(direct!.notReady).toBe(true);
    expect(direct!.recoveredAfterMs).toBe(44_500);
    expect(direct!.longestSilenceMs).toBe(46_900);
    expect(direct!.requestsFailed).toBe(1);
    expect(direct!.leaseRequestsFailed).toBe(1);
    expect(direct!.worstLatencyMs).toBe(10_000);
    expect(direct!.watchEvents).toEqual({ emitted: 5, received: 1, missed: 4 });
    expect(direct!.failures).toEqual([{ atMs: 30_100, operation: 'lease-update', message: 'timed out; stream reset with CANCEL, connection kept' }]);

    expect(throughStallguard!.longestLeaseGapMs).toBe(10_000);
    expect(throughStallguard!.notReady).toBe(false);
    expect(throughStallguard!.recoveredAfterMs).toBe(1500);
    expect(throughStallguard!.watchEvents).toEqual({ emitted: 5, received: 5, missed: 0 });
    expect(summary.passed).toBe(true);
    expect(summary.incidentAtMs).toBe(12_500);

    const table = renderSummary(summary);
    expect(table).toContain('PASS');
    expect(table).toMatch(/longest lease gap\s+46\.9 s\s+10\.0 s/);
    expect(table).toMatch(/watch events missed\s+4 of 5\s+0 of 5/);
    expect(table).toMatch(/worst request latency\s+10\.0 s\s+5 ms/);
  });

  it('summary fails on a stallguard-side failure', () => {
    const withFailure = records();
    withFailure.get('stallguard')!.add(request('stallguard', 13_000, 'node-status-patch', false));
    const summary = summarize(input(withFailure));

    expect(summary.passed).toBe(false);
    const table = renderSummary(summary);
    expect(table).toContain('FAIL: the client through stallguard had failed requests:');
    expect(table).toContain('13.0 s  node-status-patch: timed out; stream reset with CANCEL, connection kept');
    expect(table).not.toContain('PASS');
  });
});
