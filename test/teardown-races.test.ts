import http2 from 'node:http2';
import { describe, expect, it } from 'vitest';
import { connectH2, h2Request } from '../src/testbed/client.js';
import { startStack } from '../src/testbed/stack.js';
import { sleep, waitFor } from './helpers/wait.js';

// Races between PING timers, GOAWAY, resets and socket loss: stallguard must never throw, never
// leak a session, and keep serving. Aggressive timers make the races happen often in a few seconds.
describe('teardown races', () => {
  it('survives random GOAWAYs, resets and short blackholes', async () => {
    const unexpected: unknown[] = [];
    const onUncaught = (err: unknown) => unexpected.push(err);
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);

    const stack = await startStack({
      topology: 'relays',
      logger: process.env.RACE_LOG ? (await import('pino')).default({ level: 'debug' }, (await import('pino')).default.destination(process.env.RACE_LOG)) : undefined,
      config: {
        health: { pingIntervalMs: 50, pingTimeoutMs: 50, writeFreshnessMs: 25 },
        upstream: { reconnectBackoff: { baseMs: 20, maxMs: 200 } },
      },
    });
    const session = await connectH2(stack.url, stack.clientTls);
    const relay = stack.relays[0]!;
    const server = stack.servers[0]!;

    let running = true;
    const outcomes = { ok: 0, unavailable: 0, other: 0 };
    const failures: string[] = [];
    const loops = Array.from({ length: 10 }, async () => {
      while (running) {
        const response = await h2Request(session, { path: '/api/v1/nodes/n1', timeoutMs: 10_000 }).catch((err: Error) => err);
        if (response instanceof Error) {
          outcomes.other++;
          failures.push(response.message);
        } else if (response.status === 200) outcomes.ok++;
        else if (response.status === 503) outcomes.unavailable++;
        else {
          outcomes.other++;
          failures.push(`${response.status} ${response.body.toString().slice(0, 300)}`);
        }
      }
    });
    const watches = Array.from({ length: 5 }, async () => {
      while (running) await watchOnce(session);
    });

    const until = Date.now() + 8000;
    while (Date.now() < until) {
      const fault = Math.floor(Math.random() * 4);
      if (fault === 0) server.goaway();
      if (fault === 1) relay.reset();
      if (fault === 2) relay.halfClose();
      if (fault === 3) {
        relay.blackhole('both');
        await sleep(100);
        await relay.pass();
      }
      await sleep(20 + Math.random() * 180);
    }
    await relay.pass();
    running = false;
    await Promise.all([...loops, ...watches]);

    // After the faults stop, the pool settles back to its warm session: no evicted or drained
    // session object is left behind. (The fake server may keep half-closed connections open.)
    await waitFor(() => stack.stallguard.pool.snapshot().every((group) => group.sessions.length <= 1), 2000, 'the pool to settle');
    const final = await h2Request(session, { path: '/api/v1/nodes/n1', timeoutMs: 10_000 });

    session.close();
    await stack.close();
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);

    expect(unexpected).toEqual([]);
    expect([...new Set(failures)]).toEqual([]);
    expect(outcomes.other).toBe(0);
    expect(outcomes.ok).toBeGreaterThan(0);
    expect(final.status).toBe(200);
  });
});

function watchOnce(session: http2.ClientHttp2Session): Promise<void> {
  return new Promise((resolve) => {
    const stream = session.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=2' });
    stream.resume();
    stream.on('error', () => {});
    stream.on('close', () => resolve());
  });
}
