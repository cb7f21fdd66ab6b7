/**
 * Runs a real Prometheus against a running stallguard. Every PromQL expression of the Grafana
 * dashboard and of the alerting rules is evaluated through Prometheus' HTTP API, before and after
 * faults injected through the relays. A renamed metric, a wrong label or an expression that can
 * never fire fails here.
 *
 * One stallguard is scraped as three targets labelled node-1, node-2 and node-3. Nodes share the
 * endpoint URLs in a real fleet, and so do these three targets, which is what the replica alert
 * counts across nodes.
 *
 * The alerts are evaluated from a variant of the rules file in which every `for:` is 1s and every
 * [5m] window is [20s], so they can fire within the test; promtool's unit tests check the real
 * durations and windows.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import yaml from 'js-yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { connectH2, h2Request } from '../src/testbed/client.js';
import { startStack, type Stack } from '../src/testbed/stack.js';
import { createCa, issueCertificate, readCertificateInfo } from '../src/tls/x509.js';
import { sleep, waitFor } from './helpers/wait.js';

const REPO_ROOT = path.resolve(import.meta.dirname, '..');
const DASHBOARD_FILE = path.join(REPO_ROOT, 'deploy/grafana/stallguard-dashboard.json');
const RULES_DIR = path.join(REPO_ROOT, 'deploy/prometheus');
const RULES_FILE = path.join(RULES_DIR, 'stallguard-alerts.yaml');
const RULES_TEST_FILE = path.join(RULES_DIR, 'stallguard-alerts.test.yaml');

const NODES = ['node-1', 'node-2', 'node-3'];
// Grafana's $__rate_interval is at least four scrape intervals; the scrape interval here is 1s.
const RATE_INTERVAL = '4s';
const RELAY_DELAY_MS = 150;
// Validity of the listener's certificate: inside the 72-hour window of StallguardCertificateExpiringSoon.
const SHORT_CERT_DAYS = 2;

interface Binaries {
  prometheus: string;
  promtool: string;
}

/** Finds prometheus and promtool on PATH, or returns why they are missing. */
function findBinaries(): Binaries | string {
  const found: Partial<Binaries> = {};
  for (const name of ['prometheus', 'promtool'] as const) {
    for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
      const candidate = path.join(dir, name);
      try {
        fs.accessSync(candidate, fs.constants.X_OK);
        found[name] = candidate;
        break;
      } catch {
        // Not in this directory.
      }
    }
    if (found[name] === undefined) return `${name} is not on PATH (install the Debian package "prometheus")`;
  }
  return found as Binaries;
}

const binaries = findBinaries();

/** Skips outside CI when Prometheus is missing; in CI (CI=true) a missing binary fails the test. */
function requireBinaries(skip: (note: string) => void): Binaries {
  if (typeof binaries !== 'string') return binaries;
  if (process.env.CI === 'true') throw new Error(`CI=true but ${binaries}`);
  skip(binaries);
  throw new Error('unreachable: skip() throws');
}

describe('promtool', () => {
  it('checks the alerting rules', (ctx) => {
    const { promtool } = requireBinaries((note) => ctx.skip(note));

    const output = execFileSync(promtool, ['check', 'rules', RULES_FILE], { encoding: 'utf8' });

    expect(output).toContain('SUCCESS: 5 rules found');
  });

  it('passes the alert unit tests', (ctx) => {
    const { promtool } = requireBinaries((note) => ctx.skip(note));

    const output = execFileSync(promtool, ['test', 'rules', path.basename(RULES_TEST_FILE)], { cwd: RULES_DIR, encoding: 'utf8' });

    expect(output).toContain('SUCCESS');
  });
});

// ---- Prometheus process and HTTP API ----

interface Sample {
  labels: Record<string, string>;
  value: number;
}

class PrometheusProcess {
  readonly url: string;
  readonly #child: ChildProcess;
  #output = '';
  #exited = false;

