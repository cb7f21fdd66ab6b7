import http2 from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { connectH2, h2Request } from '../src/testbed/client.js';
import { startStack, type ConfigOverrides, type Stack } from '../src/testbed/stack.js';
import { expectOnlyUnknownOutcomeWrites, startKubeletLoad } from './helpers/load.js';
import { counterValue } from './helpers/metrics.js';
import { sleep, waitFor } from './helpers/wait.js';

const DETECTION_MS = 1000 + 1000 + 500;

let stack: Stack | undefined;
let session: http2.ClientHttp2Session | undefined;

afterEach(async () => {
  session?.close();
  session = undefined;
  await stack?.close();
  stack = undefined;
});

async function startReplicas(config: ConfigOverrides = {}) {
  stack = await startStack({ replicas: 3, topology: 'relays', replicate: true, config: { upstream: { warmEndpoints: 3 }, ...config } });
  session = await connectH2(stack.url, stack.clientTls);
  await waitFor(() => stack!.stallguard.pool.snapshot().every((endpoint) => endpoint.state === 'ready'), 3000, 'three ready endpoints');
  return { stack, client: session };
}

function stateOf(stack: Stack, index: number): string {
  return stack.stallguard.pool.snapshot()[index]!.state;
}

describe('several replicas', () => {
  it('ejects a blackholed replica and keeps the node working', async () => {
    const { stack, client } = await startReplicas();
    const load = startKubeletLoad(client);
    await sleep(500);

    stack.relays[0]!.blackhole('both');
    const started = Date.now();
    await waitFor(() => stateOf(stack, 0) === 'ejected', DETECTION_MS + 1000, 'replica 0 ejected');
    const detectedMs = Date.now() - started;
    const before = stack.servers[0]!.requests.length;
    await sleep(1500);
    const report = await load.stop();

    expect(detectedMs).toBeLessThan(DETECTION_MS);
    expect(report.gets.failed).toEqual([]);
    expectOnlyUnknownOutcomeWrites(report.leaseRenewals.failed);
    expect(report.leaseRenewals.longestGapMs).toBeLessThan(10_000);
    expect(stack.servers[0]!.requests.length).toBe(before);
    expect(await counterValue(stack.stallguard.metrics, 'sessionsEvicted', { reason: 'ping_timeout' })).toBeGreaterThanOrEqual(1);
  });

  it('ejects a reset and refusing replica without client errors', async () => {
    const { stack, client } = await startReplicas();
    const load = startKubeletLoad(client);
    await sleep(500);

    await stack.relays[1]!.refuse();
    stack.relays[1]!.reset();
    await waitFor(() => stateOf(stack, 1) === 'ejected', 2000, 'replica 1 ejected');
    await sleep(1500);
    const report = await load.stop();

    expect(report.gets.failed).toEqual([]);
    expectOnlyUnknownOutcomeWrites(report.leaseRenewals.failed);
  });

  it('takes a replica whose /readyz fails out of rotation and back', async () => {
    const { stack, client } = await startReplicas({ health: { readyIntervalMs: 300 } });

    stack.servers[2]!.setReady(false);
    await waitFor(() => stateOf(stack, 2) === 'ejected', 2000, 'replica 2 ejected for its readiness probe');
    const before = stack.servers[2]!.requests.filter((r) => r.path.startsWith('/api/')).length;
    for (let i = 0; i < 20; i++) expect((await h2Request(client, { path: '/api/v1/nodes/n1' })).status).toBe(200);
    expect(stack.servers[2]!.requests.filter((r) => r.path.startsWith('/api/')).length).toBe(before);

    stack.servers[2]!.setReady(true);
    await waitFor(() => stateOf(stack, 2) === 'ready', 2000, 'replica 2 ready again');
  });

  it('readmits a probe-ejected replica whose session died meanwhile', async () => {
    const { stack } = await startReplicas({ health: { readyIntervalMs: 300 } });

    stack.servers[2]!.setReady(false);
    await waitFor(() => stateOf(stack, 2) === 'ejected', 2000, 'replica 2 ejected for its readiness probe');
    stack.relays[2]!.reset();
    await sleep(500);
    stack.servers[2]!.setReady(true);

    await waitFor(() => stateOf(stack, 2) === 'ready', 3000, 'replica 2 ready again');
  });

  it('never ejects the last ready replica for its probe alone', async () => {
    const { stack, client } = await startReplicas({ health: { readyIntervalMs: 300 } });
    for (const server of stack.servers) server.setReady(false);
    await sleep(1500);

    const ejected = stack.stallguard.pool.snapshot().filter((endpoint) => endpoint.state === 'ejected').length;

    expect(ejected).toBe(1);
    expect((await h2Request(client, { path: '/api/v1/nodes/n1' })).status).toBe(200);
  });

  it('moves to another replica on GOAWAY without client errors', async () => {
    const { stack, client } = await startReplicas();
    const load = startKubeletLoad(client);
    await sleep(300);

    for (let i = 0; i < 5; i++) {
      for (const server of stack.servers) server.goaway();
      await sleep(200);
    }
    const report = await load.stop();

    expect(report.gets.failed).toEqual([]);
    expect(report.leaseRenewals.failed).toEqual([]);
    expect(await counterValue(stack.stallguard.metrics, 'sessionsEvicted', { reason: 'ping_timeout' })).toBe(0);
  });

  it('resends a 429 from a shutting-down replica once, to another', async () => {
    const { stack, client } = await startReplicas();
    // Slower paths to the other two make replica 0 the preferred one, so the load reaches it.
    stack.relays[1]!.delay(20);
    stack.relays[2]!.delay(20);
    const load = startKubeletLoad(client);
    const apiRequests = () => stack.servers[0]!.requests.filter((r) => r.path.startsWith('/api')).length;
    await waitFor(() => apiRequests() >= 3, 5000, 'the load to reach replica 0');

    // kube-apiserver's graceful shutdown: /readyz fails, new requests get 429 and every
    // response is followed by GOAWAY.
    const shuttingDown = stack.servers[0]!;
    shuttingDown.setReady(false);
    shuttingDown.status429(1, 1);
    shuttingDown.goawayAfterEachResponse(true);
    await sleep(2000);
    const report = await load.stop();
    const resent = await counterValue(stack.stallguard.metrics, 'retries', { reason: 'shutdown_429', outcome: 'retried' });

    expect(report.gets.failed).toEqual([]);
    expect(report.leaseRenewals.failed).toEqual([]);
    expect(resent).toBeGreaterThanOrEqual(1);
  });

  it('answers 503 at once when all replicas are down and recovers when one returns', async () => {
    const { stack, client } = await startReplicas();

    for (const relay of stack.relays) {
      await relay.refuse();
      relay.reset();
    }
    await sleep(300);
    const started = Date.now();
    const response = await h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: 10_000 });
    const elapsed = Date.now() - started;
    const readyz = await fetch(`http://${stack.stallguard.addresses.metrics}/readyz`);

    expect(response.status).toBe(503);
    expect(response.headers['retry-after']).toMatch(/^\d+$/);
    expect(elapsed).toBeLessThan(stack.config.upstream.connectTimeoutMs + 500);
    expect(readyz.status).toBe(503);

    await stack.relays[2]!.pass();
    await waitFor(async () => (await h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: 10_000 })).status === 200, 15_000, 'traffic to resume');
    expect((await fetch(`http://${stack.stallguard.addresses.metrics}/readyz`)).status).toBe(200);
  });

  it('respects a lowered stream limit and opens more sessions', async () => {
    stack = await startStack({ replicas: 1, topology: 'direct', maxConcurrentStreams: 10 });
    session = await connectH2(stack.url, stack.clientTls);
    expect((await h2Request(session, { path: '/api/v1/nodes/n1' })).status).toBe(200);
    stack.servers[0]!.setMaxConcurrentStreams(5);
    await sleep(200);

    const watches = await Promise.all(Array.from({ length: 30 }, () => openWatch(session!)));
    const response = await h2Request(session, { path: '/api/v1/nodes/n1', timeoutMs: 10_000 });
    const sessions = stack.stallguard.pool.snapshot()[0]!.sessions.filter((s) => s.identity === 'client-cert');
    for (const watch of watches) watch.close();

    expect(watches.map((watch) => watch.status)).toEqual(Array(30).fill(200));
    expect(response.status).toBe(200);
    expect(sessions.length).toBeGreaterThanOrEqual(6);
    expect(sessions.every((s) => s.activeStreams <= 5)).toBe(true);
    expect(await counterValue(stack.stallguard.metrics, 'retries')).toBe(0);
  });

  it('dials a cold replica when the warm ones are full', async () => {
    stack = await startStack({
      replicas: 3,
      topology: 'direct',
      maxConcurrentStreams: 5,
      config: { upstream: { warmEndpoints: 2, maxSessionsPerEndpoint: 2 }, retry: { budgetMs: 3000 } },
    });
    session = await connectH2(stack.url, stack.clientTls);
    await waitFor(() => stack!.stallguard.pool.snapshot().filter((endpoint) => endpoint.state === 'ready').length === 2, 3000, 'two warm replicas');

    // Two warm replicas hold 2 sessions of 5 streams each: 20 watches fill them.
    const watches = await Promise.all(Array.from({ length: 25 }, () => openWatch(session!)));
    for (const watch of watches) watch.close();

    expect(watches.map((watch) => watch.status)).toEqual(Array(25).fill(200));
    expect(stack.stallguard.pool.snapshot().filter((endpoint) => endpoint.sessions.length > 0)).toHaveLength(3);
  });

  it('serves 300 watches through one stallguard', async () => {
    stack = await startStack({ replicas: 1, topology: 'direct' });
    session = await connectH2(stack.url, stack.clientTls);

    const watches = await Promise.all(Array.from({ length: 300 }, () => openWatch(session!)));
    stack.servers[0]!.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'fanout', namespace: 'default' } });
    await waitFor(() => watches.every((watch) => watch.lines.some((line) => line.includes('fanout'))), 5000, 'the event on all 300 watches');
    for (const watch of watches) watch.close();

    expect(stack.stallguard.pool.snapshot()[0]!.sessions.length).toBeGreaterThanOrEqual(3);
  });

  it('keeps other requests flowing past a watch that is never read', async () => {
    stack = await startStack({ replicas: 1, topology: 'direct' });
    session = await connectH2(stack.url, stack.clientTls);

    const stalled = session.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/configmaps?watch=1' });
    stalled.pause();
    await new Promise((resolve) => stalled.once('response', resolve));
    const big = 'x'.repeat(256 * 1024);
    for (let i = 0; i < 20; i++) {
      stack.servers[0]!.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `big-${i}`, namespace: 'default' }, data: { big } });
    }
    await sleep(300);

    for (let i = 0; i < 10; i++) {
      const response = await h2Request(session, { path: '/api/v1/nodes/n1', timeoutMs: 2000 });
      expect(response.status).toBe(200);
    }
    stalled.close();
  });
});

async function openWatch(client: http2.ClientHttp2Session) {
  const lines: string[] = [];
  const stream = client.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/configmaps?watch=1' });
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => lines.push(...chunk.split('\n').filter((line) => line !== '')));
  stream.on('error', () => {});
  const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once('response', resolve));
  return { lines, status: Number(headers[':status']), close: () => stream.close() };
}
