import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeApiServer, patternSha256 } from '../src/testbed/fake-apiserver.js';
import { FaultRelay } from '../src/testbed/fault-relay.js';
import { createTestPki, type TestPki } from '../src/testbed/pki.js';

const execFileAsync = promisify(execFile);
const KUBECTL = '/usr/bin/kubectl';

let workDir: string;
let pki: TestPki;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'stallguard-testbed-'));
  pki = await createTestPki(join(workDir, 'pki'));
});

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

// ---------- helpers ----------

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error('condition not met before the deadline');
    }
    await sleep(10);
  }
}

/** A TCP server that prefixes every chunk it echoes, and remembers what it received. */
class EchoTarget {
  readonly server: net.Server;
  readonly received: Buffer[] = [];
  readonly sockets = new Set<net.Socket>();
  accepted = 0;
  port = 0;

  constructor(private readonly prefix: string) {
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => {
      this.accepted += 1;
      this.sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('end', () => socket.end());
      socket.on('data', (chunk: Buffer) => {
        this.received.push(chunk);
        socket.write(`${this.prefix}${chunk.toString()}`);
      });
    });
  }

  get receivedText(): string {
    return Buffer.concat(this.received).toString();
  }

  async listen(): Promise<void> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  /** Writes to every open server-side socket, for traffic that starts at the target. */
  push(text: string): void {
    for (const socket of this.sockets) {
      socket.write(text);
    }
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) {
      socket.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A client socket that collects what it reads and how it ended. */
class RelayClient {
  readonly socket: net.Socket;
  data = '';
  ended = false;
  closed = false;
  error: NodeJS.ErrnoException | undefined;

  constructor(port: number) {
    this.socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    this.socket.on('data', (chunk: Buffer) => {
      this.data += chunk.toString();
    });
    this.socket.on('end', () => {
      this.ended = true;
    });
    this.socket.on('close', () => {
      this.closed = true;
    });
    this.socket.on('error', (err) => {
      this.error = err;
    });
  }

  async connected(): Promise<void> {
    if (this.socket.connecting) {
      await once(this.socket, 'connect');
    }
  }
}

function kubeconfigFor(server: FakeApiServer, user: { certPath: string; keyPath: string }): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: testbed',
    '  cluster:',
    `    server: ${server.url}`,
    `    certificate-authority: ${pki.ca.certPath}`,
    'users:',
    '- name: admin',
    '  user:',
    `    client-certificate: ${user.certPath}`,
    `    client-key: ${user.keyPath}`,
    'contexts:',
    '- name: testbed',
    '  context:',
    '    cluster: testbed',
    '    user: admin',
    '    namespace: default',
    'current-context: testbed',
    '',
  ].join('\n');
}

interface H2Response {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
  trailers: http2.IncomingHttpHeaders;
}

function h2Request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: string | Buffer,
): { stream: http2.ClientHttp2Stream; response: Promise<H2Response> } {
  const stream = session.request(headers, { endStream: body === undefined });
  const response = new Promise<H2Response>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let responseHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on('response', (received) => {
      responseHeaders = received;
    });
    stream.on('trailers', (received) => {
      trailers = received;
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve({ status: Number(responseHeaders[':status']), headers: responseHeaders, body: Buffer.concat(chunks), trailers }));
    stream.on('error', reject);
  });
  if (body !== undefined) {
    stream.end(body);
  }
  return { stream, response };
}

function connectH2(server: FakeApiServer, identity?: { certPem: string; keyPem: string }): http2.ClientHttp2Session {
  const session = http2.connect(server.url, {
    ca: pki.ca.certPem,
    cert: identity?.certPem,
    key: identity?.keyPem,
  });
  session.on('error', () => undefined);
  return session;
}

function http1Request(
  server: FakeApiServer,
  options: { path: string; method?: string; headers?: Record<string, string>; identity?: { certPem: string; keyPem: string }; body?: string },
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string; alpn: string | false | null }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: server.port,
        path: options.path,
        method: options.method ?? 'GET',
        headers: options.headers,
        ca: pki.ca.certPem,
        cert: options.identity?.certPem,
        key: options.identity?.keyPem,
        ALPNProtocols: ['http/1.1'],
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, alpn: (res.socket as tls.TLSSocket).alpnProtocol }));
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

function parseJson(body: Buffer | string): Record<string, unknown> {
  return JSON.parse(body.toString()) as Record<string, unknown>;
}

