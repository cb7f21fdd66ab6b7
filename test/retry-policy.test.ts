import http2 from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { connectH2, h2Request } from '../src/testbed/client.js';
import { startStack, type Stack } from '../src/testbed/stack.js';
import { backoffCeilingMs, backoffDelayMs, shortenedInterval } from '../src/upstream/backoff.js';
import { counterValue } from './helpers/metrics.js';
import { sleep, waitFor } from './helpers/wait.js';

let stack: Stack | undefined;
let session: http2.ClientHttp2Session | undefined;

afterEach(async () => {
  session?.close();
  session = undefined;
  await stack?.close();
  stack = undefined;
});

describe('backoff', () => {
  it('grows exponentially up to the maximum', () => {
    const policy = { baseMs: 250, maxMs: 5000 };

    expect([1, 2, 3, 4, 5, 6, 10].map((attempt) => backoffCeilingMs(policy, attempt))).toEqual([250, 500, 1000, 2000, 4000, 5000, 5000]);
  });

  it('draws the full jitter range', () => {
    const policy = { baseMs: 250, maxMs: 5000 };

    expect(backoffDelayMs(policy, 3, () => 0)).toBe(0);
    expect(backoffDelayMs(policy, 3, () => 0.999)).toBe(999);
  });

  it('only shortens the PING interval', () => {
    const samples = Array.from({ length: 1000 }, () => shortenedInterval(1000));

    expect(Math.max(...samples)).toBeLessThanOrEqual(1000);
    expect(Math.min(...samples)).toBeGreaterThanOrEqual(800);
  });
});

describe('retry policy', () => {
  it('does not replay a body above retry.maxBodyBytes and says so', async () => {
    stack = await startStack({ topology: 'direct', config: { retry: { maxAttempts: 3, budgetMs: 10_000, maxBodyBytes: 1024 } } });
    session = await connectH2(stack.url, stack.clientTls);
    const server = stack.servers[0]!;
    server.hang('/api/v1/namespaces/default/configmaps');

    const pending = h2Request(session, {
      method: 'POST',
      path: '/api/v1/namespaces/default/configmaps',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'big-1' }, data: { blob: 'x'.repeat(4096) } }),
    });
    await waitFor(() => server.requests.some((r) => r.method === 'POST'), 2000, 'the POST to reach the server');
    const postStream = server.requests.find((r) => r.method === 'POST')!.streamId!;
    server.hang(null);
    server.goaway({ lastStreamId: postStream - 2 });
    const response = await pending;

    expect(response.status).toBe(503);
    expect(JSON.parse(response.body.toString()).message).toContain('retry.maxBodyBytes');
    expect(server.writeCounts('configmaps', 'default', 'big-1').creates).toBe(0);
  });

  it('fails fast and backs off while the only endpoint refuses', async () => {
    stack = await startStack({ topology: 'balancer' });
    session = await connectH2(stack.url, stack.clientTls);
    expect((await h2Request(session, { path: '/api/v1/nodes/n1' })).status).toBe(200);
    const relay = stack.relays[0]!;

    await relay.refuse();
    relay.reset();
    const acceptedBefore = relay.counters.accepted;
    const latencies: number[] = [];
    const statuses: number[] = [];
    const until = Date.now() + 5000;
    while (Date.now() < until) {
      const started = Date.now();
      const response = await h2Request(session, { path: '/api/v1/nodes/n1', timeoutMs: 10_000 });
      latencies.push(Date.now() - started);
      statuses.push(response.status);
      await sleep(100);
    }
    const dials = await counterValue(stack.stallguard.metrics, 'dialFailures');

    expect(statuses.every((status) => status === 503)).toBe(true);
    expect(Math.max(...latencies)).toBeLessThan(stack.config.upstream.connectTimeoutMs + 500);
    // Full-jitter backoff from 250 ms to 5 s: about 7 dials in 5 s on average; 25 would be a hot loop.
    expect(dials).toBeLessThan(25);
    expect(relay.counters.accepted).toBe(acceptedBefore);

    await relay.pass();
    await waitFor(async () => (await h2Request(session!, { path: '/api/v1/nodes/n1' })).status === 200, 8000, 'recovery after the endpoint returns');
  });

  it('passes the client 5xx through without retrying', async () => {
    stack = await startStack({ topology: 'direct' });
    session = await connectH2(stack.url, stack.clientTls);

    const response = await h2Request(session, { path: '/api/v1/namespaces/default/pods/does-not-exist' });

    expect(response.status).toBe(404);
    expect(JSON.parse(response.body.toString()).kind).toBe('Status');
    expect(await counterValue(stack.stallguard.metrics, 'retries')).toBe(0);
  });
});
