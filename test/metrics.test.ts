/**
 * Each metric, /readyz, /state and `stallguard status` are checked after the event they report
 * really happened: faults come from the relays and the fake API servers, and values are read from
 * /metrics as Prometheus reads them, never from the metric objects.
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runStatusCommand, type StatusDependencies } from '../src/cli/status.js';
import type { StateDocument } from '../src/metrics/state.js';
import { connectH2, h1Request, h2Request } from '../src/testbed/client.js';
import { startStack, type Stack, type StackOptions } from '../src/testbed/stack.js';
import { createCa, readCertificateInfo } from '../src/tls/x509.js';
import { waitFor } from './helpers/wait.js';

const REPO_ROOT = path.resolve(import.meta.dirname, '..');

// ---- reading /metrics ----

interface ScrapedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Scrape {
  samples: ScrapedSample[];
  help: Map<string, string>;
  text: string;
}

async function scrape(stack: Stack): Promise<Scrape> {
  const response = await fetch(`http://${stack.stallguard.addresses.metrics}/metrics`);
  expect(response.status).toBe(200);
  const text = await response.text();

  const samples: ScrapedSample[] = [];
  const help = new Map<string, string>();
  for (const line of text.split('\n')) {
    const helpMatch = /^# HELP (\S+) (.*)$/.exec(line);
    if (helpMatch !== null) help.set(helpMatch[1]!, helpMatch[2]!);
    if (line === '' || line.startsWith('#')) continue;

    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return { samples, help, text };
}

/** Sums the samples of `name` whose labels include every label given; 0 when none match. */
async function metricValue(stack: Stack, name: string, labels: Record<string, string> = {}): Promise<number> {
  const { samples } = await scrape(stack);
  return samples
    .filter((sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value))
    .reduce((sum, sample) => sum + sample.value, 0);
}

async function waitForMetric(stack: Stack, name: string, labels: Record<string, string>, predicate: (value: number) => boolean, timeoutMs: number): Promise<void> {
  await waitFor(async () => predicate(await metricValue(stack, name, labels)), timeoutMs, `${name}${JSON.stringify(labels)} to change`);
}

// ---- fixtures ----

let stack: Stack | undefined;
const sessions: http2.ClientHttp2Session[] = [];

afterEach(async () => {
  for (const session of sessions.splice(0)) session.close();
  await stack?.close();
  stack = undefined;
});

async function start(options: StackOptions = {}): Promise<Stack> {
  stack = await startStack(options);
  return stack;
}

async function client(target: Stack): Promise<http2.ClientHttp2Session> {
  const session = await connectH2(target.url, target.clientTls);
  sessions.push(session);
  return session;
}

function endpointOf(target: Stack, index: number): string {
  return target.config.upstream.endpoints[index]!;
}

/**
 * Three replicas behind relays, all warm, with short connect timeouts and, unless given, a short
 * ejection time. The first
 * readiness probe runs at a random time within readyInterval; a 10-minute interval keeps it out of
 * these few seconds, so a blackhole is found by a PING, as the tests expect.
 */
function threeReplicas(ejectionTimeMs = 500): StackOptions {
  return {
    replicas: 3,
    config: { upstream: { warmEndpoints: 3, connectTimeoutMs: 500 }, health: { ejectionTimeMs, readyIntervalMs: 600_000 } },
  };
}

async function waitUntilReady(target: Stack, count: number): Promise<void> {
  await waitForMetric(target, 'stallguard_endpoint_state', { state: 'ready' }, (value) => value === count, 5000);
}

// ---- upstream ----

