import http2 from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { connectH2, h2Request } from '../src/testbed/client.js';
import { startStack, type ConfigOverrides, type Stack } from '../src/testbed/stack.js';
import { sleep, waitFor } from './helpers/wait.js';

// Middleboxes forget flows idle past a fixed timer (Azure LB 4 min, AWS NLB 350 s, GCP 10 min,
// IPVS 900 s), silently or with a reset on the next packet. Here the relay's timer is scaled down.
let stack: Stack | undefined;
let session: http2.ClientHttp2Session | undefined;

afterEach(async () => {
  session?.close();
  session = undefined;
  await stack?.close();
  stack = undefined;
});

async function start(config: ConfigOverrides) {
  stack = await startStack({ topology: 'balancer', config: { ...config, health: { readyIntervalMs: 3_600_000, ...config.health } } });
  session = await connectH2(stack.url, stack.clientTls);
  expect((await h2Request(session, { path: '/api/v1/nodes/n1' })).status).toBe(200);
  return { stack, client: session };
}

function openWatch(client: http2.ClientHttp2Session) {
  const lines: string[] = [];
  const stream = client.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/configmaps?watch=1' });
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => lines.push(...chunk.split('\n').filter((line) => line !== '')));
  stream.on('error', () => {});
  const closed = new Promise<number | undefined>((resolve) => stream.on('close', () => resolve(stream.rstCode)));
  return { lines, stream, closed };
}

describe('idle timeouts on the path', () => {
  it('keeps an idle watch alive with PINGs below the idle timer', async () => {
    const { stack, client } = await start({});
    stack.relays[0]!.idle(1500, 'silent');
    const watch = openWatch(client);
    await sleep(5000);

    const emittedAt = Date.now();
    stack.servers[0]!.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'quiet-1', namespace: 'default' } });
    await waitFor(() => watch.lines.some((line) => line.includes('quiet-1')), 1000, 'the event on the idle watch');
    watch.stream.close();

    expect(Date.now() - emittedAt).toBeLessThan(1000);
    expect(stack.relays[0]!.idleExpirations).toBe(0);
  });

  it('recovers an idle watch whose flow was dropped silently', async () => {
    // pingInterval above the idle timer: the flow is forgotten, and the next PING finds out.
    const { stack, client } = await start({ health: { pingIntervalMs: 3000, pingTimeoutMs: 1000 } });
    stack.relays[0]!.idle(1500, 'silent');
    const watch = openWatch(client);
    const openedAt = Date.now();

    expect(await watch.closed).toBe(0);
    expect(Date.now() - openedAt).toBeLessThan(3000 + 1000 + 1500);
    expect(stack.relays[0]!.idleExpirations).toBeGreaterThanOrEqual(1);

    const rewatch = openWatch(client);
    await sleep(200);
    stack.servers[0]!.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'after-idle', namespace: 'default' } });
    await waitFor(() => rewatch.lines.some((line) => line.includes('after-idle')), 2000, 'the event on the re-watch');
    rewatch.stream.close();
  });

  it('replays a GET and sends a POST once after an idle reset', async () => {
    const { stack, client } = await start({ health: { pingIntervalMs: 60_000, pingTimeoutMs: 1000 } });
    stack.relays[0]!.idle(800, 'rst');
    const server = stack.servers[0]!;

    for (let cycle = 0; cycle < 3; cycle++) {
      await sleep(1200);
      const get = await h2Request(client, { path: '/api/v1/namespaces/default/pods', timeoutMs: 10_000 });
      expect(get.status).toBe(200);

      await sleep(1200);
      const name = `idle-rst-${cycle}`;
      const post = await h2Request(client, {
        method: 'POST',
        path: '/api/v1/namespaces/default/configmaps',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name } }),
        timeoutMs: 10_000,
      });
      // The write waits for a PING on the idle session; the reset answers it, so the POST goes
      // out on a fresh session and is applied once.
      expect(post.status).toBe(201);
      expect(server.writeCounts('configmaps', 'default', name).creates).toBe(1);
    }
    expect(stack.relays[0]!.idleExpirations).toBeGreaterThanOrEqual(6);
  });
});
