import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startStallguard, type RunningStallguard } from '../src/server.js';
import { connectH2, h2Request } from '../src/testbed/client.js';
import { createTestPki, type TestPki } from '../src/testbed/pki.js';
import { RawH2Peer } from '../src/testbed/raw-h2-peer.js';
import { buildConfig, type ConfigOverrides } from '../src/testbed/stack.js';
import { counterValue } from './helpers/metrics.js';
import { sleep, waitFor } from './helpers/wait.js';

let peer: RawH2Peer | undefined;
let stallguard: RunningStallguard | undefined;

afterEach(async () => {
  await stallguard?.close();
  await peer?.close();
  stallguard = undefined;
  peer = undefined;
});

async function start(options: { pingMode: 'ack' | 'ignore'; maxConcurrentStreams?: number; requests?: 'respond' | 'hang'; refuseFirst?: number }, overrides: ConfigOverrides = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-raw-'));
  const pki: TestPki = await createTestPki(dir);
  peer = new RawH2Peer({ cert: pki.server.certPem, key: pki.server.keyPem, ...options });
  const port = await peer.listen();
  // Readiness probes would add requests and PING-free reads to what these tests count.
  const config = buildConfig(dir, pki, [`https://127.0.0.1:${port}`], { ...overrides, health: { readyIntervalMs: 3_600_000, ...overrides.health } });
  stallguard = await startStallguard(config, pino({ level: 'silent' }));
  return { pki, config, stallguard, peer };
}

describe('PING deadline against a raw HTTP/2 peer', () => {
  it('evicts a session whose PINGs are never acknowledged', async () => {
    const { stallguard, peer } = await start({ pingMode: 'ignore' });
    await waitFor(() => peer.connections === 1, 2000, 'the warm session');
    const openedAt = Date.now();

    await waitFor(async () => (await counterValue(stallguard.metrics, 'sessionsEvicted', { reason: 'ping_timeout' })) >= 1, 5000, 'a ping_timeout eviction');
    const elapsed = Date.now() - openedAt;

    // The session read its last frame at the handshake: detection is bounded by interval + timeout.
    expect(elapsed).toBeLessThan(1000 + 1000 + 500);
    expect(elapsed).toBeGreaterThanOrEqual(800 + 1000 - 50);
    expect(peer.pingsReceived).toBeGreaterThanOrEqual(1);
  });

  it('keeps a session whose PINGs are acknowledged', async () => {
    const { stallguard, peer } = await start({ pingMode: 'ack' });
    await sleep(3500);

    expect(await counterValue(stallguard.metrics, 'sessionsEvicted')).toBe(0);
    expect(peer.connections).toBe(1);
    expect(peer.pingsReceived).toBeGreaterThanOrEqual(2);
    expect(await counterValue(stallguard.metrics, 'pings', { outcome: 'ack' })).toBeGreaterThanOrEqual(2);
  });

  it('PINGs a session awaiting headers, keeps it', async () => {
    const { stallguard, peer, pki } = await start({ pingMode: 'ack', requests: 'hang' });
    const client = await connectH2(`https://${stallguard.addresses.listen}`, { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem });

    const pending = h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: 3000 }).catch((err: Error) => err);
    const result = await pending;
    client.close();

    expect(result).toBeInstanceOf(Error);
    expect(peer.pingsReceived).toBeGreaterThanOrEqual(2);
    expect(await counterValue(stallguard.metrics, 'sessionsEvicted')).toBe(0);
  });

  it('opens another session when the stream limit is reached', async () => {
    const { stallguard, peer, pki } = await start({ pingMode: 'ack', maxConcurrentStreams: 2, requests: 'hang' });
    const client = await connectH2(`https://${stallguard.addresses.listen}`, { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem });

    const pending = [1, 2, 3, 4].map(() => h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: 1500 }).catch(() => undefined));
    await waitFor(() => peer.requestsReceived === 4, 3000, 'four requests at the peer');
    await Promise.all(pending);
    client.close();

    expect(peer.connections).toBeGreaterThanOrEqual(2);
  });
});

describe('response framing', () => {
  it('keeps headers before a body that arrives in the same read', async () => {
    const { stallguard, pki } = await start({ pingMode: 'ack' });
    const client = await connectH2(`https://${stallguard.addresses.listen}`, { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem });

    const responses = await Promise.all(Array.from({ length: 300 }, () => h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: 5000 })));
    client.close();

    expect(responses.map((response) => response.status)).toEqual(Array(300).fill(200));
    expect(responses.every((response) => response.headers['content-type'] === 'application/json')).toBe(true);
  });
});

describe('refused streams and stream limits', () => {
  it('resends a POST refused with REFUSED_STREAM', async () => {
    const { stallguard, peer, pki } = await start({ pingMode: 'ack', refuseFirst: 1 });
    const client = await connectH2(`https://${stallguard.addresses.listen}`, { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem });

    const response = await h2Request(client, { method: 'POST', path: '/api/v1/namespaces/default/configmaps', body: '{}', timeoutMs: 5000 });
    client.close();

    expect(response.status).toBe(200);
    expect(peer.requestsReceived).toBe(2);
    expect(await counterValue(stallguard.metrics, 'retries', { reason: 'refused_stream', outcome: 'retried' })).toBe(1);
  });

  it('answers 503 once every session is full and the cap is reached', async () => {
    const { stallguard, peer, pki } = await start(
      { pingMode: 'ack', maxConcurrentStreams: 1, requests: 'hang' },
      { upstream: { maxSessionsPerEndpoint: 2 }, retry: { budgetMs: 1500 } },
    );
    const client = await connectH2(`https://${stallguard.addresses.listen}`, { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem });

    const held = [1, 2].map(() => h2Request(client, { path: '/api/v1/namespaces/default/pods?watch=1', timeoutMs: 5000 }).catch(() => undefined));
    await waitFor(() => peer.requestsReceived === 2, 3000, 'two streams held at the peer');
    const started = Date.now();
    const third = await h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: 5000 });
    const elapsed = Date.now() - started;
    client.destroy();
    await Promise.all(held);

    expect(third.status).toBe(503);
    expect(JSON.parse(third.body.toString()).message).toContain('maxSessionsPerEndpoint');
    expect(elapsed).toBeLessThan(1500 + 1000);
    expect(peer.connections).toBe(2);
  });
});

describe('client cancellation', () => {
  it('cancels the upstream stream when the client resets its own', async () => {
    const { stallguard, peer, pki } = await start({ pingMode: 'ack', requests: 'hang' });
    const client = await connectH2(`https://${stallguard.addresses.listen}`, { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem });

    await h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: 300 }).catch(() => undefined);
    await waitFor(() => peer.resets.includes(0x8), 1000, 'RST_STREAM(CANCEL) at the peer');
    client.close();

    expect(peer.resets.filter((code) => code === 0x8)).toHaveLength(1);
  });
});