describe('upstream metrics', () => {
  it('counts PING ACKs and their round-trip time', async () => {
    const target = await start();
    const endpoint = endpointOf(target, 0);
    await waitForMetric(target, 'stallguard_pings_total', { endpoint, outcome: 'ack' }, (value) => value >= 1, 5000);
    expect(await metricValue(target, 'stallguard_ping_rtt_seconds_count', { endpoint })).toBeGreaterThanOrEqual(1);
    const fastAcks = await metricValue(target, 'stallguard_ping_rtt_seconds_bucket', { endpoint, le: '0.25' });

    target.relays[0]!.delay(200);
    // A PING that waits 200 ms each way lands above the 0.25 s bucket.
    await waitFor(
      async () => (await metricValue(target, 'stallguard_ping_rtt_seconds_count', { endpoint })) > (await metricValue(target, 'stallguard_ping_rtt_seconds_bucket', { endpoint, le: '0.25' })),
      5000,
      'a PING slower than 0.25 s',
    );
    expect(await metricValue(target, 'stallguard_ping_rtt_seconds_bucket', { endpoint, le: '0.25' })).toBe(fastAcks);
  });

  it('reports a PING timeout as eviction, ejection and state change', async () => {
    const target = await start(threeReplicas());
    const endpoint = endpointOf(target, 0);
    await waitUntilReady(target, 3);
    expect(await metricValue(target, 'stallguard_upstream_sessions', { endpoint, state: 'ready' })).toBe(1);
    expect(await metricValue(target, 'stallguard_endpoint_state_transitions_total', { endpoint, to: 'ejected' })).toBe(0);

    target.relays[0]!.blackhole('both');
    await waitForMetric(target, 'stallguard_sessions_evicted_total', { endpoint, reason: 'ping_timeout' }, (value) => value === 1, 5000);

    expect(await metricValue(target, 'stallguard_pings_total', { endpoint, outcome: 'timeout' })).toBe(1);
    expect(await metricValue(target, 'stallguard_endpoint_state', { endpoint, state: 'ejected' })).toBe(1);
    expect(await metricValue(target, 'stallguard_endpoint_state', { endpoint, state: 'ready' })).toBe(0);
    expect(await metricValue(target, 'stallguard_endpoint_state_transitions_total', { endpoint, to: 'ejected' })).toBe(1);
    expect(await metricValue(target, 'stallguard_upstream_sessions', { endpoint, state: 'ready' })).toBe(0);
    // The other endpoints are untouched.
    expect(await metricValue(target, 'stallguard_endpoint_state', { endpoint: endpointOf(target, 1), state: 'ready' })).toBe(1);
  });

  it('counts a redial into a blackhole as connect_timeout', async () => {
    const target = await start(threeReplicas());
    const endpoint = endpointOf(target, 0);
    await waitUntilReady(target, 3);

    target.relays[0]!.blackhole('both');
    // PING timeout (about 2 s), ejection (0.5 s), then a dial that times out after 0.5 s.
    await waitForMetric(target, 'stallguard_sessions_evicted_total', { endpoint, reason: 'connect_timeout' }, (value) => value >= 1, 8000);

    expect(await metricValue(target, 'stallguard_dial_failures_total', { endpoint, code: 'SG_ERR_UPSTREAM_CONNECT_TIMEOUT' })).toBeGreaterThanOrEqual(1);
    expect(await metricValue(target, 'stallguard_endpoint_state_transitions_total', { endpoint, to: 'connecting' })).toBeGreaterThanOrEqual(1);
  });

  it('counts a failed upstream TLS handshake as tls_error', async () => {
    // A CA that did not sign the API server's certificate.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-unrelated-ca-'));
    const caPath = path.join(dir, 'ca.crt');
    fs.writeFileSync(caPath, (await createCa('unrelated-ca')).certPem);

    const target = await start({ config: { upstream: { tls: { ca: caPath } } } });
    const endpoint = endpointOf(target, 0);
    await waitForMetric(target, 'stallguard_sessions_evicted_total', { endpoint, reason: 'tls_error' }, (value) => value >= 1, 5000);
    fs.rmSync(dir, { recursive: true, force: true });

    expect(await metricValue(target, 'stallguard_dial_failures_total', { endpoint, code: 'SG_ERR_UPSTREAM_TLS' })).toBeGreaterThanOrEqual(1);
    expect(await metricValue(target, 'stallguard_endpoint_state', { endpoint, state: 'ready' })).toBe(0);
  });

  it('counts a GOAWAY and the eviction it causes', async () => {
    const target = await start();
    const endpoint = endpointOf(target, 0);
    await waitUntilReady(target, 1);

    target.servers[0]!.goaway();

    await waitForMetric(target, 'stallguard_goaways_received_total', { endpoint }, (value) => value === 1, 5000);
    await waitForMetric(target, 'stallguard_sessions_evicted_total', { endpoint, reason: 'goaway' }, (value) => value === 1, 5000);
    // A GOAWAY is graceful: the endpoint reconnects without being ejected.
    await waitUntilReady(target, 1);
    expect(await metricValue(target, 'stallguard_endpoint_state_transitions_total', { endpoint, to: 'ejected' })).toBe(0);
  });

  it('counts a reset connection', async () => {
    const target = await start();
    const endpoint = endpointOf(target, 0);
    await waitUntilReady(target, 1);

    target.relays[0]!.reset();

    // NOTE: node:http2 reports a TCP RST as a session error (ECONNRESET), which the session labels
    // `error`; `reset` is a close without an error. Either one is this eviction.
    await waitFor(
      async () => (await metricValue(target, 'stallguard_sessions_evicted_total', { endpoint, reason: 'reset' })) + (await metricValue(target, 'stallguard_sessions_evicted_total', { endpoint, reason: 'error' })) >= 1,
      5000,
      'an eviction for the reset connection',
    );
    expect(await metricValue(target, 'stallguard_sessions_evicted_total', { endpoint, reason: 'ping_timeout' })).toBe(0);
  });
});

