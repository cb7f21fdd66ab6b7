/**
 * Scenario `latency`: what a proxy costs when nothing fails. h2load sends GET requests for a
 * Kubernetes-sized Node object to nginx (HTTP/2 over TLS) straight, through stallguard and
 * through HAProxy. It does so at two loads. One stream at a time gives the latency added to one
 * request, the cost that matters to a kubelet with its few requests per second. Many concurrent
 * streams on one connection give the maximum rate on this machine. Paths alternate within each repetition, so a drift of the machine's
 * speed during the run spreads over all of them.
 */
import path from 'node:path';
import { sleep, throwIfAborted } from '../abort.js';
import { runH2load, type H2loadResult } from '../h2load.js';
import { runPacedLoad } from '../paced-client.js';
import { buildNodeObject } from '../kube-objects.js';
import { LatencyTestbed, type LatencyPath } from '../latency-testbed.js';
import type { Scenario, ScenarioContext, ScenarioReport } from '../scenario.js';
import { ratio, summarize, type Summary } from '../stats.js';
import { requireTools } from '../tools.js';

export const LATENCY_PATHS: readonly LatencyPath[] = ['direct', 'stallguard', 'haproxy'];
export type { LatencyPath };

export interface LoadLevel {
  name: string;
  requests: number;
  /** h2load -c: connections. */
  clients: number;
  /** h2load -m: concurrent streams per connection. */
  streams: number;
  /** Which document the load requests: the Node object (default) or a NodeList of about 100 KiB. */
  document?: 'node' | 'list';
  /** Requests per second for a paced load (our own client, one connection); h2load otherwise. */
  ratePerSecond?: number;
}

export interface LatencyParameters {
  repetitions: number;
  loads: LoadLevel[];
  /** Requests of the unrecorded run per path and load before the first repetition. */
  warmUpRequests: number;
  /** Images in the served Node object, which set its size. */
  nodeImages: number;
}

/*
 * Both loads use one connection, as kubelet sends all its requests to one API server over one
 * HTTP/2 connection.
 * NOTE: stallguard can exit with an uncaught ERR_HTTP2_HEADERS_SENT from src/proxy/forward.ts
 * under concurrent streams (h2load -c 2 -m 4 against the fake API server, -c 1 -m 8 against
 * nginx). The scenario then records the exit, starts a new stallguard and fails the
 * stallguardKeptRunning invariant.
 */
export const FULL_LATENCY_PARAMETERS: LatencyParameters = {
  repetitions: 5,
  loads: [
    { name: 'one-stream', requests: 2000, clients: 1, streams: 1 },
    { name: 'multiplexed', requests: 20_000, clients: 1, streams: 32 },
    { name: 'list-100k', requests: 1000, clients: 1, streams: 1, document: 'list' },
    { name: 'paced-100rps', requests: 500, clients: 1, streams: 1, ratePerSecond: 100 },
  ],
  warmUpRequests: 1000,
  nodeImages: 40,
};

export const QUICK_LATENCY_PARAMETERS: LatencyParameters = {
  repetitions: 1,
  loads: [
    { name: 'one-stream', requests: 50, clients: 1, streams: 1 },
    { name: 'multiplexed', requests: 200, clients: 1, streams: 8 },
    { name: 'list-100k', requests: 20, clients: 1, streams: 1, document: 'list' },
    { name: 'paced-100rps', requests: 20, clients: 1, streams: 1, ratePerSecond: 100 },
  ],
  warmUpRequests: 20,
  nodeImages: 40,
};

const NODE_PATH = '/api/v1/nodes/n1';
// nginx serves files, and /api/v1/nodes is the directory of the Node object, so the list lives apart.
const LIST_PATH = '/lists/nodes';
/** Nodes in the served NodeList: ten Node objects of about 10 KiB make a list of about 100 KiB. */
const LIST_NODES = 10;
const STALLGUARD_EXIT_GRACE_MS = 200;
// stallguard admits a request only with a client certificate or a bearer token, and h2load sends
// no certificate. Every path gets the same header, so all carry the same bytes, and nginx ignores it.
const REQUEST_HEADERS = { authorization: 'Bearer stallguard-bench-token' };

/** One h2load run as the result file keeps it. */
export interface LatencyRun extends H2loadResult {
  repetition: number;
  load: string;
  path: LatencyPath;
}