// ---------- fault relay ----------

describe('FaultRelay', () => {
  let target: EchoTarget;
  let relay: FaultRelay;
  const clients: RelayClient[] = [];

  function connect(): RelayClient {
    const client = new RelayClient(relay.port);
    clients.push(client);
    return client;
  }

  beforeAll(async () => {
    target = new EchoTarget('A:');
    await target.listen();
  });

  afterAll(async () => {
    await target.close();
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) {
      client.socket.destroy();
    }
    await relay.close();
  });

  async function startRelay(): Promise<void> {
    // The previous test's relay closed its target sockets; wait until the target saw them close.
    await waitFor(() => target.sockets.size === 0);
    relay = new FaultRelay({ target: { host: '127.0.0.1', port: target.port } });
    await relay.listen();
    target.received.length = 0;
  }

  it('pass forwards both ways and counts bytes', async () => {
    await startRelay();
    const client = connect();
    await client.connected();

    client.socket.write('hello');
    await waitFor(() => client.data === 'A:hello');

    expect(relay.counters.accepted).toBe(1);
    expect(relay.counters.open).toBe(1);
    expect(relay.counters.bytesToTarget).toBe(5);
    expect(relay.counters.bytesToClient).toBe(7);
    expect(relay.connections[0].toTarget).toBe('forward');
  });

  it('blackhole both drops traffic and keeps sockets open', async () => {
    await startRelay();
    const client = connect();
    client.socket.write('before');
    await waitFor(() => client.data === 'A:before');

    relay.blackhole('both');
    client.socket.write('lost-to-target');
    target.push('lost-to-client');
    await sleep(300);

    expect(target.receivedText).toBe('before');
    expect(client.data).toBe('A:before');
    expect(client.ended).toBe(false);
    expect(client.closed).toBe(false);
    expect(client.error).toBeUndefined();
    expect(target.sockets.size).toBe(1);
    expect(relay.counters.open).toBe(1);
    expect(relay.counters.bytesDropped).toBe('lost-to-target'.length + 'lost-to-client'.length);
  });

  it('blackhole to-target keeps the path to the client', async () => {
    await startRelay();
    const client = connect();
    await client.connected();
    await waitFor(() => target.sockets.size === 1);

    relay.blackhole('to-target');
    client.socket.write('dropped');
    target.push('server-push');
    await waitFor(() => client.data === 'server-push');
    await sleep(100);

    expect(target.receivedText).toBe('');
  });

  it('blackhole also applies to new connections', async () => {
    await startRelay();
    relay.blackhole('both');
    const client = connect();
    await client.connected();
    client.socket.write('x');
    await sleep(200);

    expect(client.data).toBe('');
    expect(client.closed).toBe(false);
    expect(relay.counters.accepted).toBe(1);
  });

  it('failover strands open connections and passes new ones', async () => {
    const other = new EchoTarget('B:');
    await other.listen();
    try {
      await startRelay();
      const old = connect();
      old.socket.write('one');
      await waitFor(() => old.data === 'A:one');

      relay.failover({ host: '127.0.0.1', port: other.port });
      old.socket.write('two');
      const fresh = connect();
      fresh.socket.write('three');
      await waitFor(() => fresh.data === 'B:three');
      await sleep(100);

      expect(old.data).toBe('A:one');
      expect(old.closed).toBe(false);
      expect(target.receivedText).toBe('one');
      expect(relay.connections.find((info) => info.id === 1)?.stranded).toBe(true);

      // pass() after a failover revives nothing: the load balancer has forgotten those flows.
      await relay.pass();
      old.socket.write('four');
      await sleep(100);
      expect(old.data).toBe('A:one');
    } finally {
      await relay.close();
      await other.close();
    }
  });

  it('delay holds every chunk for the delay', async () => {
    await startRelay();
    const client = connect();
    await client.connected();
    relay.delay(150);

    const started = Date.now();
    client.socket.write('slow');
    await waitFor(() => client.data === 'A:slow');

    // Two relay hops (to the target and back) each wait 150 ms.
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  });

  it('reset sends RST to the client', async () => {
    await startRelay();
    const client = connect();
    client.socket.write('x');
    await waitFor(() => client.data === 'A:x');

    relay.reset();
    await waitFor(() => client.closed);

    expect(client.error?.code).toBe('ECONNRESET');
    await waitFor(() => target.sockets.size === 0);
  });

  it('closeAll sends FIN to the client', async () => {
    await startRelay();
    const client = connect();
    client.socket.write('x');
    await waitFor(() => client.data === 'A:x');

    relay.closeAll();
    await waitFor(() => client.ended);

    expect(client.error).toBeUndefined();
  });

  it('halfClose ends toward the client and drops further bytes', async () => {
    await startRelay();
    const client = connect();
    client.socket.write('x');
    await waitFor(() => client.data === 'A:x');

    relay.halfClose();
    await waitFor(() => client.ended);
    client.socket.write('after');
    await sleep(150);

    expect(target.receivedText).toBe('x');
    expect(client.error).toBeUndefined();
    expect(relay.counters.open).toBe(1);
  });

  it('tarpit accepts and never connects the target', async () => {
    await startRelay();
    const acceptedBefore = target.accepted;
    relay.tarpit();
    const client = connect();
    await client.connected();
    client.socket.write('x');
    await sleep(200);

    expect(target.accepted).toBe(acceptedBefore);
    expect(client.data).toBe('');
    expect(client.closed).toBe(false);
    expect(relay.connections[0].target).toBeNull();
  });

  it('refuse rejects connections until pass', async () => {
    await startRelay();
    await relay.refuse();
    const refused = connect();
    await waitFor(() => refused.closed);
    expect(refused.error?.code).toBe('ECONNREFUSED');

    await relay.pass();
    const client = connect();
    client.socket.write('back');
    await waitFor(() => client.data === 'A:back');
  });

  it('rejects a non-loopback target', () => {
    expect(() => new FaultRelay({ target: { host: '192.0.2.1', port: 443 } })).toThrow(/not a loopback address/);
  });
});