  constructor(binary: string, dir: string, port: number) {
    this.url = `http://127.0.0.1:${port}`;
    this.#child = spawn(
      binary,
      [
        `--config.file=${path.join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.#child.stdout!.on('data', (chunk: Buffer) => (this.#output += chunk.toString()));
    this.#child.stderr!.on('data', (chunk: Buffer) => (this.#output += chunk.toString()));
    this.#child.once('exit', () => (this.#exited = true));
  }

  get output(): string {
    return this.#output;
  }

  async waitUntilReady(timeoutMs: number): Promise<void> {
    await waitFor(
      async () => {
        if (this.#exited) throw new Error(`prometheus exited before it was ready:\n${this.#output}`);
        try {
          return (await fetch(`${this.url}/-/ready`)).ok;
        } catch {
          return false;
        }
      },
      timeoutMs,
      'prometheus to answer /-/ready',
    );
  }

  /** Evaluates an instant query at `time` (ms since the epoch) and returns its vector. */
  async query(expr: string, time: number): Promise<Sample[]> {
    const params = new URLSearchParams({ query: expr, time: (time / 1000).toFixed(3) });
    const response = await fetch(`${this.url}/api/v1/query?${params}`);
    const body = (await response.json()) as { status: string; error?: string; data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
    if (body.status !== 'success') throw new Error(`query failed: ${body.error}\n${expr}`);
    if (body.data!.resultType !== 'vector') throw new Error(`expected a vector, got ${body.data!.resultType}\n${expr}`);
    return body.data!.result.map((entry) => ({ labels: entry.metric, value: Number(entry.value[1]) }));
  }

  async alerts(): Promise<Array<{ labels: Record<string, string>; state: string }>> {
    const body = (await (await fetch(`${this.url}/api/v1/alerts`)).json()) as { data: { alerts: Array<{ labels: Record<string, string>; state: string }> } };
    return body.data.alerts;
  }

  async stop(): Promise<void> {
    if (this.#exited) return;
    const exited = new Promise((resolve) => this.#child.once('exit', resolve));
    this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const port = (probe.address() as net.AddressInfo).port;
      probe.close(() => resolve(port));
    });
  });
}

/** Returns the rules file with every `for:` shortened to 1s and every [5m] window to [20s]. */
function fastRulesVariant(text: string): string {
  const forCount = text.match(/^(\s+)for: \S+$/gm)?.length ?? 0;
  const windowCount = text.match(/\[5m\]/g)?.length ?? 0;
  expect(forCount).toBe(5);
  expect(windowCount).toBeGreaterThan(0);
  return text.replace(/^(\s+)for: \S+$/gm, '$1for: 1s').replace(/\[5m\]/g, '[20s]');
}

// ---- expressions under test ----

interface Expression {
  /** Dashboard panel title and target refId, or alert name. */
  name: string;
  expr: string;
}

interface GrafanaPanel {
  title: string;
  type: string;
  targets?: Array<{ refId: string; expr: string }>;
  panels?: GrafanaPanel[];
}

function dashboardExpressions(): Expression[] {
  const dashboard = JSON.parse(fs.readFileSync(DASHBOARD_FILE, 'utf8')) as { panels: GrafanaPanel[] };
  const panels = dashboard.panels.flatMap((panel) => [panel, ...(panel.panels ?? [])]);
  return panels.flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({
      name: `${panel.title}/${target.refId}`,
      // "All" nodes is the regex .*, as Grafana sends it with allValue ".*".
      expr: target.expr.replaceAll('$node', '.*').replaceAll('$__rate_interval', RATE_INTERVAL),
    })),
  );
}

function alertExpressions(rulesText: string): Expression[] {
  const rules = yaml.load(rulesText) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
  return rules.groups.flatMap((group) => group.rules.map((rule) => ({ name: rule.alert, expr: rule.expr })));
}

