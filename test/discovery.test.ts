import dns from 'node:dns/promises';
import fs from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { LookupAddress, LookupFunction } from '../src/discovery/dns-source.js';
import { EndpointSet } from '../src/discovery/endpoint-set.js';
import type { DiscoveryTuning } from '../src/discovery/endpoint-discovery.js';
import { readEndpoints, readEndpointSlice } from '../src/discovery/kubernetes-endpoints.js';
import { EndpointStateFile } from '../src/discovery/state-file.js';
import { startStallguard, type RunningStallguard } from '../src/server.js';
import { connectH2, h2Request } from '../src/testbed/client.js';
import { FakeApiServer, type ApiServerAddress } from '../src/testbed/fake-apiserver.js';
import { FaultRelay } from '../src/testbed/fault-relay.js';
import { createTestPki, type TestPki } from '../src/testbed/pki.js';
import { ReplicatedStores } from '../src/testbed/replicated-store.js';
import { buildConfig, type ConfigOverrides } from '../src/testbed/stack.js';
import { parseEndpoint, type Endpoint } from '../src/upstream/endpoint.js';
import { startKubeletLoad, expectOnlyUnknownOutcomeWrites } from './helpers/load.js';
import { sleep, waitFor } from './helpers/wait.js';

const SLICES_PATH = '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices';
const NODE_USER = 'system:node:n1';

// Short enough for tests, long enough that each step is visible: a change is applied 200 ms after
// the last flap, and a refused discovery request is tried again every 200 ms.
const TEST_TUNING: Partial<DiscoveryTuning> = {
  debounceMs: 200,
  maxDelayMs: 2000,
  requestTimeoutMs: 3000,
  retry: { baseMs: 100, maxMs: 500 },
  forbiddenRetryMs: 200,
};

let pki: TestPki;
let baseDir: string;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  baseDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-discovery-'));
  pki = await createTestPki(path.join(baseDir, 'pki'));
});

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

afterAll(() => {
  fs.rmSync(baseDir, { recursive: true, force: true });
});

/** Collects stallguard's log lines so tests can check what an operator would read. */
class LogCapture {
  readonly lines: Array<Record<string, unknown>> = [];
  readonly logger: Logger;

  constructor() {
    const lines = this.lines;
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
        callback();
      },
    });
    this.logger = pino({ level: 'debug' }, sink);
  }

  withMessage(text: string): Array<Record<string, unknown>> {
    return this.lines.filter((line) => typeof line.msg === 'string' && line.msg.includes(text));
  }
}

function workDir(): string {
  return fs.mkdtempSync(path.join(baseDir, 'case-'));
}

/** Starts fake API servers on 127.0.0.1 with ports chosen by the kernel, sharing one store like replicas share etcd. */
async function startReplicas(count: number): Promise<FakeApiServer[]> {
  const servers: FakeApiServer[] = [];
  for (let i = 0; i < count; i++) {
    const server = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem });
    await server.listen(0, '127.0.0.1');
    servers.push(server);
    cleanups.push(() => server.close());
  }
  const replication = new ReplicatedStores(servers.map((server) => server.store));
  cleanups.push(() => replication.stop());
  return servers;
}

async function startRelay(target: FakeApiServer, host = '127.0.0.1', port = 0): Promise<FaultRelay> {
  const relay = new FaultRelay({ target: { host: '127.0.0.1', port: target.port } });
  await relay.listen(port, host);
  cleanups.push(() => relay.close());
  return relay;
}

function addressOf(server: FakeApiServer, ready = true): ApiServerAddress {
  return { ip: '127.0.0.1', port: server.port, ready };
}

interface Proxy {
  stallguard: RunningStallguard;
  client: http2.ClientHttp2Session;
  log: LogCapture;
  stateDir: string;
}

async function startProxy(options: { endpoints: string[]; config?: ConfigOverrides; stateDir?: string; tuning?: Partial<DiscoveryTuning> }): Promise<Proxy> {
  const dir = workDir();
  const stateDir = options.stateDir ?? path.join(dir, 'state');
  const config = buildConfig(dir, pki, options.endpoints, { ...options.config, stateDir });
  const log = new LogCapture();
  const stallguard = await startStallguard(config, log.logger, { discovery: { ...TEST_TUNING, ...options.tuning } });
  cleanups.push(() => stallguard.close());
  const client = await connectH2(`https://${stallguard.addresses.listen}`, { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem });
  cleanups.push(() => {
    client.close();
  });
  return { stallguard, client, log, stateDir };
}