/** Medians over the complete runs of one path at one load. */
export interface LatencyPathSummary {
  /** Runs in which some request failed, left out of the figures below. */
  incompleteRuns: number;
  requestsPerSecond: Summary;
  p50Ms: Summary;
  p99Ms: Summary;
}

export interface LatencyLoadSummary {
  paths: Record<LatencyPath, LatencyPathSummary>;
  /** Ratios of the medians; above 1 means stallguard is higher (more requests/s, or slower for latencies). */
  ratios: {
    stallguardToDirect: { requestsPerSecond?: number; p50Ms?: number; p99Ms?: number };
    stallguardToHaproxy: { requestsPerSecond?: number; p50Ms?: number; p99Ms?: number };
  };
}

export const latencyScenario: Scenario = {
  name: 'latency',
  description: 'h2load against nginx straight, through stallguard and through HAProxy: requests/s, p50 and p99',
  tools: ['h2load', 'nginx', 'haproxy'],

  async run(context: ScenarioContext): Promise<ScenarioReport> {
    const tools = requireTools(['h2load', 'nginx', 'haproxy'], 'latency');
    const base = context.quick ? QUICK_LATENCY_PARAMETERS : FULL_LATENCY_PARAMETERS;
    const parameters: LatencyParameters = { ...base, repetitions: context.repeat ?? base.repetitions };
    const nodeJson = JSON.stringify(buildNodeObject('n1', parameters.nodeImages));
    const listJson = JSON.stringify({
      kind: 'NodeList',
      apiVersion: 'v1',
      metadata: { resourceVersion: '1' },
      items: Array.from({ length: LIST_NODES }, (_, index) => buildNodeObject(`n${index + 1}`, parameters.nodeImages)),
    });

    const testbed = await LatencyTestbed.start(context.supervisor, {
      dir: context.dir,
      nginxBinary: tools.nginx,
      haproxyBinary: tools.haproxy,
      documents: { [NODE_PATH]: nodeJson, [LIST_PATH]: listJson },
    });
    const runs: LatencyRun[] = [];

    const load = async (level: LoadLevel, pathName: LatencyPath, requests: number, name: string): Promise<H2loadResult> => {
      const options = {
        binary: tools.h2load,
        url: `${testbed.origin(pathName)}${level.document === 'list' ? LIST_PATH : NODE_PATH}`,
        requests,
        clients: level.clients,
        streams: level.streams,
        headers: REQUEST_HEADERS,
        logFile: path.join(context.dir, `${name}.log`),
        name,
      };
      try {
        if (level.ratePerSecond !== undefined) {
          return await runPacedLoad({ url: options.url, headers: REQUEST_HEADERS, ratePerSecond: level.ratePerSecond, requests, signal: context.signal });
        }
        return await runH2load(context.supervisor, options, context.signal);
      } finally {
        // A crash often comes as the client disconnects at the end of the run, so it is looked for after a pause.
        await sleep(STALLGUARD_EXIT_GRACE_MS, context.signal);
        await testbed.checkAfter(name);
      }
    };

    try {
      for (const level of parameters.loads) {
        for (const pathName of LATENCY_PATHS) {
          throwIfAborted(context.signal);
          await load(level, pathName, parameters.warmUpRequests, `h2load-warmup-${level.name}-${pathName}`);
        }
      }

      for (let repetition = 1; repetition <= parameters.repetitions; repetition++) {
        for (const level of parameters.loads) {
          // Rotating the order keeps one path from always running first, right after another load level.
          for (const pathName of rotate(LATENCY_PATHS, repetition - 1)) {
            throwIfAborted(context.signal);
            const result = await load(level, pathName, level.requests, `h2load-${level.name}-${pathName}-${repetition}`);
            runs.push({ repetition, load: level.name, path: pathName, ...result });
            context.log.info(
              { repetition, load: level.name, path: pathName, requestsPerSecond: result.requestsPerSecond, p50Ms: result.latencyMs.p50, p99Ms: result.latencyMs.p99 },
              'h2load run measured',
            );
          }
        }
      }
    } finally {
      await testbed.close();
    }

    const summary = Object.fromEntries(parameters.loads.map((level) => [level.name, summarizeLoad(runs.filter((run) => run.load === level.name))]));
    return {
      parameters: { ...parameters, nodeBytes: Buffer.byteLength(nodeJson), h2loadThreads: 1, haproxyThreads: 1, nginxWorkers: 1, stallguard: 'child process, built CLI, default configuration' },
      summary,
      runs,
      stallguardExits: testbed.stallguardExits,
      invariants: { ...checkLatencyInvariants(runs, parameters), stallguardKeptRunning: testbed.stallguardExits.length === 0 },
    };
  },

  format(report: ScenarioReport): string {
    return formatLatencySummary(report.summary as Record<string, LatencyLoadSummary>);
  },
};

