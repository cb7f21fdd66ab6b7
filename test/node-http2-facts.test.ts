import http2 from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from '../src/testbed/fake-apiserver.js';
import { FaultRelay } from '../src/testbed/fault-relay.js';
import { createTestPki, type TestPki } from '../src/testbed/pki.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// The design of src/upstream/session.ts rests on these behaviours of node:http2 (Node.js 20).
// If a Node.js upgrade changes one of them, this file says which assumption broke.

let cleanup: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const step of cleanup.reverse()) await step();
  cleanup = [];
});

async function serverBehindRelay() {
  const pki: TestPki = await createTestPki(fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-facts-')));
  const server = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem });
  await server.listen(0);
  const relay = new FaultRelay({ target: { host: '127.0.0.1', port: server.port } });
  await relay.listen(0);
  const session = http2.connect(`https://127.0.0.1:${relay.port}`, { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem });
  session.on('error', () => {});
  await new Promise((resolve) => session.once('remoteSettings', resolve));
  cleanup.push(() => session.destroy(), () => relay.close(), () => server.close());
  return { session, relay, server };
}

describe('node:http2 facts the session design relies on', () => {
  it('never calls back a PING lost in a blackhole', async () => {
    const { session, relay } = await serverBehindRelay();
    relay.blackhole('both');

    let calledBack = false;
    session.ping(() => {
      calledBack = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 2000));

    expect(calledBack).toBe(false);
  });

  it('ends open streams without an error code when destroyed without an error', async () => {
    const { session, server } = await serverBehindRelay();
    server.hang('/api/v1/nodes');

    const stream = session.request({ ':path': '/api/v1/nodes/n1' });
    stream.on('error', () => {});
    await new Promise((resolve) => setTimeout(resolve, 100));
    const closed = new Promise<number | undefined>((resolve) => stream.on('close', () => resolve(stream.rstCode)));
    session.destroy();

    // rstCode 0 looks like a clean end: a proxy must not judge completeness by it.
    expect(await closed).toBe(http2.constants.NGHTTP2_NO_ERROR);
  });

  it('gives streams an error code when destroyed with an error', async () => {
    const { session, server } = await serverBehindRelay();
    server.hang('/api/v1/nodes');

    const stream = session.request({ ':path': '/api/v1/nodes/n1' });
    stream.on('error', () => {});
    await new Promise((resolve) => setTimeout(resolve, 100));
    const closed = new Promise<number | undefined>((resolve) => stream.on('close', () => resolve(stream.rstCode)));
    session.destroy(new Error('evicted'), http2.constants.NGHTTP2_CANCEL);

    expect(await closed).not.toBe(http2.constants.NGHTTP2_NO_ERROR);
  });

  it('leaves a request on a blackholed session pending', async () => {
    const { session, relay } = await serverBehindRelay();
    relay.blackhole('both');

    const stream = session.request({ ':path': '/api/v1/nodes/n1' });
    stream.on('error', () => {});
    let settled = false;
    stream.on('close', () => (settled = true));
    stream.on('response', () => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 3000));

    expect(settled).toBe(false);
  });
});