/** What each expression returned before the faults, and at every second of phases A and B. */
interface Observation {
  before: Sample[];
  phaseA: Sample[][];
  phaseB: Sample[][];
}

interface Fixture {
  endpoints: string[];
  listenCertNotAfter: number;
  beforeAt: number;
}

function select(samples: Sample[], labels: Record<string, string>): Sample[] {
  return samples.filter((sample) => Object.entries(labels).every(([key, value]) => sample.labels[key] === value));
}

function values(samples: Sample[], labels: Record<string, string>): number[] {
  return select(samples, labels).map((sample) => sample.value);
}

function valuesOver(phase: Sample[][], labels: Record<string, string>): number[] {
  return phase.flatMap((samples) => values(samples, labels));
}

/**
 * How the injected faults must move each expression. Phase A blackholes relay 0 (endpoint 0),
 * delays relays 1 and 2 by 150 ms each way and sends a GOAWAY from server 2; phase B blackholes
 * relays 1 and 2 as well. Every dashboard target and every alert must have an entry here.
 */
function expectations(f: Fixture): Record<string, (o: Observation) => void> {
  const [ep0, ep1, ep2] = f.endpoints as [string, string, string];
  const node = { node: 'node-1' };

  return {
    'Ready endpoints per node/A': (o) => {
      expect(values(o.before, node)).toEqual([3]);
      expect(Math.min(...valuesOver(o.phaseA, node))).toBe(2);
      expect(Math.min(...valuesOver(o.phaseB, node))).toBe(0);
    },
    'Endpoint state/A': (o) => {
      expect(select(o.before, { ...node, endpoint: ep0, state: 'ready' })).toHaveLength(1);
      expect(valuesOver(o.phaseA, { ...node, endpoint: ep0, state: 'ejected' }).length).toBeGreaterThan(0);
    },
    'Upstream sessions/A': (o) => {
      expect(values(o.before, { ...node, endpoint: ep0, state: 'ready' })[0]).toBeGreaterThanOrEqual(1);
      expect(valuesOver(o.phaseA, { ...node, endpoint: ep0, state: 'ready' })).toContain(0);
    },
    'Endpoint state changes/A': (o) => {
      expect(values(o.before, { ...node, endpoint: ep0, to: 'ejected' })).toEqual([0]);
      expect(Math.max(...valuesOver(o.phaseA, { ...node, endpoint: ep0, to: 'ejected' }))).toBeGreaterThan(0);
    },
    'PING timeouts (stalls)/A': (o) => {
      expect(values(o.before, { ...node, endpoint: ep0 })).toEqual([0]);
      expect(Math.max(...valuesOver(o.phaseA, { ...node, endpoint: ep0 }))).toBeGreaterThan(0);
    },
    'Session evictions by reason/A': (o) => {
      expect(values(o.before, { ...node, reason: 'ping_timeout' })).toEqual([0]);
      expect(Math.max(...valuesOver(o.phaseA, { ...node, reason: 'ping_timeout' }))).toBeGreaterThan(0);
    },
    'PING round-trip time (p99)/A': (o) => {
      expect(values(o.before, { ...node, endpoint: ep1 })[0]).toBeLessThan(0.05);
      expect(Math.max(...valuesOver(o.phaseA, { ...node, endpoint: ep1 }).filter(Number.isFinite))).toBeGreaterThanOrEqual((2 * RELAY_DELAY_MS) / 1000 - 0.05);
    },
    'GOAWAYs received/A': (o) => {
      expect(values(o.before, { ...node, endpoint: ep2 })).toEqual([0]);
      expect(Math.max(...valuesOver(o.phaseA, { ...node, endpoint: ep2 }))).toBeGreaterThan(0);
    },
    'Request rate by endpoint and status class/A': (o) => {
      expect(values(o.before, { ...node, endpoint: ep0, code_class: '2xx' })[0]).toBeGreaterThan(0);
      expect(valuesOver(o.phaseA, { ...node, endpoint: ep0, code_class: '2xx' })).toContain(0);
    },
    'Request latency/A': (o) => expectLatencyMoved(o),
    'Request latency/B': (o) => expectLatencyMoved(o),
    'Request latency/C': (o) => expectLatencyMoved(o),
    'Retries by reason and outcome/A': (o) => {
      expect(select(o.before, node).every((sample) => sample.value === 0)).toBe(true);
      const after = [...o.phaseA, ...o.phaseB].flatMap((samples) => select(samples, { ...node, outcome: 'retried' }));
      expect(Math.max(...after.map((sample) => sample.value))).toBeGreaterThan(0);
    },
    'Requests rejected by stallguard/A': (o) => {
      expect(values(o.before, { ...node, reason: 'no_endpoint' })).toEqual([0]);
      expect(Math.max(...valuesOver(o.phaseB, { ...node, reason: 'no_endpoint' }))).toBeGreaterThan(0);
    },
    'Open watches and requests/A': (o) => {
      expect(values(o.before, node)).toEqual([6]);
      expect(Math.min(...valuesOver(o.phaseA, node))).toBeLessThan(6);
    },
    'Open watches and requests/B': (o) => {
      const before = values(o.before, node)[0]!;
      expect(before).toBeGreaterThanOrEqual(6);
      expect(Math.min(...valuesOver([...o.phaseA, ...o.phaseB], node))).toBeLessThan(6);
    },
    'Watches ended by reason/A': (o) => {
      expect(values(o.before, { ...node, reason: 'session_lost' })).toEqual([0]);
      expect(Math.max(...valuesOver(o.phaseA, { ...node, reason: 'session_lost' }))).toBeGreaterThan(0);
    },
    // No fault moves a certificate's expiry: the value is checked against the file instead.
    'Time until certificate expiry/A': (o) => {
      const remaining = values(o.before, { ...node, role: 'listen-serving' })[0]!;
      expect(Math.abs(remaining - (f.listenCertNotAfter - f.beforeAt) / 1000)).toBeLessThan(5);
      for (const role of ['upstream-client', 'upstream-ca', 'listen-client-ca']) {
        expect(values(o.before, { ...node, role })[0]).toBeGreaterThan(72 * 3600);
      }
    },

    StallguardNoReadyEndpoint: (o) => {
      expect(o.before).toEqual([]);
      expect(o.phaseA.flat()).toEqual([]);
      const firing = o.phaseB.find((samples) => samples.length === NODES.length);
      expect(firing?.map((sample) => sample.labels.node).sort()).toEqual(NODES);
    },
    StallguardHighEvictionRate: (o) => {
      expect(o.before).toEqual([]);
      const after = [...o.phaseA, ...o.phaseB].flat();
      expect(after.length).toBeGreaterThan(0);
      expect(after.every((sample) => NODES.includes(sample.labels.node!))).toBe(true);
    },
    StallguardReplicaEjectedOnManyNodes: (o) => {
      expect(o.before).toEqual([]);
      const fired = o.phaseA.flat();
      expect(fired.length).toBeGreaterThan(0);
      expect(fired.every((sample) => sample.labels.endpoint === ep0 && sample.value === NODES.length)).toBe(true);
    },
    // The listener's certificate is short-lived from the start, so the fault does not move this one either.
    StallguardCertificateExpiringSoon: (o) => {
      expect(o.before.map((sample) => `${sample.labels.node} ${sample.labels.role}`).sort()).toEqual(NODES.map((name) => `${name} listen-serving`));
    },
    // Evaluated again after stallguard is stopped, below.
    StallguardDown: (o) => {
      expect(o.before).toEqual([]);
      expect([...o.phaseA, ...o.phaseB].flat()).toEqual([]);
    },
  };
}

