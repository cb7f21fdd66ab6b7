import http2 from 'node:http2';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { connectH2, h2Request } from '../src/testbed/client.js';
import { startStack, type Stack } from '../src/testbed/stack.js';
import { counterValue } from './helpers/metrics.js';
import { sleep, waitFor } from './helpers/wait.js';

// Kubelet's own request timeout: every request below must succeed, or fail with an error, before it.
const CLIENT_TIMEOUT_MS = 10_000;
// pingInterval + pingTimeout with the defaults, plus scheduling slack.
const DETECTION_MS = 1000 + 1000 + 500;

let stack: Stack | undefined;
let session: http2.ClientHttp2Session | undefined;

afterEach(async () => {
  session?.close();
  session = undefined;
  await stack?.close();
  stack = undefined;
});

async function startBalancerStack(): Promise<{ stack: Stack; client: http2.ClientHttp2Session }> {
  stack = await startStack({ topology: 'balancer' });
  session = await connectH2(stack.url, stack.clientTls);
  const warm = await h2Request(session, { path: '/api/v1/nodes/n1' });
  expect(warm.status).toBe(200);
  return { stack, client: session };
}

describe('stall detection', () => {
  it('evicts an idle session stalled by a balancer failover', async () => {
    const { stack, client } = await startBalancerStack();
    await sleep(300);

    stack.relays[0]!.failover();
    const started = Date.now();
    const response = await h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: CLIENT_TIMEOUT_MS });
    const elapsed = Date.now() - started;

    expect(response.status).toBe(200);
    expect(elapsed).toBeLessThan(DETECTION_MS + stack.config.upstream.connectTimeoutMs);
    expect(await counterValue(stack.stallguard.metrics, 'sessionsEvicted', { reason: 'ping_timeout' })).toBe(1);
  });

  it('retries a GET that was in flight when the session stalled', async () => {
    const { stack, client } = await startBalancerStack();

    const inflight = h2Request(client, { path: '/testbed/slow?ms=1500', timeoutMs: CLIENT_TIMEOUT_MS });
    await waitFor(() => stack.servers[0]!.requests.some((r) => r.path.startsWith('/testbed/slow')), 2000, 'the slow GET to reach the server');
    stack.relays[0]!.failover();
    const response = await inflight;

    expect(response.status).toBe(200);
    expect(stack.servers[0]!.requests.filter((r) => r.path.startsWith('/testbed/slow')).length).toBe(2);
    expect(await counterValue(stack.stallguard.metrics, 'retries', { outcome: 'retried' })).toBeGreaterThanOrEqual(1);
  });

  it('detects a one-way blackhole toward the server', async () => {
    const { stack, client } = await startBalancerStack();

    stack.relays[0]!.blackhole('to-target');
    // New connections would be blackholed too; let them pass so the retry has somewhere to go.
    await sleep(10);
    const response = h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: CLIENT_TIMEOUT_MS });
    await sleep(100);
    stack.relays[0]!.failover();

    expect((await response).status).toBe(200);
  });

  it('holds a PATCH for a PING and applies it exactly once', async () => {
    const { stack, client } = await startBalancerStack();
    const before = stack.servers[0]!.writeCounts('nodes', undefined, 'n1');
    await sleep(400);

    stack.relays[0]!.failover();
    const response = await h2Request(client, {
      method: 'PATCH',
      path: '/api/v1/nodes/n1/status',
      headers: { 'content-type': 'application/merge-patch+json' },
      body: JSON.stringify({ status: { conditions: [{ type: 'Ready', status: 'True' }] } }),
      timeoutMs: CLIENT_TIMEOUT_MS,
    });

    expect(response.status).toBe(200);
    const after = stack.servers[0]!.writeCounts('nodes', undefined, 'n1');
    expect(after.updates - before.updates).toBe(1);
    expect(stack.servers[0]!.requests.filter((r) => r.method === 'PATCH').length).toBe(1);
  });

  it('sends no write after its client left', async () => {
    const { stack, client } = await startBalancerStack();
    await sleep(400);

    // The PUT waits for a PING on the stale session, then for a slow new session; the client gives
    // up first, and the write must not reach the server afterwards.
    stack.relays[0]!.failover();
    stack.relays[0]!.delay(300);
    const lease = '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/gone-client';
    const outcome = await h2Request(client, {
      method: 'PUT',
      path: lease,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'gone-client', namespace: 'kube-node-lease' } }),
      timeoutMs: 1200,
    }).catch((err: Error) => err);
    await sleep(3000);

    expect(outcome).toBeInstanceOf(Error);
    expect(stack.servers[0]!.requests.filter((r) => r.method === 'PUT')).toHaveLength(0);
  });

  it('fails a POST cut in flight with a Status error and never resends it', async () => {
    const { stack, client } = await startBalancerStack();
    stack.servers[0]!.hang('/api/v1/namespaces/default/configmaps');

    const pending = h2Request(client, {
      method: 'POST',
      path: '/api/v1/namespaces/default/configmaps',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'cut-1' } }),
      timeoutMs: CLIENT_TIMEOUT_MS,
    });
    await waitFor(() => stack.servers[0]!.requests.some((r) => r.method === 'POST'), 2000, 'the POST to reach the server');
    stack.relays[0]!.failover();
    const response = await pending;

    expect([502, 504]).toContain(response.status);
    const status = JSON.parse(response.body.toString());
    expect(status.kind).toBe('Status');
    expect(status.message).toContain('may or may not have been applied');
    expect(stack.servers[0]!.requests.filter((r) => r.method === 'POST').length).toBe(1);
  });

  it('retries a POST above the GOAWAY last stream id and creates it once', async () => {
    stack = await startStack({ topology: 'direct' });
    session = await connectH2(stack.url, stack.clientTls);
    expect((await h2Request(session, { path: '/api/v1/nodes/n1' })).status).toBe(200);
    const server = stack.servers[0]!;
    server.hang('/api/v1/namespaces/default/configmaps');

    const pending = h2Request(session, {
      method: 'POST',
      path: '/api/v1/namespaces/default/configmaps',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'goaway-1' } }),
      timeoutMs: CLIENT_TIMEOUT_MS,
    });
    await waitFor(() => server.requests.some((r) => r.method === 'POST'), 2000, 'the POST to reach the server');
    const postStream = server.requests.find((r) => r.method === 'POST')!.streamId!;
    server.hang(null);
    server.goaway({ lastStreamId: postStream - 2 });
    const response = await pending;

    expect(response.status).toBe(201);
    expect(server.writeCounts('configmaps', 'default', 'goaway-1').creates).toBe(1);
    expect(server.requests.filter((r) => r.method === 'POST').length).toBe(2);
  });

  it('ends a watch cleanly and the re-watch gets the next event', async () => {
    const { stack, client } = await startBalancerStack();

    const firstWatch = await openWatch(client, '/api/v1/namespaces/default/configmaps?watch=1');
    stack.relays[0]!.failover();
    const ended = await firstWatch.closed;
    expect(ended).toEqual({ rstCode: 0, ended: true });

    const rewatch = await openWatch(client, '/api/v1/namespaces/default/configmaps?watch=1');
    stack.servers[0]!.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'after-failover', namespace: 'default' } });
    await waitFor(() => rewatch.lines.some((line) => line.includes('after-failover')), 3000, 'the event on the re-watch');
    rewatch.stream.close();
  });

  it('aborts a non-watch response cut midway', async () => {
    const { stack, client } = await startBalancerStack();

    const outcome = new Promise<{ ended: boolean; rstCode: number | undefined; bytes: number }>((resolve) => {
      const stream = client.request({ ':method': 'GET', ':path': `/testbed/bytes?n=${64 * 1024 * 1024}` });
      let bytes = 0;
      let ended = false;
      stream.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        // Read slowly, so the response is still in flight when the balancer fails over.
        stream.pause();
        setTimeout(() => stream.resume(), 5);
      });
      stream.on('end', () => (ended = true));
      stream.on('error', () => {});
      stream.on('close', () => resolve({ ended, rstCode: stream.rstCode, bytes }));
    });
    await sleep(300);
    stack.relays[0]!.failover();
    const result = await outcome;

    expect(result.bytes).toBeLessThan(64 * 1024 * 1024);
    expect(result.rstCode).not.toBe(0);
  });

  it('recovers from a reset and from a half-close at once', async () => {
    const { stack, client } = await startBalancerStack();

    stack.relays[0]!.reset();
    const afterReset = await h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: CLIENT_TIMEOUT_MS });
    expect(afterReset.status).toBe(200);

    stack.relays[0]!.halfClose();
    const started = Date.now();
    const afterHalfClose = await h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: CLIENT_TIMEOUT_MS });
    expect(afterHalfClose.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(stack.config.upstream.connectTimeoutMs + 1000);
  });

  it('bounds a dial into a tarpit by connectTimeout', async () => {
    const { stack, client } = await startBalancerStack();

    stack.relays[0]!.tarpit();
    stack.relays[0]!.reset();
    await sleep(100);
    const started = Date.now();
    const response = await h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: CLIENT_TIMEOUT_MS });
    const elapsed = Date.now() - started;

    expect(response.status).toBe(503);
    expect(JSON.parse(response.body.toString()).message).toContain('timed out');
    expect(elapsed).toBeLessThan(stack.config.upstream.connectTimeoutMs * 2 + 1000);
  });

  it('closes an upgrade tunnel when its endpoint stalls', async () => {
    const { stack } = await startBalancerStack();
    const port = Number(new URL(stack.url).port);

    const socket = tls.connect({ host: '127.0.0.1', port, ...stack.clientTls, ALPNProtocols: ['http/1.1'] });
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('secureConnect', resolve));
    socket.write('POST /api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n');
    const head = await new Promise<string>((resolve) => socket.once('data', (chunk: Buffer) => resolve(chunk.toString('latin1'))));
    expect(head).toMatch(/^HTTP\/1\.1 101/);
    const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));

    const started = Date.now();
    stack.relays[0]!.failover();
    const closedAt = await Promise.race([closed, sleep(DETECTION_MS + 1500).then(() => -1)]);

    expect(closedAt).toBeGreaterThan(0);
    expect(closedAt - started).toBeLessThan(DETECTION_MS + 1000);
  });

  it('passes a 429 through without retrying or evicting', async () => {
    const { stack, client } = await startBalancerStack();
    stack.servers[0]!.status429(1, 1);

    const response = await h2Request(client, { path: '/api/v1/namespaces/default/pods' });

    expect(response.status).toBe(429);
    expect(response.headers['retry-after']).toBe('1');
    expect(stack.servers[0]!.requests.filter((r) => r.path === '/api/v1/namespaces/default/pods').length).toBe(1);
    expect(await counterValue(stack.stallguard.metrics, 'sessionsEvicted')).toBe(0);
  });
});

async function openWatch(client: http2.ClientHttp2Session, path: string) {
  const lines: string[] = [];
  const stream = client.request({ ':method': 'GET', ':path': path });
  stream.setEncoding('utf8');
  let ended = false;
  stream.on('data', (chunk: string) => lines.push(...chunk.split('\n').filter((line) => line !== '')));
  stream.on('end', () => (ended = true));
  stream.on('error', () => {});
  const closed = new Promise<{ rstCode: number | undefined; ended: boolean }>((resolve) => stream.on('close', () => resolve({ rstCode: stream.rstCode, ended })));
  await new Promise((resolve) => stream.once('response', resolve));
  return { stream, lines, closed };
}