function primaryIds(stallguard: RunningStallguard): string[] {
  return stallguard.pool
    .snapshot()
    .filter((endpoint) => endpoint.role === 'primary')
    .map((endpoint) => endpoint.endpoint)
    .sort();
}

/** Primary endpoint ids as /state on the metrics address serves them. */
async function stateIds(stallguard: RunningStallguard): Promise<string[]> {
  const response = await fetch(`http://${stallguard.addresses.metrics}/state`);
  const document = (await response.json()) as { endpoints: Array<{ endpoint: string; role: string }> };
  return sorted(document.endpoints.filter((endpoint) => endpoint.role === 'primary').map((endpoint) => endpoint.endpoint));
}

function sorted(ids: string[]): string[] {
  return [...ids].sort();
}

function readStateFile(stateDir: string): { endpoints: Array<{ url: string; hostName?: string }> } | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(stateDir, 'endpoints.json'), 'utf8')) as { endpoints: Array<{ url: string; hostName?: string }> };
  } catch {
    return undefined;
  }
}

function savedIds(stateDir: string): string[] {
  return sorted((readStateFile(stateDir)?.endpoints ?? []).map((entry) => entry.url));
}

/** Opens a watch through stallguard; `closed` resolves with the stream's RST code once it ends. */
async function openWatch(client: http2.ClientHttp2Session, watchPath = '/api/v1/namespaces/default/pods?watch=1') {
  const stream = client.request({ ':method': 'GET', ':path': watchPath });
  stream.resume();
  const closed = new Promise<number | undefined>((resolve) => stream.on('close', () => resolve(stream.rstCode)));
  await new Promise((resolve) => stream.once('response', resolve));
  return { stream, closed };
}

/** Index of the server holding the client's pod watch open, or -1. */
function serverWithPodWatch(servers: FakeApiServer[]): number {
  return servers.findIndex((server) => server.requests.some((request) => request.path.startsWith('/api/v1/namespaces/default/pods?watch') && request.status === undefined));
}

function apiRequests(server: FakeApiServer): number {
  return server.requests.filter((request) => request.path.startsWith('/api/') || request.path.startsWith('/apis/coordination')).length;
}

/** A lookup whose records a test changes at run time; it never queries a resolver. */
class FakeResolver {
  records = new Map<string, string[]>();
  failing = false;
  readonly calls: string[] = [];