// ---- requests ----

describe('request metrics', () => {
  it('counts requests by method, status class and endpoint, and their duration', async () => {
    const target = await start();
    const endpoint = endpointOf(target, 0);
    const session = await client(target);

    expect((await h2Request(session, { path: '/api/v1/nodes/n1' })).status).toBe(200);
    expect((await h2Request(session, { path: '/api/v1/nodes/does-not-exist' })).status).toBe(404);

    expect(await metricValue(target, 'stallguard_requests_total', { method: 'GET', code_class: '2xx', endpoint })).toBe(1);
    expect(await metricValue(target, 'stallguard_requests_total', { method: 'GET', code_class: '4xx', endpoint })).toBe(1);
    expect(await metricValue(target, 'stallguard_request_duration_seconds_count', { method: 'GET' })).toBe(2);
  });

  it('labels an unknown method as other', async () => {
    const target = await start();
    const session = await client(target);

    await h2Request(session, { method: 'BREW', path: '/api/v1/nodes/n1' });

    expect(await metricValue(target, 'stallguard_requests_total', { method: 'other' })).toBe(1);
    expect((await scrape(target)).text).not.toContain('BREW');
  });

  it('counts a GET retried after a stall', async () => {
    const target = await start({ topology: 'balancer' });
    const session = await client(target);
    expect((await h2Request(session, { path: '/api/v1/nodes/n1' })).status).toBe(200);
    expect(await metricValue(target, 'stallguard_retries_total', { reason: 'ping_timeout', outcome: 'retried' })).toBe(0);

    const inflight = h2Request(session, { path: '/testbed/slow?ms=1500', timeoutMs: 10_000 });
    await waitFor(() => target.servers[0]!.requests.some((request) => request.path.startsWith('/testbed/slow')), 2000, 'the slow GET to reach the server');
    target.relays[0]!.failover();

    expect((await inflight).status).toBe(200);
    expect(await metricValue(target, 'stallguard_retries_total', { reason: 'ping_timeout', outcome: 'retried' })).toBe(1);
  });

  it('counts a request without credentials as unauthenticated', async () => {
    const target = await start();
    const session = await connectH2(target.url, { ca: target.clientTls.ca });
    sessions.push(session);

    expect((await h2Request(session, { path: '/api/v1/nodes/n1' })).status).toBe(401);

    expect(await metricValue(target, 'stallguard_requests_rejected_total', { reason: 'unauthenticated' })).toBe(1);
  });

  it('counts a request with no reachable endpoint as no_endpoint', async () => {
    const target = await start({ config: { upstream: { connectTimeoutMs: 500 } } });
    await target.relays[0]!.refuse();
    target.servers[0]!.destroyAllSessions();
    await waitForMetric(target, 'stallguard_endpoint_state', { state: 'ready' }, (value) => value === 0, 5000);
    const session = await client(target);

    expect((await h2Request(session, { path: '/api/v1/nodes/n1' })).status).toBe(503);

    expect(await metricValue(target, 'stallguard_requests_rejected_total', { reason: 'no_endpoint' })).toBe(1);
    expect(await metricValue(target, 'stallguard_requests_total', { code_class: '5xx', endpoint: 'none' })).toBe(1);
  });

  it('tracks active streams while a request is in flight', async () => {
    const target = await start();
    const session = await client(target);

    const slow = h2Request(session, { path: '/testbed/slow?ms=800' });
    await waitForMetric(target, 'stallguard_active_streams', {}, (value) => value === 1, 2000);
    expect((await slow).status).toBe(200);

    await waitForMetric(target, 'stallguard_active_streams', {}, (value) => value === 0, 2000);
  });
});

