import http2 from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { connectH2, h2Request } from '../src/testbed/client.js';
import { startStack, type Stack } from '../src/testbed/stack.js';
import { loadUpstreamTlsMaterial } from '../src/tls/upstream-material.js';
import { parseEndpoint } from '../src/upstream/endpoint.js';
import { sleep, waitFor } from './helpers/wait.js';

let stack: Stack | undefined;
let session: http2.ClientHttp2Session | undefined;

afterEach(async () => {
  session?.close();
  session = undefined;
  await stack?.close();
  stack = undefined;
});

function endpointsOf(stack: Stack): string[] {
  return stack.stallguard.pool.snapshot().map((endpoint) => endpoint.endpoint);
}

describe('endpoint changes', () => {
  it('adds an endpoint and drains a removed one, ending its watch cleanly', async () => {
    stack = await startStack({ replicas: 2, topology: 'direct', replicate: true });
    const [first, second] = stack.servers.map((server) => parseEndpoint(server.url, ''));
    stack.stallguard.pool.setEndpoints([first!]);
    await waitFor(() => endpointsOf(stack!).length === 1, 3000, 'the second endpoint to leave');
    session = await connectH2(stack.url, stack.clientTls);

    const watch = session.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/pods?watch=1' });
    watch.resume();
    const watchClosed = new Promise<number | undefined>((resolve) => watch.on('close', () => resolve(watch.rstCode)));
    await new Promise((resolve) => watch.once('response', resolve));
    const inflight = h2Request(session, { path: '/testbed/slow?ms=500' });
    await sleep(50);

    stack.stallguard.pool.setEndpoints([second!]);

    expect(await watchClosed).toBe(0);
    expect((await inflight).status).toBe(200);
    await waitFor(() => endpointsOf(stack!).join() === second!.id, 3000, 'only the new endpoint to remain');
    const before = stack.servers[1]!.requests.length;
    expect((await h2Request(session, { path: '/api/v1/nodes/n1' })).status).toBe(200);
    expect(stack.servers[1]!.requests.length).toBe(before + 1);
  });

  it('retires sessions when the TLS material changes', async () => {
    stack = await startStack({ topology: 'direct' });
    session = await connectH2(stack.url, stack.clientTls);
    expect((await h2Request(session, { path: '/api/v1/nodes/n1' })).status).toBe(200);
    const before = stack.stallguard.pool.snapshot()[0]!.sessions.map((s) => s.id);

    const watch = session.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/pods?watch=1' });
    watch.resume();
    const watchClosed = new Promise<number | undefined>((resolve) => watch.on('close', () => resolve(watch.rstCode)));
    await new Promise((resolve) => watch.once('response', resolve));

    stack.stallguard.pool.setTlsMaterial(loadUpstreamTlsMaterial(stack.config.upstream.tls));

    expect(await watchClosed).toBe(0);
    expect((await h2Request(session, { path: '/api/v1/nodes/n1' })).status).toBe(200);
    const after = stack.stallguard.pool.snapshot()[0]!.sessions.map((s) => s.id);
    expect(after.some((id) => before.includes(id))).toBe(false);
  });
});