  readonly lookup: LookupFunction = async (hostname) => {
    this.calls.push(hostname);
    if (this.failing) throw Object.assign(new Error(`getaddrinfo EAI_AGAIN ${hostname}`), { code: 'EAI_AGAIN' });
    const addresses = this.records.get(hostname);
    if (addresses === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });
    return addresses.map((address): LookupAddress => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
}

/** Three relays on 127.0.0.1, .2 and .3 with one port, in front of three replicas, like one name with three A records. */
async function startRelaysOnOnePort(servers: FakeApiServer[]): Promise<{ relays: FaultRelay[]; port: number }> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const relays: FaultRelay[] = [];
    try {
      relays.push(await startRelay(servers[0]!, '127.0.0.1', 0));
      const port = relays[0]!.port;
      for (let i = 1; i < servers.length; i++) relays.push(await startRelay(servers[i]!, `127.0.0.${i + 1}`, port));
      return { relays, port };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  throw new Error('no port was free on 127.0.0.1, 127.0.0.2 and 127.0.0.3 at once');
}

describe('DNS names', () => {
  it('follows record changes and drains', async () => {
    const servers = await startReplicas(3);
    const { port } = await startRelaysOnOnePort(servers);
    const resolver = new FakeResolver();
    resolver.records.set('localhost', ['127.0.0.1']);

    const { stallguard, client, log } = await startProxy({
      endpoints: [`https://localhost:${port}`],
      config: { upstream: { resolveIntervalMs: 200, warmEndpoints: 3 } },
      tuning: { lookup: resolver.lookup },
    });
    expect(primaryIds(stallguard)).toEqual([`https://127.0.0.1:${port}`]);
    const first = stallguard.pool.endpoints[0]!;
    expect(first.connectHost).toBe('127.0.0.1');
    expect(first.serverName).toBe('localhost');
    expect(first.authority).toBe(`localhost:${port}`);

    const load = startKubeletLoad(client);
    const watch = await openWatch(client);
    const inflight = h2Request(client, { path: '/testbed/slow?ms=600', timeoutMs: 10_000 });
    await sleep(100);

    resolver.records.set('localhost', ['127.0.0.2', '127.0.0.3']);
    await waitFor(() => primaryIds(stallguard).join() === [`https://127.0.0.2:${port}`, `https://127.0.0.3:${port}`].join(), 5000, 'the new addresses only');

    expect(await watch.closed).toBe(0);
    expect((await inflight).status).toBe(200);
    await sleep(500);
    const servedByFirst = apiRequests(servers[0]!);
    await sleep(1000);
    const report = await load.stop();

    expect(report.gets.failed).toEqual([]);
    expect(report.leaseRenewals.failed).toEqual([]);
    expect(apiRequests(servers[0]!)).toBe(servedByFirst);
    expect(apiRequests(servers[1]!) + apiRequests(servers[2]!)).toBeGreaterThan(0);
    expect(await stateIds(stallguard)).toEqual([`https://127.0.0.2:${port}`, `https://127.0.0.3:${port}`]);
    // TLS to 127.0.0.2 and .3 verified against "localhost": the certificate has no IP SAN for them.
    expect(stallguard.pool.snapshot().filter((endpoint) => endpoint.role === 'primary').every((endpoint) => endpoint.state === 'ready')).toBe(true);
    expect(log.withMessage('host name resolved').length).toBe(2);
  });

  it('keeps the addresses while lookups fail', async () => {
    const servers = await startReplicas(2);
    const { port } = await startRelaysOnOnePort(servers);
    const resolver = new FakeResolver();
    resolver.records.set('localhost', ['127.0.0.1', '127.0.0.2']);

    const { stallguard, client, log } = await startProxy({
      endpoints: [`https://localhost:${port}`],
      config: { upstream: { resolveIntervalMs: 100 } },
      tuning: { lookup: resolver.lookup },
    });
    const before = primaryIds(stallguard);
    expect(before).toEqual([`https://127.0.0.1:${port}`, `https://127.0.0.2:${port}`]);

    resolver.failing = true;
    const calls = resolver.calls.length;
    await waitFor(() => resolver.calls.length >= calls + 3, 3000, 'three failed lookups');
    await sleep(300);

    expect(primaryIds(stallguard)).toEqual(before);
    expect(log.withMessage('host name lookup failed; keeping the addresses found before')).toHaveLength(1);
    expect((await h2Request(client, { path: '/api/v1/nodes/n1' })).status).toBe(200);

    resolver.failing = false;
    await waitFor(() => log.withMessage('host name resolves again').length === 1, 3000, 'the lookup to recover');
    expect(primaryIds(stallguard)).toEqual(before);
  });

  it('dials an unresolved name by name', async () => {
    const [server] = await startReplicas(1);
    const resolver = new FakeResolver();

    const { stallguard, log } = await startProxy({
      endpoints: [`https://localhost:${server!.port}`],
      tuning: { lookup: resolver.lookup },
    });

    expect(primaryIds(stallguard)).toEqual([`https://localhost:${server!.port}`]);
    expect(stallguard.pool.endpoints[0]!.connectHost).toBeUndefined();
    expect(log.withMessage('its endpoints are dialled by name until it resolves')).toHaveLength(1);
  });

  it('uses the system resolver, /etc/hosts included', async () => {
    const [server] = await startReplicas(1);
    // The expectation is whatever the system resolver returns for localhost, which usually comes from
    // /etc/hosts; the fake API server listens on 127.0.0.1 only, so an extra ::1 would just fail to dial.
    const expected = sorted([...new Set((await dns.lookup('localhost', { all: true })).map((entry) => entry.address))].map((address) =>
      address.includes(':') ? `https://[${address}]:${server!.port}` : `https://${address}:${server!.port}`,
    ));

    const { stallguard, client } = await startProxy({ endpoints: [`https://localhost:${server!.port}`] });

    expect(primaryIds(stallguard)).toEqual(expected);
    expect(stallguard.pool.endpoints.every((endpoint) => endpoint.serverName === 'localhost' && endpoint.connectHost !== undefined)).toBe(true);
    expect((await h2Request(client, { path: '/api/v1/nodes/n1' })).status).toBe(200);
  });
});

describe('EndpointSlice discovery', () => {
  it('follows slices, keeps replicas on empty', async () => {
    const servers = await startReplicas(3);
    servers[0]!.setApiServerAddresses([addressOf(servers[0]!), addressOf(servers[1]!)]);
    const balancer = await startRelay(servers[0]!);

    const { stallguard, client, log, stateDir } = await startProxy({
      endpoints: [],
      config: { upstream: { fallback: [`https://127.0.0.1:${balancer.port}`], discovery: 'endpointslices', warmEndpoints: 3 } },
    });
    const ids = servers.map((server) => server.url);
    await waitFor(() => primaryIds(stallguard).join() === sorted([ids[0]!, ids[1]!]).join(), 5000, 'the two listed replicas');
    expect(servers[0]!.requests.find((request) => request.path.startsWith(SLICES_PATH))?.user).toBe(NODE_USER);

    // A replica is added.
    servers[1]!.setApiServerAddresses(servers.map((server) => addressOf(server)));
    await waitFor(() => primaryIds(stallguard).join() === sorted(ids).join(), 5000, 'the third replica');
    await waitFor(() => savedIds(stateDir).join() === sorted(ids).join(), 2000, 'the saved list to follow');

    // One is removed while a watch and slow requests run on it.
    const load = startKubeletLoad(client);
    const watch = await openWatch(client);
    const slow = Array.from({ length: 6 }, () => h2Request(client, { path: '/testbed/slow?ms=800', timeoutMs: 10_000 }));
    await sleep(200);
    const removed = serverWithPodWatch(servers);
    expect(removed).toBeGreaterThanOrEqual(0);
    expect(servers[removed]!.requests.some((request) => request.path.startsWith('/testbed/slow') && request.status === undefined)).toBe(true);

    const remaining = servers.filter((_, index) => index !== removed);
    servers[0]!.setApiServerAddresses(remaining.map((server) => addressOf(server)));
    await waitFor(() => primaryIds(stallguard).join() === sorted(remaining.map((server) => server.url)).join(), 5000, 'the replica to be drained');

    expect(await watch.closed).toBe(0);
    for (const response of await Promise.all(slow)) expect(response.status).toBe(200);
    await waitFor(() => savedIds(stateDir).join() === sorted(remaining.map((server) => server.url)).join(), 2000, 'the saved list to drop it');

    // The list is emptied: nothing is removed.
    servers[0]!.setApiServerAddresses([]);
    await waitFor(() => log.withMessage('endpoint source lists no ready endpoint').length === 1, 3000, 'the empty-list warning');
    await sleep(600);
    expect(primaryIds(stallguard)).toEqual(sorted(remaining.map((server) => server.url)));
    expect(await stateIds(stallguard)).toEqual(sorted(remaining.map((server) => server.url)));
    expect(savedIds(stateDir)).toEqual(sorted(remaining.map((server) => server.url)));

    const report = await load.stop();
    expect(report.gets.failed).toEqual([]);
    expect(report.leaseRenewals.failed).toEqual([]);
    expect(report.gets.ok).toBeGreaterThan(0);
  });

  it('moves its watch off draining replicas', async () => {
    const servers = await startReplicas(3);
    servers[0]!.setApiServerAddresses(servers.map((server) => addressOf(server)));
    const balancer = await startRelay(servers[0]!);
    const { stallguard, log } = await startProxy({
      endpoints: [],
      config: { upstream: { fallback: [`https://127.0.0.1:${balancer.port}`], discovery: 'endpointslices', warmEndpoints: 3 } },
    });
    await waitFor(() => primaryIds(stallguard).length === 3, 5000, 'three discovered replicas');
    const openWatches = () => servers.reduce((sum, server) => sum + server.openWatchCount, 0);
    const watching = () => servers.findIndex((server) => server.openWatchCount > 0);
    const watchRequests = () => servers.reduce((sum, server) => sum + server.requests.filter((request) => request.path.startsWith(SLICES_PATH) && request.path.includes('watch=1')).length, 0);

    // The discovery watch started on the balancer, the only endpoint at start; losing that session moves it to a replica.
    balancer.reset();
    await waitFor(() => watchRequests() >= 2, 5000, 'a second discovery watch');
    await waitFor(() => openWatches() === 1, 5000, 'one open discovery watch, on a replica');

    const beforeGoaway = watchRequests();
    servers[watching()]!.goaway();
    await waitFor(() => watchRequests() > beforeGoaway && openWatches() === 1, 5000, 'the discovery watch to start again');
    expect(log.withMessage('discovery watch moved off a draining session').length).toBeGreaterThanOrEqual(1);

    const holder = watching();
    const remaining = servers.filter((_, index) => index !== holder);
    servers[holder === 0 ? 1 : 0]!.setApiServerAddresses(remaining.map((server) => addressOf(server)));
    await waitFor(() => primaryIds(stallguard).join() === sorted(remaining.map((server) => server.url)).join(), 5000, 'the replica holding the discovery watch to drain');
    await waitFor(() => servers[holder]!.openWatchCount === 0 && openWatches() === 1, 2000, 'the discovery watch on a remaining replica');

    servers[holder === 0 ? 1 : 0]!.setApiServerAddresses(servers.map((server) => addressOf(server)));
    await waitFor(() => primaryIds(stallguard).length === 3, 5000, 'discovery to keep working after the move');
  });

  it('skips addresses that are not ready', async () => {
    const servers = await startReplicas(2);
    servers[0]!.setApiServerAddresses([addressOf(servers[0]!), addressOf(servers[1]!, false)]);

    const { stallguard } = await startProxy({ endpoints: [servers[0]!.url], config: { upstream: { discovery: 'endpointslices' } } });
    await sleep(800);

    expect(primaryIds(stallguard)).toEqual([servers[0]!.url]);

    servers[0]!.setApiServerAddresses([addressOf(servers[0]!), addressOf(servers[1]!)]);
    await waitFor(() => primaryIds(stallguard).length === 2, 3000, 'the replica once ready');
  });

  it('reads Endpoints when slices answer 404', async () => {
    const servers = await startReplicas(2);
    servers[0]!.setApiServerAddresses(servers.map((server) => addressOf(server)));
    for (const server of servers) server.notFound('/apis/discovery.k8s.io/');

    const balancer = await startRelay(servers[0]!);
    const { stallguard, log } = await startProxy({
      endpoints: [],
      config: { upstream: { fallback: [`https://127.0.0.1:${balancer.port}`], discovery: 'endpointslices' } },
    });
    await waitFor(() => primaryIds(stallguard).length === 2, 5000, 'the replicas listed in Endpoints');
    expect(log.withMessage('EndpointSlices are not served (404)')).toHaveLength(1);

    servers[1]!.setApiServerAddresses([addressOf(servers[1]!)]);
    await waitFor(() => primaryIds(stallguard).join() === servers[1]!.url, 5000, 'the Endpoints watch to remove the first replica');
  });

  it('reads Endpoints when slices answer 403', async () => {
    const servers = await startReplicas(2);
    servers[0]!.setApiServerAddresses(servers.map((server) => addressOf(server)));
    for (const server of servers) server.forbid(SLICES_PATH, NODE_USER);

    const { stallguard, log } = await startProxy({ endpoints: [servers[0]!.url], config: { upstream: { discovery: 'endpointslices' } } });
    await waitFor(() => primaryIds(stallguard).length === 2, 5000, 'the replica listed in Endpoints');

    const refusals = log.withMessage('reading EndpointSlices is not permitted');
    expect(refusals).toHaveLength(1);
    expect(refusals[0]!.level).toBe(40);
    expect(String(refusals[0]!.reason)).toContain(`User "${NODE_USER}" cannot list resource "endpointslices" in API group "discovery.k8s.io"`);
    expect(log.withMessage('endpoint discovery is not permitted')).toHaveLength(0);
  });

  it('logs 403 once, keeps other endpoints', async () => {
    const servers = await startReplicas(2);
    servers[0]!.setApiServerAddresses(servers.map((server) => addressOf(server)));
    for (const server of servers) {
      server.forbid(SLICES_PATH, NODE_USER);
      server.forbid('/api/v1/namespaces/default/endpoints', NODE_USER);
    }

    const { stallguard, client, log } = await startProxy({ endpoints: [servers[0]!.url], config: { upstream: { discovery: 'endpointslices' } } });
    await waitFor(() => servers[0]!.requests.filter((request) => request.path.startsWith('/api/v1/namespaces/default/endpoints')).length >= 3, 5000, 'three refused attempts');

    const refusals = log.withMessage('endpoint discovery is not permitted');
    expect(refusals).toHaveLength(1);
    expect(refusals[0]!.level).toBe(40);
    expect(refusals[0]!.msg).toContain('get, list and watch on endpointslices.discovery.k8s.io (or endpoints) in the default namespace');
    expect(String(refusals[0]!.reason)).toContain(`User "${NODE_USER}" cannot list resource "endpoints" in API group ""`);
    expect(log.withMessage('reading EndpointSlices is not permitted')).toHaveLength(1);
    expect(primaryIds(stallguard)).toEqual([servers[0]!.url]);
    expect((await h2Request(client, { path: '/api/v1/nodes/n1' })).status).toBe(200);

    for (const server of servers) server.forbid(null);
    await waitFor(() => primaryIds(stallguard).length === 2, 5000, 'discovery once permitted');
    expect(log.withMessage('endpoint discovery is permitted again')).toHaveLength(1);
    expect(log.withMessage('reading EndpointSlices is permitted again')).toHaveLength(1);
  });
});

describe('fallback', () => {
  it('serves while replicas are down, then yields', async () => {
    const servers = await startReplicas(3);
    const replicas = [await startRelay(servers[0]!), await startRelay(servers[1]!)];
    const balancer = await startRelay(servers[2]!);

    const { stallguard, client } = await startProxy({
      endpoints: replicas.map((relay) => `https://127.0.0.1:${relay.port}`),
      config: {
        // Three warm endpoints, so both replicas are dialled at start whichever two the pool picks first.
        upstream: { fallback: [`https://127.0.0.1:${balancer.port}`], reconnectBackoff: { baseMs: 100, maxMs: 500 }, warmEndpoints: 3 },
        health: { ejectionTimeMs: 300, maxEjectionTimeMs: 1000 },
      },
    });
    await waitFor(() => stallguard.pool.snapshot().filter((endpoint) => endpoint.role === 'primary').every((endpoint) => endpoint.state === 'ready'), 3000, 'two ready replicas');
    const load = startKubeletLoad(client);
    await sleep(300);
    expect(apiRequests(servers[2]!)).toBe(0);

    for (const relay of replicas) {
      await relay.refuse();
      relay.reset();
    }
    await waitFor(() => apiRequests(servers[2]!) > 5, 5000, 'the balancer to serve');
    const fallbackEntry = stallguard.pool.snapshot().find((endpoint) => endpoint.role === 'fallback')!;
    expect(fallbackEntry.state).toBe('ready');

    await replicas[0]!.pass();
    await waitFor(() => stallguard.pool.snapshot()[0]!.state === 'ready', 5000, 'the first replica back');
    await sleep(200);
    const servedByBalancer = apiRequests(servers[2]!);
    const servedByReplica = apiRequests(servers[0]!);
    await sleep(1000);
    const report = await load.stop();

    expect(report.gets.failed).toEqual([]);
    expectOnlyUnknownOutcomeWrites(report.leaseRenewals.failed);
    expect(apiRequests(servers[2]!)).toBe(servedByBalancer);
    expect(apiRequests(servers[0]!)).toBeGreaterThan(servedByReplica);
  });
});

describe('warm standby with a fallback', () => {
  it('keeps the warm sessions on replicas', async () => {
    const servers = await startReplicas(3);
    const replicas = [await startRelay(servers[0]!), await startRelay(servers[1]!)];
    const balancer = await startRelay(servers[2]!);

    // At start no replica is ready yet, so the balancer may take a warm slot; once a replica is
    // ready, warm standby counts replicas only. The pick is random, so several starts are tried.
    for (let start = 0; start < 6; start++) {
      const { stallguard } = await startProxy({
        endpoints: replicas.map((relay) => `https://127.0.0.1:${relay.port}`),
        config: { upstream: { fallback: [`https://127.0.0.1:${balancer.port}`], warmEndpoints: 2 } },
      });
      await waitFor(
        () => stallguard.pool.snapshot().filter((endpoint) => endpoint.role === 'primary').every((endpoint) => endpoint.sessions.length > 0),
        3000,
        `sessions to both replicas without a request (start ${start + 1})`,
      );
      await stallguard.close();
    }
  });
});

describe('saved endpoints', () => {
  it('restart reaches replicas past blackholed balancer', async () => {
    const servers = await startReplicas(3);
    servers[0]!.setApiServerAddresses(servers.map((server) => addressOf(server)));
    const balancer = await startRelay(servers[0]!);
    const balancerUrl = `https://127.0.0.1:${balancer.port}`;
    const config: ConfigOverrides = { upstream: { discovery: 'endpointslices', connectTimeoutMs: 500 } };

    const first = await startProxy({ endpoints: [balancerUrl], config });
    const everything = sorted([balancerUrl, ...servers.map((server) => server.url)]);
    await waitFor(() => savedIds(first.stateDir).join() === everything.join(), 5000, 'the discovered list to be saved');
    await first.stallguard.close();
    expect(fs.statSync(path.join(first.stateDir, 'endpoints.json')).mode & 0o777).toBe(0o600);

    balancer.blackhole('both');
    const second = await startProxy({ endpoints: [balancerUrl], config, stateDir: first.stateDir });
    expect(primaryIds(second.stallguard)).toEqual(everything);
    expect(second.log.withMessage('loaded the saved endpoints')).toHaveLength(1);

    const load = startKubeletLoad(second.client);
    await sleep(2000);
    const report = await load.stop();
    expect(report.gets.failed).toEqual([]);
    expect(report.leaseRenewals.failed).toEqual([]);
    expect(report.gets.ok).toBeGreaterThan(5);
    expect(primaryIds(second.stallguard)).toEqual(everything);

    // Without the saved list, the same restart has nothing but the blackholed balancer.
    const fresh = await startProxy({ endpoints: [balancerUrl], config });
    const response = await h2Request(fresh.client, { path: '/api/v1/nodes/n1', timeoutMs: 10_000 });
    expect(response.status).toBe(503);
  });

  it.each([
    ['not JSON', 'endpoints: [oops'],
    ['of another version', JSON.stringify({ version: 7, endpoints: [] })],
    ['with an invalid entry', JSON.stringify({ version: 1, endpoints: [{ url: 'http://127.0.0.1:1' }] })],
  ])('ignores a state file %s', async (_name, content) => {
    const [server] = await startReplicas(1);
    const stateDir = path.join(workDir(), 'state');
    fs.mkdirSync(stateDir, { recursive: true });
    fs.writeFileSync(path.join(stateDir, 'endpoints.json'), content);

    const { stallguard, client, log } = await startProxy({ endpoints: [server!.url], config: { upstream: { discovery: 'endpointslices' } }, stateDir });

    expect(log.withMessage('the saved endpoints file is corrupt; ignoring it')).toHaveLength(1);
    expect(primaryIds(stallguard)).toEqual([server!.url]);
    expect((await h2Request(client, { path: '/api/v1/nodes/n1' })).status).toBe(200);
    await waitFor(() => savedIds(stateDir).join() === server!.url, 3000, 'a valid file to replace it');
  });

  it('starts with an unusable state file', async () => {
    const [server] = await startReplicas(1);
    const stateDir = path.join(workDir(), 'state');
    fs.mkdirSync(path.join(stateDir, 'endpoints.json'), { recursive: true });

    const { client, log } = await startProxy({ endpoints: [server!.url], stateDir });

    expect(log.withMessage('cannot read the saved endpoints; ignoring them')).toHaveLength(1);
    await waitFor(() => log.withMessage('cannot save the endpoints').length === 1, 3000, 'the failed save to be logged');
    expect((await h2Request(client, { path: '/api/v1/nodes/n1' })).status).toBe(200);
    expect(fs.readdirSync(stateDir).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });
});

describe('EndpointStateFile', () => {
  const log = pino({ level: 'silent' });

  it('round-trips endpoints with mode 0600', async () => {
    const stateDir = path.join(workDir(), 'nested', 'state');
    const file = new EndpointStateFile(stateDir, '', log);
    const named = parseEndpoint('https://api.example:6443', '');
    const endpoints: Endpoint[] = [
      { ...named, id: 'https://127.0.0.5:6443', connectHost: '127.0.0.5' },
      parseEndpoint('https://[::1]:6443', ''),
      parseEndpoint('https://127.0.0.9:443', ''),
    ];

    await file.save(endpoints);
    const loaded = await new EndpointStateFile(stateDir, '', log).load();

    expect(loaded).toEqual(endpoints);
    expect(fs.statSync(file.path).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(stateDir)).toEqual(['endpoints.json']);
  });

  it('applies the current serverName override', async () => {
    const stateDir = workDir();
    await new EndpointStateFile(stateDir, '', log).save([parseEndpoint('https://127.0.0.5:6443', '')]);

    const [loaded] = await new EndpointStateFile(stateDir, 'kubernetes', log).load();

    expect(loaded!.serverName).toBe('kubernetes');
    expect(loaded!.authority).toBe('kubernetes:6443');
  });

  it('ends with the last of several saves', async () => {
    const stateDir = workDir();
    const file = new EndpointStateFile(stateDir, '', log);

    await Promise.all([1, 2, 3, 4].map((n) => file.save([parseEndpoint(`https://127.0.0.${n}:6443`, '')])));

    expect(savedIds(stateDir)).toEqual(['https://127.0.0.4:6443']);
  });
});

describe('EndpointSet', () => {
  const endpoint = (n: number) => parseEndpoint(`https://127.0.0.${n}:6443`, '');

  function newSet(applied: Endpoint[][], overrides: { saved?: Endpoint[]; debounceMs?: number; maxDelayMs?: number } = {}) {
    return new EndpointSet({
      sources: [
        { name: 'config https://127.0.0.1:6443', initial: [endpoint(1)], reported: true },
        { name: 'endpointslices', initial: [], reported: false, authoritative: true },
      ],
      saved: overrides.saved ?? [],
      debounceMs: overrides.debounceMs ?? 100,
      maxDelayMs: overrides.maxDelayMs ?? 1000,
      log: pino({ level: 'silent' }),
      onApply: (endpoints) => applied.push(endpoints),
    });
  }

  it('ignores a flap shorter than the debounce', async () => {
    const applied: Endpoint[][] = [];
    const set = newSet(applied);
    set.update('endpointslices', [endpoint(2)]);
    await sleep(300);
    expect(applied).toHaveLength(1);

    set.update('endpointslices', [endpoint(2), endpoint(3)]);
    await sleep(40);
    set.update('endpointslices', [endpoint(2)]);
    await sleep(300);

    expect(applied).toHaveLength(1);
    expect(set.current.map((entry) => entry.id)).toEqual([endpoint(1).id, endpoint(2).id]);
    set.stop();
  });

  it('applies within the maximum delay while changes keep coming', async () => {
    const applied: Endpoint[][] = [];
    const set = newSet(applied, { debounceMs: 200, maxDelayMs: 500 });
    const started = Date.now();
    for (let n = 2; Date.now() - started < 900; n = n === 2 ? 3 : 2) {
      set.update('endpointslices', [endpoint(n)]);
      await sleep(50);
    }
    set.stop();

    expect(applied.length).toBeGreaterThanOrEqual(1);
  });

  it('never makes a fallback address primary', async () => {
    const applied: Endpoint[][] = [];
    const set = new EndpointSet({
      sources: [{ name: 'endpointslices', initial: [], reported: false, authoritative: true }],
      saved: [endpoint(9)],
      reservedIds: new Set([endpoint(9).id, endpoint(3).id]),
      debounceMs: 50,
      maxDelayMs: 500,
      log: pino({ level: 'silent' }),
      onApply: (endpoints) => applied.push(endpoints),
    });
    expect(set.current).toEqual([]);

    set.update('endpointslices', [endpoint(2), endpoint(3)]);
    await sleep(150);

    expect(applied.map((list) => list.map((entry) => entry.id))).toEqual([[endpoint(2).id]]);
    set.stop();
  });

  it('keeps saved endpoints until discovery answers', async () => {
    const applied: Endpoint[][] = [];
    const set = newSet(applied, { saved: [endpoint(7), endpoint(1)] });

    expect(set.current.map((entry) => entry.id)).toEqual([endpoint(1).id, endpoint(7).id]);
    set.update('endpointslices', []);
    await sleep(200);
    expect(set.usingSaved).toBe(true);

    set.update('endpointslices', [endpoint(2)]);
    await sleep(200);
    expect(set.usingSaved).toBe(false);
    expect(applied.at(-1)!.map((entry) => entry.id)).toEqual([endpoint(1).id, endpoint(2).id]);
    set.stop();
  });
});

describe('kubernetes Service objects', () => {
  it('reads ready slice endpoints on the https port', () => {
    const read = readEndpointSlice({
      metadata: { namespace: 'default', name: 'kubernetes' },
      addressType: 'IPv4',
      ports: [{ name: 'metrics', port: 9000 }, { name: 'https', port: 6443 }],
      endpoints: [
        { addresses: ['10.0.0.1'], conditions: { ready: true } },
        { addresses: ['10.0.0.2'], conditions: { ready: false, terminating: true } },
        { addresses: ['10.0.0.3'] },
        { addresses: ['not-an-ip'], conditions: { ready: true } },
      ],
    });

    expect(read.addresses).toEqual([
      { ip: '10.0.0.1', port: 6443 },
      { ip: '10.0.0.3', port: 6443 },
    ]);
    expect(read.problems).toEqual(['EndpointSlice default/kubernetes lists an invalid address "not-an-ip"']);
  });

  it('skips FQDN slices and slices without a usable port', () => {
    expect(readEndpointSlice({ addressType: 'FQDN', endpoints: [{ addresses: ['api.example'] }] }).addresses).toEqual([]);
    const noPort = readEndpointSlice({ addressType: 'IPv4', ports: [{ name: 'a', port: 1 }, { name: 'b', port: 2 }], endpoints: [{ addresses: ['10.0.0.1'] }] });
    expect(noPort.addresses).toEqual([]);
    expect(noPort.problems[0]).toContain('no port named "https"');
    expect(readEndpointSlice({ addressType: 'IPv6', ports: [{ port: 443 }], endpoints: [{ addresses: ['fd00::1'] }] }).addresses).toEqual([{ ip: 'fd00::1', port: 443 }]);
  });

  it('reads ready legacy Endpoints addresses', () => {
    const read = readEndpoints({
      subsets: [{ addresses: [{ ip: '10.0.0.1' }], notReadyAddresses: [{ ip: '10.0.0.2' }], ports: [{ name: 'https', port: 6443 }] }],
    });

    expect(read.addresses).toEqual([{ ip: '10.0.0.1', port: 6443 }]);
  });
});