// ---- watches ----

function openWatch(session: http2.ClientHttp2Session, query = ''): Promise<http2.ClientHttp2Stream> {
  const stream = session.request({ ':method': 'GET', ':path': `/api/v1/namespaces/default/configmaps?watch=true${query}` });
  stream.on('error', () => {
    // The tests end watches on purpose.
  });
  stream.resume();
  return new Promise((resolve) => stream.once('response', () => resolve(stream)));
}

describe('watch metrics', () => {
  it('counts a watch the client ends', async () => {
    const target = await start();
    const session = await client(target);

    const stream = await openWatch(session);
    await waitForMetric(target, 'stallguard_active_watches', {}, (value) => value === 1, 2000);
    stream.close();

    await waitForMetric(target, 'stallguard_watches_ended_total', { reason: 'client' }, (value) => value === 1, 2000);
    expect(await metricValue(target, 'stallguard_active_watches')).toBe(0);
  });

  it('counts a watch the API server ends', async () => {
    const target = await start();
    const session = await client(target);

    await openWatch(session, '&timeoutSeconds=1');

    await waitForMetric(target, 'stallguard_watches_ended_total', { reason: 'upstream' }, (value) => value === 1, 4000);
    expect(await metricValue(target, 'stallguard_active_watches')).toBe(0);
  });

  it('counts a watch ended by a stalled session', async () => {
    const target = await start();
    const session = await client(target);
    await openWatch(session);

    target.relays[0]!.blackhole('both');

    await waitForMetric(target, 'stallguard_watches_ended_total', { reason: 'session_lost' }, (value) => value === 1, 5000);
    expect(await metricValue(target, 'stallguard_active_watches')).toBe(0);
  });
});

// ---- downstream, TLS, process ----