function expectLatencyMoved(o: Observation): void {
  const node = { node: 'node-1' };
  expect(values(o.before, node)[0]).toBeLessThan(0.1);
  expect(Math.max(...valuesOver(o.phaseA, node).filter(Number.isFinite))).toBeGreaterThanOrEqual((2 * RELAY_DELAY_MS) / 1000);
}

// ---- client traffic ----

/** Keeps watches open and sends bursts of GETs, with idle gaps so that idle sessions get PINGed. */
class Traffic {
  readonly #session: http2.ClientHttp2Session;
  readonly #watches: http2.ClientHttp2Stream[] = [];
  #running = true;
  #loop: Promise<void> | undefined;

  constructor(session: http2.ClientHttp2Session) {
    this.#session = session;
  }

  async openWatches(count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const stream = this.#session.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/configmaps?watch=true' });
      stream.on('error', () => {
        // A watch that ends with its session is what the test expects.
      });
      stream.resume();
      this.#watches.push(stream);
      await new Promise((resolve) => stream.once('response', resolve));
    }
  }

  startBursts(size: number, everyMs: number): void {
    this.#loop = (async () => {
      while (this.#running) {
        this.burst(size, '/api/v1/nodes/n1');
        await sleep(everyMs);
      }
    })();
  }

  /** Sends `size` GETs at once and does not wait for them. */
  burst(size: number, requestPath: string): void {
    for (let i = 0; i < size; i++) {
      h2Request(this.#session, { path: requestPath, timeoutMs: 20_000 }).catch(() => {
        // Failures are what phase B produces; the metrics record them.
      });
    }
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.#loop;
    for (const stream of this.#watches) stream.close();
    this.#session.close();
  }
}