// ---------- fake API server ----------

describe('FakeApiServer', () => {
  let server: FakeApiServer;
  const sessions: http2.ClientHttp2Session[] = [];

  function h2(identity?: { certPem: string; keyPem: string }): http2.ClientHttp2Session {
    const session = connectH2(server, identity);
    sessions.push(session);
    return session;
  }

  beforeAll(async () => {
    server = new FakeApiServer({
      cert: pki.server.certPem,
      key: pki.server.keyPem,
      clientCa: pki.ca.certPem,
      tokens: { 'token-of-bob': { name: 'bob', groups: ['devs'] } },
    });
    await server.listen();
  });

  afterEach(() => {
    for (const session of sessions.splice(0)) {
      session.destroy();
    }
    server.refuseStreams(false);
    server.hang(null);
    server.delayHeaders(0);
    server.status429(0);
    server.setReady(true);
    server.goawayAfterEachResponse(false);
  });

  afterAll(async () => {
    await server.close();
  });

  it('authenticates a client certificate over h2', async () => {
    const session = h2(pki.node);
    const { response } = h2Request(session, { ':path': '/api/v1/nodes/n1' });
    const result = await response;

    expect(result.status).toBe(200);
    expect(parseJson(result.body).metadata).toMatchObject({ name: 'n1' });
    const recorded = server.requests.at(-1)!;
    expect(recorded.user).toBe('system:node:n1');
    expect(recorded.groups).toEqual(['system:nodes']);
    expect(recorded.httpVersion).toBe('2.0');
    expect(recorded.clientCertificate).toBe(true);
    expect(recorded.bearerToken).toBe(false);
    expect(recorded.streamId).toBe(1);
    expect(recorded.status).toBe(200);
  });

  it('authenticates a bearer token and never records it', async () => {
    const session = h2();
    const { response } = h2Request(session, { ':path': '/api/v1/nodes', authorization: 'Bearer token-of-bob' });
    const result = await response;

    expect(result.status).toBe(200);
    const recorded = server.requests.at(-1)!;
    expect(recorded.user).toBe('bob');
    expect(recorded.groups).toEqual(['devs']);
    expect(recorded.bearerToken).toBe(true);
    expect(recorded.clientCertificate).toBe(false);
    expect(JSON.stringify(server.requests)).not.toContain('token-of-bob');
  });

  it('answers 401 with a Status body', async () => {
    const session = h2();
    const anonymous = await h2Request(session, { ':path': '/api/v1/nodes' }).response;
    const wrongToken = await h2Request(session, { ':path': '/api/v1/nodes', authorization: 'Bearer nope' }).response;

    for (const result of [anonymous, wrongToken]) {
      expect(result.status).toBe(401);
      expect(result.headers['content-type']).toBe('application/json');
      expect(parseJson(result.body)).toEqual({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: 'Unauthorized',
        reason: 'Unauthorized',
        code: 401,
      });
    }
  });

  it('rejects a certificate from another CA', async () => {
    const session = h2(pki.foreignClient);
    const result = await h2Request(session, { ':path': '/api/v1/nodes/n1' }).response;

    expect(result.status).toBe(401);
    expect(server.requests.at(-1)!.clientCertificate).toBe(true);
    expect(server.requests.at(-1)!.user).toBeUndefined();
  });

  it('serves HTTP/1.1 through ALPN fallback', async () => {
    const result = await http1Request(server, { path: '/api/v1/namespaces/default/configmaps', identity: pki.admin });

    expect(result.status).toBe(200);
    expect(result.alpn).toBe('http/1.1');
    expect(parseJson(result.body)).toMatchObject({ kind: 'ConfigMapList', apiVersion: 'v1', items: [] });
    expect(server.requests.at(-1)!.httpVersion).toBe('1.1');
    expect(server.requests.at(-1)!.streamId).toBeUndefined();
  });

  it('serves health and toggles readiness', async () => {
    const ready = await http1Request(server, { path: '/readyz' });
    server.setReady(false);
    const notReady = await http1Request(server, { path: '/readyz' });
    const live = await http1Request(server, { path: '/livez' });

    expect(ready.status).toBe(200);
    expect(ready.body).toBe('ok');
    expect(notReady.status).toBe(500);
    expect(notReady.body).toContain('readyz check failed');
    expect(live.status).toBe(200);
  });

  it('serves discovery documents', async () => {
    const session = h2(pki.admin);
    const core = parseJson((await h2Request(session, { ':path': '/api/v1' }).response).body);
    const coordination = parseJson((await h2Request(session, { ':path': '/apis/coordination.k8s.io/v1' }).response).body);
    const version = parseJson((await h2Request(session, { ':path': '/version?timeout=5s' }).response).body);

    expect(core.kind).toBe('APIResourceList');
    const names = (core.resources as Array<{ name: string }>).map((resource) => resource.name);
    expect(names).toEqual(expect.arrayContaining(['nodes', 'pods', 'configmaps', 'namespaces', 'pods/exec']));
    expect((coordination.resources as Array<{ name: string }>).map((resource) => resource.name)).toContain('leases');
    expect(version.gitVersion).toBe('v1.32.4');
  });

  it('creates once and answers AlreadyExists', async () => {
    const session = h2(pki.admin);
    const configMap = JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'once' }, data: { a: '1' } });
    const headers = { ':method': 'POST', ':path': '/api/v1/namespaces/default/configmaps', 'content-type': 'application/json' };

    const created = await h2Request(session, headers, configMap).response;
    const duplicate = await h2Request(session, headers, configMap).response;

    expect(created.status).toBe(201);
    expect(parseJson(created.body).metadata).toMatchObject({ name: 'once', namespace: 'default' });
    expect(duplicate.status).toBe(409);
    expect(parseJson(duplicate.body)).toMatchObject({
      kind: 'Status',
      status: 'Failure',
      reason: 'AlreadyExists',
      code: 409,
      message: 'configmaps "once" already exists',
      details: { name: 'once', kind: 'configmaps' },
    });
    expect(server.writeCounts('configmaps', 'default', 'once')).toEqual({ creates: 1, updates: 0, deletes: 0 });
  });

  it('answers NotFound for a missing object', async () => {
    const session = h2(pki.admin);
    const result = await h2Request(session, { ':path': '/api/v1/namespaces/default/pods/missing' }).response;

    expect(result.status).toBe(404);
    expect(parseJson(result.body)).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404, message: 'pods "missing" not found' });
  });

  it('renews a lease and rejects a stale resourceVersion', async () => {
    const session = h2(pki.node);
    const base = '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases';
    const lease = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'n1', namespace: 'kube-node-lease' }, spec: { holderIdentity: 'n1' } };

    const created = parseJson((await h2Request(session, { ':method': 'POST', ':path': base }, JSON.stringify(lease)).response).body);
    const firstVersion = (created.metadata as { resourceVersion: string }).resourceVersion;
    const renew = { ...lease, metadata: { ...lease.metadata, resourceVersion: firstVersion }, spec: { holderIdentity: 'n1', renewTime: new Date().toISOString() } };
    const renewed = await h2Request(session, { ':method': 'PUT', ':path': `${base}/n1` }, JSON.stringify(renew)).response;
    const stale = await h2Request(session, { ':method': 'PUT', ':path': `${base}/n1` }, JSON.stringify(renew)).response;

    expect(renewed.status).toBe(200);
    expect(Number((parseJson(renewed.body).metadata as { resourceVersion: string }).resourceVersion)).toBeGreaterThan(Number(firstVersion));
    expect(stale.status).toBe(409);
    expect(parseJson(stale.body)).toMatchObject({ reason: 'Conflict', code: 409, details: { name: 'n1', group: 'coordination.k8s.io', kind: 'leases' } });
    expect(server.writeCounts('leases', 'kube-node-lease', 'n1')).toEqual({ creates: 1, updates: 1, deletes: 0 });
  });

  it('applies merge and strategic merge patches', async () => {
    const session = h2(pki.admin);
    server.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'patched', namespace: 'default' }, data: { a: '1', b: '2' } });
    const path = '/api/v1/namespaces/default/configmaps/patched';

    const merge = await h2Request(session, { ':method': 'PATCH', ':path': path, 'content-type': 'application/merge-patch+json' }, '{"data":{"a":null,"c":"3"}}').response;
    const strategic = await h2Request(session, { ':method': 'PATCH', ':path': path, 'content-type': 'application/strategic-merge-patch+json' }, '{"data":{"d":"4"}}').response;
    const jsonPatch = await h2Request(session, { ':method': 'PATCH', ':path': path, 'content-type': 'application/json-patch+json' }, '[]').response;

    expect(merge.status).toBe(200);
    expect(parseJson(strategic.body).data).toEqual({ b: '2', c: '3', d: '4' });
    expect(jsonPatch.status).toBe(415);
  });

  it('lists with a resourceVersion and selectors', async () => {
    server.putObject('pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'on-n1', namespace: 'default' }, spec: { nodeName: 'n1' } });
    server.putObject('pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'on-n2', namespace: 'default' }, spec: { nodeName: 'n2' } });
    const session = h2(pki.node);

    const list = parseJson((await h2Request(session, { ':path': '/api/v1/pods?fieldSelector=spec.nodeName%3Dn1' }).response).body);

    expect(list.kind).toBe('PodList');
    expect(Number((list.metadata as { resourceVersion: string }).resourceVersion)).toBe(server.store.resourceVersion);
    expect((list.items as Array<{ metadata: { name: string } }>).map((item) => item.metadata.name)).toEqual(['on-n1']);
  });

  it('streams watch events as JSON lines', async () => {
    const session = h2(pki.admin);
    const startVersion = server.store.resourceVersion;
    const stream = session.request({ ':path': `/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=${startVersion}&allowWatchBookmarks=true` });
    let text = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      text += chunk;
    });
    await once(stream, 'response');

    const object = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'watched', namespace: 'default' }, data: {} };
    server.putObject('configmaps', object);
    server.putObject('configmaps', { ...object, data: { k: 'v' } });
    server.deleteObject('configmaps', 'default', 'watched');
    expect(server.bookmark()).toBe(1);
    await waitFor(() => text.split('\n').length >= 5);
    stream.close();

    const lines = text.split('\n');
    expect(lines.at(-1)).toBe('');
    const events = lines.slice(0, -1).map((line) => JSON.parse(line) as { type: string; object: { kind: string; metadata: { name?: string; resourceVersion: string } } });
    expect(events.map((event) => event.type)).toEqual(['ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK']);
    expect(events[0].object.kind).toBe('ConfigMap');
    expect(Number(events[0].object.metadata.resourceVersion)).toBe(startVersion + 1);
    expect(events[3].object.metadata.resourceVersion).toBe(String(server.store.resourceVersion));
  });

  it('replays changes after the watch resourceVersion', async () => {
    server.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'replay-a', namespace: 'default' } });
    const after = server.store.resourceVersion;
    server.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'replay-b', namespace: 'default' } });
    const session = h2(pki.admin);

    const result = await h2Request(session, { ':path': `/api/v1/watch/namespaces/default/configmaps?resourceVersion=${after}&timeoutSeconds=1` }).response;

    const names = result.body.toString().trim().split('\n').map((line) => (JSON.parse(line) as { object: { metadata: { name: string } } }).object.metadata.name);
    expect(names).toEqual(['replay-b']);
  });

  it('streams a watch over HTTP/1.1 chunked', async () => {
    const result = await http1Request(server, { path: '/api/v1/namespaces?watch=true&timeoutSeconds=1', identity: pki.admin });

    expect(result.status).toBe(200);
    expect(result.headers['transfer-encoding']).toBe('chunked');
    const names = result.body.trim().split('\n').map((line) => (JSON.parse(line) as { object: { metadata: { name: string } } }).object.metadata.name);
    expect(names).toEqual(['default', 'kube-node-lease', 'kube-public', 'kube-system']);
  });

  it('answers 410 for a compacted resourceVersion', async () => {
    const local = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem });
    await local.listen();
    try {
      for (let index = 0; index < 10_001; index += 1) {
        local.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'churn', namespace: 'default' }, data: { index: String(index) } });
      }
      const result = await http1Request(local, { path: '/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=2', identity: pki.admin });
      const event = JSON.parse(result.body.trim()) as { type: string; object: Record<string, unknown> };

      expect(result.status).toBe(200);
      expect(event.type).toBe('ERROR');
      expect(event.object).toMatchObject({ kind: 'Status', reason: 'Expired', code: 410 });
    } finally {
      await local.close();
    }
  });

  it('ends a watch after timeoutSeconds', async () => {
    const session = h2(pki.admin);
    const started = Date.now();
    const result = await h2Request(session, { ':path': '/api/v1/nodes?watch=1&timeoutSeconds=1' }).response;

    expect(result.status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    const first = JSON.parse(result.body.toString().split('\n')[0]) as { type: string; object: { metadata: { name: string } } };
    expect(first.type).toBe('ADDED');
    expect(first.object.metadata.name).toBe('n1');
  });

  it('sends GOAWAY with the given last stream id', async () => {
    const session = h2(pki.admin);
    const requests = [1, 2, 3].map(() => h2Request(session, { ':path': '/testbed/slow?ms=300' }));
    await waitFor(() => server.requests.filter((request) => request.path === '/testbed/slow?ms=300').length === 3);
    const goaways: Array<[number, number]> = [];
    session.on('goaway', (code: number, lastStreamId: number) => goaways.push([code, lastStreamId]));

    server.goaway({ lastStreamId: 1 });
    const outcomes = await Promise.allSettled(requests.map((request) => request.response));
    await waitFor(() => session.closed || session.destroyed);

    // The graceful close that follows may repeat the GOAWAY, but never with a higher stream id.
    expect(goaways.length).toBeGreaterThanOrEqual(1);
    for (const [code, lastStreamId] of goaways) {
      expect(code).toBe(0);
      expect(lastStreamId).toBe(1);
    }
    const [first, second, third] = outcomes;
    expect(first.status).toBe('fulfilled');
    expect((first as PromiseFulfilledResult<H2Response>).value.status).toBe(200);
    expect(second.status).toBe('rejected');
    expect(third.status).toBe('rejected');
  });

  it('sends GOAWAY with an error code', async () => {
    const session = h2(pki.admin);
    await h2Request(session, { ':path': '/api/v1/nodes' }).response;
    const codes: number[] = [];
    session.on('goaway', (code: number) => codes.push(code));

    server.goaway({ code: http2.constants.NGHTTP2_ENHANCE_YOUR_CALM });
    await waitFor(() => session.destroyed);

    expect(codes.length).toBeGreaterThanOrEqual(1);
    expect(codes.every((code) => code === http2.constants.NGHTTP2_ENHANCE_YOUR_CALM)).toBe(true);
  });

  it('refuses streams with REFUSED_STREAM', async () => {
    const session = h2(pki.admin);
    server.refuseStreams(true);
    const { stream, response } = h2Request(session, { ':path': '/api/v1/nodes' });

    await expect(response).rejects.toThrow();
    expect(stream.rstCode).toBe(http2.constants.NGHTTP2_REFUSED_STREAM);
  });

  it('hangs matching requests only', async () => {
    const session = h2(pki.admin);
    server.hang('/api/v1/namespaces');
    const hung = h2Request(session, { ':path': '/api/v1/namespaces/default/pods' });
    const other = await h2Request(session, { ':path': '/api/v1/nodes' }).response;
    const outcome = await Promise.race([hung.response.then(() => 'answered'), sleep(300).then(() => 'pending')]);

    expect(other.status).toBe(200);
    expect(outcome).toBe('pending');
    hung.stream.close();
  });

  it('delays response headers', async () => {
    const session = h2(pki.admin);
    server.delayHeaders(200, '/api/v1/nodes');
    const started = Date.now();
    const result = await h2Request(session, { ':path': '/api/v1/nodes' }).response;

    expect(result.status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
  });

  it('answers the given fraction with 429', async () => {
    const session = h2(pki.admin);
    server.status429(0.5, 3);
    const results = [];
    for (let index = 0; index < 4; index += 1) {
      results.push(await h2Request(session, { ':path': '/api/v1/nodes' }).response);
    }
    const rejected = results.filter((result) => result.status === 429);

    expect(rejected).toHaveLength(2);
    expect(rejected[0].headers['retry-after']).toBe('3');
    expect(parseJson(rejected[0].body)).toMatchObject({ kind: 'Status', reason: 'TooManyRequests', code: 429, details: { retryAfterSeconds: 3 } });
  });

  it('sends new SETTINGS for max concurrent streams', async () => {
    const session = h2(pki.admin);
    await once(session, 'remoteSettings');
    const update = once(session, 'remoteSettings');

    server.setMaxConcurrentStreams(7);
    const [settings] = (await update) as [http2.Settings];

    expect(settings.maxConcurrentStreams).toBe(7);
    const fresh = h2(pki.admin);
    const [freshSettings] = (await once(fresh, 'remoteSettings')) as [http2.Settings];
    expect(freshSettings.maxConcurrentStreams).toBe(7);
    server.setMaxConcurrentStreams(100);
  });

  it('sends GOAWAY after each response when asked', async () => {
    const session = h2(pki.admin);
    server.goawayAfterEachResponse(true);
    const goaway = once(session, 'goaway');
    const result = await h2Request(session, { ':path': '/api/v1/nodes' }).response;
    const [, lastStreamId] = (await goaway) as [number, number];

    expect(result.status).toBe(200);
    expect(lastStreamId).toBe(1);
    await waitFor(() => session.closed || session.destroyed);
  });

  it('destroys all sessions', async () => {
    const session = h2(pki.admin);
    await h2Request(session, { ':path': '/api/v1/nodes' }).response;
    expect(server.sessionCount).toBeGreaterThanOrEqual(1);

    server.destroyAllSessions();
    await waitFor(() => session.destroyed);
    await waitFor(() => server.sessionCount === 0);
  });

  it('echoes the body and trailers over h2', async () => {
    const session = h2(pki.admin);
    const stream = session.request({ ':method': 'POST', ':path': '/testbed/echo' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc' }));
    const chunks: Buffer[] = [];
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('trailers', (received) => {
      trailers = received;
    });
    stream.end('ping-pong');
    await once(stream, 'end');

    expect(Buffer.concat(chunks).toString()).toBe('ping-pong');
    expect(trailers['x-checksum']).toBe('abc');
    expect(trailers['x-echo-bytes']).toBe('9');
  });

  it('streams deterministic bytes with a digest', async () => {
    const session = h2(pki.admin);
    const length = 200_000;
    const result = await h2Request(session, { ':path': `/testbed/bytes?n=${length}` }).response;
    const { createHash } = await import('node:crypto');

    expect(result.body.length).toBe(length);
    expect(result.headers['x-sha256']).toBe(patternSha256(length));
    expect(result.trailers['x-sha256']).toBe(patternSha256(length));
    expect(createHash('sha256').update(result.body).digest('hex')).toBe(patternSha256(length));
  });

  it('upgrades exec to SPDY and echoes bytes', async () => {
    const socket = tls.connect({ host: '127.0.0.1', port: server.port, ca: pki.ca.certPem, cert: pki.admin.certPem, key: pki.admin.keyPem, ALPNProtocols: ['http/1.1'], servername: 'localhost' });
    socket.on('error', () => undefined);
    await once(socket, 'secureConnect');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
    });

    socket.write('POST /api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n');
    await waitFor(() => text.includes('\r\n\r\n'));
    socket.write('raw-bytes');
    await waitFor(() => text.endsWith('raw-bytes'));
    socket.destroy();

    expect(text.startsWith('HTTP/1.1 101 Switching Protocols\r\n')).toBe(true);
    expect(text).toContain('Upgrade: SPDY/3.1');
    expect(server.requests.at(-1)).toMatchObject({ upgrade: true, status: 101, user: 'kubernetes-admin' });
  });

  it('rejects an unauthenticated upgrade', async () => {
    const socket = tls.connect({ host: '127.0.0.1', port: server.port, ca: pki.ca.certPem, ALPNProtocols: ['http/1.1'], servername: 'localhost' });
    socket.on('error', () => undefined);
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
    });
    await once(socket, 'secureConnect');
    socket.write('GET /api/v1/namespaces/default/pods/p/exec HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    await once(socket, 'end');

    expect(text.startsWith('HTTP/1.1 401 Unauthorized')).toBe(true);
    expect(text).toContain('"reason":"Unauthorized"');
  });

  it('drives the real kubectl', async () => {
    const kubeDir = join(workDir, 'kubectl');
    await writeFile(join(workDir, 'kubeconfig'), kubeconfigFor(server, pki.admin));
    await writeFile(
      join(workDir, 'cm.yaml'),
      'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-kubectl\n  namespace: default\ndata:\n  key: value\n',
    );
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: kubeDir, KUBECONFIG: join(workDir, 'kubeconfig') };
    const run = (args: string[]) => execFileAsync(KUBECTL, [...args, '--cache-dir', join(kubeDir, 'cache'), '--request-timeout=10s'], { env, timeout: 30_000 });

    const nodes = await run(['get', 'nodes']);
    expect(nodes.stdout).toMatch(/^NAME\s+STATUS\s+ROLES\s+AGE\s+VERSION\n/);
    expect(nodes.stdout).toMatch(/\nn1\s+Ready\s+<none>\s+\S+\s+v1\.32\.4\n/);

    const version = await run(['get', '--raw', '/version']);
    expect(JSON.parse(version.stdout)).toMatchObject({ gitVersion: 'v1.32.4' });
    expect(server.requests.some((request) => request.path.startsWith('/version'))).toBe(true);

    const created = await run(['create', '-f', join(workDir, 'cm.yaml')]);
    expect(created.stdout.trim()).toBe('configmap/from-kubectl created');
    expect(server.writeCounts('configmaps', 'default', 'from-kubectl')).toEqual({ creates: 1, updates: 0, deletes: 0 });
    expect(server.getObject('configmaps', 'default', 'from-kubectl')?.data).toEqual({ key: 'value' });

    const watcher = spawn(KUBECTL, ['get', 'pods', '--watch', '--cache-dir', join(kubeDir, 'cache')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    watcher.stdout.setEncoding('utf8');
    watcher.stdout.on('data', (chunk: string) => {
      output += chunk;
    });
    const killTimer = setTimeout(() => watcher.kill('SIGKILL'), 20_000);
    try {
      await waitFor(() => server.openWatchCount > 0, 15_000);
      server.putObject('pods', {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'watched-by-kubectl', namespace: 'default' },
        spec: { containers: [{ name: 'c', image: 'busybox' }] },
        status: { phase: 'Running' },
      });
      await waitFor(() => output.includes('watched-by-kubectl'), 10_000);
    } finally {
      clearTimeout(killTimer);
      watcher.kill('SIGTERM');
    }

    expect(output).toMatch(/watched-by-kubectl\s+0\/1\s+Running\s+0\s+\S+/);
    const watchRequest = server.requests.find((request) => request.path.includes('watch=true') && request.path.startsWith('/api/v1/namespaces/default/pods'));
    expect(watchRequest?.user).toBe('kubernetes-admin');
  });

  it('closes quickly with open sessions and watches', async () => {
    const local = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem });
    await local.listen();
    const session = connectH2(local, pki.admin);
    const watch = session.request({ ':path': '/api/v1/nodes?watch=true' });
    watch.on('error', () => undefined);
    await once(watch, 'response');
    const hungSession = connectH2(local, pki.admin);
    local.hang('/api');
    const hung = hungSession.request({ ':path': '/api/v1/nodes' });
    hung.on('error', () => undefined);
    await waitFor(() => local.requests.length === 2);

    const started = Date.now();
    await local.close();

    expect(Date.now() - started).toBeLessThan(1000);
    await waitFor(() => session.destroyed && hungSession.destroyed);
  });
});