describe('downstream and process metrics', () => {
  it('counts client connections by protocol and TLS outcome', async () => {
    const target = await start();
    await client(target);
    await h1Request(target.url, target.clientTls, { path: '/api/v1/nodes/n1' });
    await waitForMetric(target, 'stallguard_downstream_connections_total', { protocol: 'h2', tls: 'ok' }, (value) => value === 1, 2000);
    expect(await metricValue(target, 'stallguard_downstream_connections_total', { protocol: 'http/1.1', tls: 'ok' })).toBe(1);

    // A client certificate from a CA that stallguard does not trust ends the connection.
    const foreign = await connectH2(target.url, { ca: target.clientTls.ca, cert: target.pki.foreignClient.certPem, key: target.pki.foreignClient.keyPem }).catch(() => undefined);
    foreign?.close();
    await waitForMetric(target, 'stallguard_downstream_connections_total', { protocol: 'h2', tls: 'rejected' }, (value) => value === 1, 2000);

    await sendUpgrade(target);
    expect(await metricValue(target, 'stallguard_downstream_connections_total', { protocol: 'upgrade', tls: 'ok' })).toBe(1);
  });

  it('reports the expiry of every loaded certificate', async () => {
    const target = await start();
    const expected = {
      'upstream-client': target.pki.node.certPem,
      'upstream-ca': target.pki.ca.certPem,
      'listen-serving': target.pki.server.certPem,
      'listen-client-ca': target.pki.ca.certPem,
    };

    for (const [role, pem] of Object.entries(expected)) {
      const notAfter = readCertificateInfo(pem).notAfter.getTime() / 1000;
      expect(await metricValue(target, 'stallguard_certificate_expiry_timestamp_seconds', { role })).toBe(notAfter);
    }
  });

  it('exports configured timeouts, build info, TLS reloads and process metrics', async () => {
    const target = await start({ config: { health: { pingIntervalMs: 1500, pingTimeoutMs: 700 }, upstream: { connectTimeoutMs: 2500 } } });
    const { samples } = await scrape(target);
    const value = (name: string, labels: Record<string, string> = {}) =>
      samples.find((sample) => sample.name === name && Object.entries(labels).every(([key, label]) => sample.labels[key] === label))?.value;

    expect(value('stallguard_config_ping_interval_seconds')).toBe(1.5);
    expect(value('stallguard_config_ping_timeout_seconds')).toBe(0.7);
    expect(value('stallguard_config_connect_timeout_seconds')).toBe(2.5);
    expect(value('stallguard_build_info', { nodejs: process.version })).toBe(1);
    expect(value('stallguard_tls_reloads_total', { outcome: 'success' })).toBe(0);
    expect(value('stallguard_tls_reloads_total', { outcome: 'failure' })).toBe(0);
    expect(value('stallguard_process_cpu_user_seconds_total')).toBeGreaterThan(0);
  });

  it('gives every metric a help sentence and no path labels', async () => {
    const target = await start();
    const session = await client(target);
    await h2Request(session, { path: '/api/v1/namespaces/kube-system/pods?labelSelector=app%3Dx' });

    const { samples, help } = await scrape(target);

    for (const [name, text] of help) {
      expect(name, name).toMatch(/^stallguard_/);
      expect(text, name).toMatch(/^[A-Z].*\.$/);
    }
    for (const sample of samples) {
      for (const labelValue of Object.values(sample.labels)) {
        expect(labelValue, `${sample.name} ${JSON.stringify(sample.labels)}`).not.toMatch(/\/api|kube-system|system:node/);
      }
    }
  });
});

async function sendUpgrade(target: Stack): Promise<void> {
  const port = Number(new URL(target.url).port);
  await new Promise<void>((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ...target.clientTls, ALPNProtocols: ['http/1.1'] });
    socket.on('secureConnect', () => {
      socket.write(
        'POST /api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: localhost\r\n' +
          'Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n',
      );
    });
    socket.on('data', (chunk: Buffer) => {
      if (chunk.toString('latin1').startsWith('HTTP/1.1 101')) {
        socket.destroy();
        resolve();
      }
    });
    socket.on('error', reject);
  });
}

// ---- health endpoints and /state ----

describe('health endpoints', () => {
  it('answers /readyz 200, then 503 naming every endpoint', async () => {
    const target = await start({ replicas: 2, config: { upstream: { warmEndpoints: 2, connectTimeoutMs: 500 } } });
    await waitUntilReady(target, 2);
    const readyz = () => fetch(`http://${target.stallguard.addresses.metrics}/readyz`);
    expect((await readyz()).status).toBe(200);

    for (const relay of target.relays) {
      await relay.refuse();
      relay.blackhole('both');
    }
    await waitFor(async () => (await readyz()).status === 503, 8000, '/readyz to answer 503');

    const body = await (await readyz()).text();
    expect(body).toMatch(/^not ready: no API-server endpoint is ready: /);
    for (const endpoint of target.config.upstream.endpoints) expect(body).toContain(endpoint);
  });

  it('serves /state with endpoints, identity, certificates and totals', async () => {
    // Ejected for 10 s, so the endpoint is still ejected when /state is read.
    const target = await start(threeReplicas(10_000));
    await waitUntilReady(target, 3);
    target.relays[1]!.blackhole('both');
    await waitForMetric(target, 'stallguard_endpoint_state', { endpoint: endpointOf(target, 1), state: 'ejected' }, (value) => value === 1, 5000);

    const response = await fetch(`http://${target.stallguard.addresses.metrics}/state`);
    const text = await response.text();
    const state = JSON.parse(text) as StateDocument;

    expect(response.headers.get('content-type')).toBe('application/json');
    expect(state.ready).toBe(true);
    expect(state.notReadyReason).toBeNull();
    expect(state.endpoints.map((endpoint) => endpoint.endpoint)).toEqual(target.config.upstream.endpoints);
    const ejected = state.endpoints[1]!;
    expect(ejected.state).toBe('ejected');
    expect(ejected.lastError?.message).toContain('lost: ping_timeout');
    expect(Date.parse(ejected.since)).toBeGreaterThan(Date.parse(state.startedAt));
    const ready = state.endpoints[0]!;
    expect(ready.state).toBe('ready');
    expect(ready.rttMs).toBeGreaterThan(0);
    expect(ready.sessions.filter((session) => session.state === 'ready')).toHaveLength(1);
    expect(ready.activeWatches).toBe(0);
    expect(state.identity?.subject).toBe('CN=system:node:n1, O=system:nodes');
    expect(state.identity?.notAfter).toBe(readCertificateInfo(target.pki.node.certPem).notAfter.toISOString());
    expect(state.certificates.map((certificate) => certificate.role).sort()).toEqual(['listen-client-ca', 'listen-serving', 'upstream-ca', 'upstream-client']);
    expect(state.totals.evictions.byReason['ping_timeout']).toBe(1);
    expect(state.config).toMatchObject({ upstream: { endpoints: target.config.upstream.endpoints }, health: { pingInterval: '1s' } });
    expect(text).not.toContain('PRIVATE KEY');
    expect(text).not.toContain('BEGIN CERTIFICATE');
  });
});