// ---- the end-to-end test ----

describe('Prometheus scraping stallguard', () => {
  let stack: Stack | undefined;
  let prometheus: PrometheusProcess | undefined;
  let traffic: Traffic | undefined;
  let dir: string | undefined;

  afterAll(async () => {
    await traffic?.stop();
    await prometheus?.stop();
    await stack?.close();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('evaluates every dashboard and alert expression against injected faults', async (ctx) => {
    const { prometheus: prometheusBinary } = requireBinaries((note) => ctx.skip(note));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-prometheus-'));

    // stallguard serves with a certificate that expires within the 72-hour alert window.
    const listenCa = await createCa('stallguard-prometheus-test-ca', { validityDays: 30 });
    const listenCert = await issueCertificate(listenCa, { commonName: 'stallguard' }, { usage: 'server', ipAddresses: ['127.0.0.1'], validityDays: SHORT_CERT_DAYS });
    fs.writeFileSync(path.join(dir, 'listen.crt'), listenCert.certPem);
    fs.writeFileSync(path.join(dir, 'listen.key'), listenCert.keyPem);
    const listenCertNotAfter = readCertificateInfo(listenCert.certPem).notAfter.getTime();

    stack = await startStack({
      replicas: 3,
      topology: 'relays',
      config: {
        listen: { tls: { cert: path.join(dir, 'listen.crt'), key: path.join(dir, 'listen.key') } },
        upstream: { warmEndpoints: 3 },
      },
    });
    const endpoints = stack.config.upstream.endpoints;

    const rulesText = fs.readFileSync(RULES_FILE, 'utf8');
    fs.writeFileSync(path.join(dir, 'alerts.yaml'), fastRulesVariant(rulesText));
    const metricsAddress = stack.stallguard.addresses.metrics;
    const prometheusConfig = {
      global: { scrape_interval: '1s', scrape_timeout: '900ms', evaluation_interval: '1s' },
      rule_files: [path.join(dir, 'alerts.yaml')],
      scrape_configs: [
        {
          job_name: 'stallguard',
          static_configs: NODES.map((name) => ({ targets: [metricsAddress], labels: { node: name, instance: name } })),
        },
      ],
    };
    fs.writeFileSync(path.join(dir, 'prometheus.yml'), yaml.dump(prometheusConfig));

    prometheus = new PrometheusProcess(prometheusBinary, dir, await freePort());
    await prometheus.waitUntilReady(15_000);

    const session = await connectH2(stack.url, { ca: listenCa.certPem, cert: stack.clientTls.cert, key: stack.clientTls.key });
    traffic = new Traffic(session);
    await traffic.openWatches(6);
    traffic.startBursts(12, 2000);

    // Baseline: enough scrapes for every rate window, and PINGs on every idle session.
    await waitFor(async () => (await prometheus!.query('up{job="stallguard"} == 1', Date.now())).length === NODES.length, 10_000, 'three scraped targets');
    await sleep(6000);
    const beforeAt = Date.now() - 500;

    // Phase A: requests in flight on every endpoint when endpoint 0 goes silent.
    traffic.burst(6, '/testbed/slow?ms=1500');
    await sleep(150);
    const phaseAStart = Date.now();
    stack.relays[0]!.blackhole('both');
    stack.relays[1]!.delay(RELAY_DELAY_MS);
    stack.relays[2]!.delay(RELAY_DELAY_MS);
    stack.servers[2]!.goaway();
    await sleep(10_000);

    // Phase B: the remaining endpoints go silent too.
    traffic.burst(6, '/testbed/slow?ms=1500');
    await sleep(150);
    const phaseBStart = Date.now();
    stack.relays[1]!.blackhole('both');
    stack.relays[2]!.blackhole('both');
    await waitFor(
      async () => (await prometheus!.alerts()).some((alert) => alert.labels.alertname === 'StallguardNoReadyEndpoint' && alert.state === 'firing'),
      20_000,
      'StallguardNoReadyEndpoint to fire',
    );
    // Requests now wait up to connectTimeout for a dial before they are rejected with no_endpoint.
    await sleep(6000);
    const phaseBEnd = Date.now() - 1000;

    const instants = (from: number, to: number) => Array.from({ length: Math.floor((to - from) / 1000) }, (_, i) => from + 1000 * (i + 1));
    const observe = async (expr: string): Promise<Observation> => ({
      before: await prometheus!.query(expr, beforeAt),
      phaseA: await Promise.all(instants(phaseAStart, phaseBStart).map((time) => prometheus!.query(expr, time))),
      phaseB: await Promise.all(instants(phaseBStart, phaseBEnd).map((time) => prometheus!.query(expr, time))),
    });

    const expressions = [...dashboardExpressions(), ...alertExpressions(fs.readFileSync(path.join(dir, 'alerts.yaml'), 'utf8'))];
    const checks = expectations({ endpoints, listenCertNotAfter, beforeAt });
    expect(expressions.map((expression) => expression.name).sort()).toEqual(Object.keys(checks).sort());

    for (const expression of expressions) {
      const observation = await observe(expression.expr);
      const everything = [observation.before, ...observation.phaseA, ...observation.phaseB].flat();
      // Every series comes from the scraped stallguard: it names one of its nodes or endpoints.
      for (const sample of everything) {
        const fromStallguard = NODES.includes(sample.labels.node ?? '') || endpoints.includes(sample.labels.endpoint ?? '');
        expect(fromStallguard, `${expression.name}: series ${JSON.stringify(sample.labels)}`).toBe(true);
      }
      try {
        checks[expression.name]!(observation);
      } catch (err) {
        throw new Error(`${expression.name}: ${(err as Error).message}\nexpr: ${expression.expr}\nobserved: ${JSON.stringify(observation)}`);
      }
    }

    // Phase C: stallguard stops, so its scrapes fail.
    await stack.stallguard.close();
    await waitFor(
      async () => {
        const firing = (await prometheus!.alerts()).filter((alert) => alert.labels.alertname === 'StallguardDown' && alert.state === 'firing');
        return firing.length === NODES.length;
      },
      15_000,
      'StallguardDown to fire for every node',
    );
  }, 120_000);
});