function rotate<T>(items: readonly T[], by: number): T[] {
  const shift = by % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

export function summarizeLoad(runs: readonly LatencyRun[]): LatencyLoadSummary {
  const pathSummary = (pathName: LatencyPath): LatencyPathSummary => {
    const all = runs.filter((run) => run.path === pathName);
    // A run with failed requests measures how fast errors return, not the proxy's cost.
    const own = all.filter((run) => run.counts.succeeded === run.counts.total);
    const defined = (values: Array<number | undefined>) => values.filter((value): value is number => value !== undefined);
    return {
      incompleteRuns: all.length - own.length,
      requestsPerSecond: summarize(own.map((run) => run.requestsPerSecond)),
      p50Ms: summarize(defined(own.map((run) => run.latencyMs.p50))),
      p99Ms: summarize(defined(own.map((run) => run.latencyMs.p99))),
    };
  };
  const paths = Object.fromEntries(LATENCY_PATHS.map((pathName) => [pathName, pathSummary(pathName)])) as Record<LatencyPath, LatencyPathSummary>;

  const ratiosTo = (other: LatencyPath) => ({
    requestsPerSecond: ratio(paths.stallguard.requestsPerSecond.median, paths[other].requestsPerSecond.median),
    p50Ms: ratio(paths.stallguard.p50Ms.median, paths[other].p50Ms.median),
    p99Ms: ratio(paths.stallguard.p99Ms.median, paths[other].p99Ms.median),
  });
  return { paths, ratios: { stallguardToDirect: ratiosTo('direct'), stallguardToHaproxy: ratiosTo('haproxy') } };
}

/** Checks that every path sent the same number of requests and every response had a 2xx status. */
export function checkLatencyInvariants(runs: readonly LatencyRun[], parameters: LatencyParameters): Record<string, boolean> {
  const expectedRuns = parameters.repetitions * parameters.loads.length * LATENCY_PATHS.length;
  return {
    everyRunRecorded: runs.length === expectedRuns,
    equalRequestCounts: parameters.loads.every((level) => {
      const perPath = LATENCY_PATHS.map((pathName) => runs.filter((run) => run.load === level.name && run.path === pathName).reduce((sum, run) => sum + run.counts.done, 0));
      return new Set(perPath).size === 1 && perPath[0] === level.requests * parameters.repetitions;
    }),
    everyRequestSucceeded: runs.every((run) => run.counts.succeeded === run.counts.total && run.status['2xx'] === run.counts.total),
  };
}

function formatLatencySummary(summary: Record<string, LatencyLoadSummary>): string {
  const lines: string[] = [];
  const fixed = (value: number | undefined, digits: number) => (value === undefined ? '-' : value.toFixed(digits));
  for (const [load, entry] of Object.entries(summary)) {
    lines.push(`${load}: median req/s, p50 ms, p99 ms`);
    for (const pathName of LATENCY_PATHS) {
      const figures = entry.paths[pathName];
      const incomplete = figures.incompleteRuns > 0 ? `  (${figures.incompleteRuns} run(s) with failed requests left out)` : '';
      lines.push(
        `  ${pathName.padEnd(11)}${fixed(figures.requestsPerSecond.median, 0).padStart(8)}${fixed(figures.p50Ms.median, 3).padStart(10)}` +
          `${fixed(figures.p99Ms.median, 3).padStart(10)}${incomplete}`,
      );
    }
    const { stallguardToDirect: direct, stallguardToHaproxy: haproxy } = entry.ratios;
    lines.push(`  stallguard/direct  req/s ${fixed(direct.requestsPerSecond, 2)}  p50 ${fixed(direct.p50Ms, 2)}  p99 ${fixed(direct.p99Ms, 2)}`);
    lines.push(`  stallguard/haproxy req/s ${fixed(haproxy.requestsPerSecond, 2)}  p50 ${fixed(haproxy.p50Ms, 2)}  p99 ${fixed(haproxy.p99Ms, 2)}`);
  }
  return lines.join('\n');
}