// ---- stallguard status ----

interface StatusRun {
  status: number;
  stdout: string;
  stderr: string;
}

async function runStatus(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<StatusRun> {
  let stdout = '';
  let stderr = '';
  const deps: StatusDependencies = { env, write: (text) => (stdout += text), writeError: (text) => (stderr += text) };
  const status = await runStatusCommand(argv, deps);
  return { status, stdout, stderr };
}

function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const port = (probe.address() as net.AddressInfo).port;
      probe.close(() => resolve(port));
    });
  });
}

function writeConfig(dir: string, metricsAddress: string): string {
  const file = path.join(dir, 'stallguard.yaml');
  fs.writeFileSync(file, `upstream:\n  endpoints: ["https://127.0.0.1:6443"]\nmetrics:\n  address: "${metricsAddress}"\n`);
  return file;
}

describe('stallguard status', () => {
  let workDir: string;

  beforeAll(() => {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-status-'));
    return () => fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('prints a table of endpoints, identity and totals', async () => {
    const target = await start(threeReplicas(10_000));
    await waitUntilReady(target, 3);
    target.relays[2]!.blackhole('both');
    await waitForMetric(target, 'stallguard_endpoint_state', { endpoint: endpointOf(target, 2), state: 'ejected' }, (value) => value === 1, 5000);

    const run = await runStatus(['--metrics-address', target.stallguard.addresses.metrics]);

    expect(run.status).toBe(0);
    expect(run.stderr).toBe('');
    const lines = run.stdout.split('\n');
    expect(lines[0]).toMatch(/^stallguard \S+ at 127\.0\.0\.1:\d+, up \S+: READY \(2 of 3 endpoints ready\)$/);
    expect(lines[2]).toMatch(/^ENDPOINT\s+STATE\s+SINCE\s+PING RTT\s+SESSIONS\s+STREAMS\s+WATCHES\s+LAST ERROR$/);
    expect(lines[3]).toMatch(new RegExp(`^${escape(endpointOf(target, 0))}\\s+ready\\s+\\S+ ago\\s+\\d+(\\.\\d+)?ms\\s+1\\s+0\\s+0\\s+-$`));
    expect(lines[5]).toMatch(new RegExp(`^${escape(endpointOf(target, 2))}\\s+ejected\\s+.*ago: session \\d+ lost: ping_timeout$`));
    expect(run.stdout).toContain('Identity: CN=system:node:n1, O=system:nodes (upstream client certificate, expires ');
    expect(run.stdout).toMatch(/ {2}upstream-client\s+expires \S+Z, in 29d23h/);
    expect(run.stdout).toContain('  evictions: 1 (ping_timeout 1)');
  });

  it('prints the /state document with --output json', async () => {
    const target = await start();
    await waitUntilReady(target, 1);

    const run = await runStatus(['--metrics-address', target.stallguard.addresses.metrics, '--output', 'json']);

    expect(run.status).toBe(0);
    const state = JSON.parse(run.stdout) as StateDocument;
    expect(state.endpoints.map((endpoint) => endpoint.endpoint)).toEqual(target.config.upstream.endpoints);
    expect(state.ready).toBe(true);
  });

  it('reads the metrics address from --config, on loopback for a wildcard', async () => {
    const target = await start();
    const port = Number(target.stallguard.addresses.metrics.split(':').at(-1));
    const wildcard = writeConfig(workDir, `0.0.0.0:${port}`);

    const run = await runStatus(['--config', wildcard]);

    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain(`at 127.0.0.1:${port},`);
  });

  it('refuses a non-loopback address from the configuration', async () => {
    const file = writeConfig(workDir, '192.0.2.10:9464');

    const run = await runStatus(['--config', file]);

    expect(run.status).toBe(1);
    expect(run.stderr).toContain(`metrics.address in ${file} is 192.0.2.10:9464, which is not a loopback address`);
    expect(run.stderr).toContain('pass --metrics-address 192.0.2.10:9464');
  });

  it('names the address and the fix when stallguard is not running', async () => {
    const port = await closedPort();

    const run = await runStatus(['--metrics-address', `127.0.0.1:${port}`]);

    expect(run.status).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(
      `stallguard is not reachable at 127.0.0.1:${port} (from --metrics-address): connection refused; ` +
        'check that stallguard is running there and that --metrics-address matches its metrics.address\n',
    );
  });

  it('rejects an address that is not stallguard', async () => {
    const plain = net.createServer((socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello'));
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));

    const run = await runStatus(['--metrics-address', `127.0.0.1:${(plain.address() as net.AddressInfo).port}`]);
    plain.close();

    expect(run.status).toBe(1);
    expect(run.stderr).toContain('/state did not return JSON; is this address a stallguard metrics address?');
  });

  it('rejects unknown options and output formats with exit 2', async () => {
    expect((await runStatus(['--output', 'yaml'])).stderr).toBe('--output "yaml" is not supported; use table or json\n');
    expect((await runStatus(['--output', 'yaml'])).status).toBe(2);
    expect((await runStatus(['--verbose'])).status).toBe(2);
    expect((await runStatus(['--metrics-address'])).stderr).toContain('--metrics-address needs a value');
  });
});

/**
 * Runs the built CLI without blocking this process, which hosts the stallguard it reads. Resolves
 * with the exit status and output, whatever the status.
 */
function runBuiltCli(mainJs: string, args: string[]): Promise<StatusRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, [mainJs, ...args], { encoding: 'utf8', timeout: 20_000 }, (err, stdout, stderr) => {
      const status = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ status, stdout, stderr });
    });
  });
}

describe('built CLI status command', () => {
  const mainJs = path.join(REPO_ROOT, 'dist/cli/main.js');

  beforeAll(() => {
    // Emits even when another module has a type error, so this file tests the CLI alone.
    try {
      execFileSync('npx', ['tsc', '-p', 'tsconfig.json', '--noEmitOnError', 'false'], { cwd: REPO_ROOT, stdio: 'pipe' });
    } catch {
      // Type errors elsewhere are reported by `npm run typecheck`; the emitted CLI is still usable.
    }
    expect(fs.existsSync(mainJs)).toBe(true);
  }, 120_000);

  it('prints the table and exits 0', async () => {
    const target = await start();
    await waitUntilReady(target, 1);

    const run = await runBuiltCli(mainJs, ['status', '--metrics-address', target.stallguard.addresses.metrics]);

    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('READY (1 of 1 endpoints ready)');
    expect(run.stdout).toContain(endpointOf(target, 0));
  });

  it('exits 1 when stallguard is not reachable', async () => {
    const port = await closedPort();

    const run = await runBuiltCli(mainJs, ['status', '--metrics-address', `127.0.0.1:${port}`]);

    expect(run.status).toBe(1);
    expect(run.stderr).toContain(`stallguard is not reachable at 127.0.0.1:${port}`);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
