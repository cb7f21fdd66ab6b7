/**
 * Scenario `scale`: many streams through one proxy at once. Each path (stallguard, then HAProxy,
 * one after the other, in front of the same three replicas that share their state) gets:
 * 1. 2,000 concurrent watches of ConfigMaps, over client sessions of 100 watches each;
 * 2. one ConfigMap created, whose ADDED event every watch must receive;
 * 3. a burst of 1,000 GET requests sent at once, every one of which must get a 200 response;
 * 4. a second ConfigMap, which every watch must still receive after the burst.
 * The fake replicas advertise 100 concurrent streams per session, so 2,000 watches need at least
 * 20 upstream sessions. stallguard opens at most upstream.maxSessionsPerEndpoint (8) per replica.
 */
import type { Logger } from 'pino';
import { sleep } from '../abort.js';
import { sendBurst, type BurstResult } from '../burst.js';
import { readProcessUsage } from '../proc-stats.js';
import { PROXY_PATHS, ProcessTestbed, type ProxyPath } from '../process-testbed.js';
import type { Scenario, ScenarioContext, ScenarioReport } from '../scenario.js';
import { ratio } from '../stats.js';
import { requireTools } from '../tools.js';
import { WatchFleet } from '../watch-clients.js';

export interface ScaleParameters {
  replicas: number;
  watches: number;
  watchesPerSession: number;
  burstRequests: number;
  burstSessions: number;
  requestTimeoutMs: number;
  watchStartTimeoutMs: number;
  eventTimeoutMs: number;
  /** How long to wait, after the client cancelled its watches, for the replicas to hold none. */
  watchCloseTimeoutMs: number;
  /** HAProxy's `timeout server`, above the scenario's duration so that it does not end idle watches. */
  haproxyTimeoutServerMs: number;
}

export const FULL_SCALE_PARAMETERS: ScaleParameters = {
  replicas: 3,
  watches: 2000,
  watchesPerSession: 100,
  burstRequests: 1000,
  burstSessions: 10,
  requestTimeoutMs: 30_000,
  watchStartTimeoutMs: 60_000,
  eventTimeoutMs: 30_000,
  watchCloseTimeoutMs: 15_000,
  haproxyTimeoutServerMs: 3_600_000,
};

export const QUICK_SCALE_PARAMETERS: ScaleParameters = {
  ...FULL_SCALE_PARAMETERS,
  watches: 150,
  watchesPerSession: 50,
  burstRequests: 100,
  burstSessions: 2,
  requestTimeoutMs: 10_000,
  watchStartTimeoutMs: 10_000,
  eventTimeoutMs: 10_000,
  watchCloseTimeoutMs: 3000,
};

export interface ScalePathResult {
  /** From the first watch request to the last watch's response headers or failure. */
  watchesOpenMs: number;
  /** Watches that started with status 200. */
  watchesOpen: number;
  /** Watches that did not start, by cause (status and Status message). */
  watchFailures: Record<string, number>;
  /** Watches open at the replicas once all had started. */
  watchesAtReplicas: number;
  /** Resident memory of the proxy with every watch open. */
  rssKiBWithWatches: number;
  /** Per event: watches that received it, and the ms until the last of them did (undefined: not all did). */
  events: Array<{ name: string; receivedBy: number; fanOutMs: number | undefined }>;
  burst: BurstResult;
  /** Watches that had ended before the end; must be 0. */
  watchesEnded: number;
  /** After the client cancelled its watches: ms until the replicas held none, and how many they still held then. */
  upstreamWatchesClosed?: { ms: number; stillOpen: number };
}


export const scaleScenario: Scenario = {
  name: 'scale',
  description: '2,000 concurrent watches and a burst of 1,000 requests through one proxy: nothing lost',
  tools: ['haproxy'],

  async run(context: ScenarioContext): Promise<ScenarioReport> {
    const tools = requireTools(['haproxy'], 'scale');
    const parameters = context.quick ? QUICK_SCALE_PARAMETERS : FULL_SCALE_PARAMETERS;
    const testbed = await ProcessTestbed.start({
      dir: context.dir,
      replicas: parameters.replicas,
      haproxyBinary: tools.haproxy,
      haproxyTimeoutServerMs: parameters.haproxyTimeoutServerMs,
      objectNames: [],
      supervisor: context.supervisor,
    });

    const paths = {} as Record<ProxyPath, ScalePathResult>;
    try {
      for (const path of PROXY_PATHS) {
        paths[path] = await runPath(testbed, path, parameters, context.signal, context.log);
        paths[path].upstreamWatchesClosed = await waitForWatchesClosed(testbed, parameters.watchCloseTimeoutMs, context.signal);
        context.log.info({ path, ...paths[path].upstreamWatchesClosed }, 'client watches cancelled');
      }
    } finally {
      await testbed.close();
    }

    return {
      parameters: {
        ...parameters,
        replicaMaxConcurrentStreams: 100,
        stallguard: 'child process: node dist/cli/main.js run --config FILE, defaults (upstream.maxSessionsPerEndpoint 8)',
        haproxy: 'nbthread 1, three servers, timeout server 1h, defaults for streams and connections',
      },
      paths,
      ratios: {
        stallguardToHaproxy: {
          burstDuration: ratio(paths.stallguard.burst.durationMs, paths.haproxy.burst.durationMs),
          burstP99: ratio(paths.stallguard.burst.latencyMs.p99, paths.haproxy.burst.latencyMs.p99),
          rssWithWatches: ratio(paths.stallguard.rssKiBWithWatches, paths.haproxy.rssKiBWithWatches),
        },
      },
      invariants: checkScaleInvariants(paths, parameters),
    };
  },

  format(report: ScenarioReport): string {
    const paths = report.paths as Record<ProxyPath, ScalePathResult>;
    const lines = ['watches open (s), event fan-out (ms), burst: answered, duration (ms), p99 (ms)'];
    for (const path of PROXY_PATHS) {
      const entry = paths[path];
      const fanOut = entry.events.map((event) => (event.fanOutMs === undefined ? `${event.receivedBy} received` : String(event.fanOutMs))).join(' / ');
      lines.push(
        `  ${path.padEnd(11)}${entry.watchesOpen} in ${(entry.watchesOpenMs / 1000).toFixed(1)} s; fan-out ${fanOut}; ` +
          `${entry.burst.answered}/${entry.burst.requests} in ${entry.burst.durationMs} ms, p99 ${entry.burst.latencyMs.p99 ?? '-'}`,
      );
    }
    return lines.join('\n');
  },
};

async function runPath(testbed: ProcessTestbed, path: ProxyPath, parameters: ScaleParameters, signal: AbortSignal, log: Logger): Promise<ScalePathResult> {
  const store = testbed.servers[0]!.store;
  const fleet = new WatchFleet(testbed.url(path), testbed.clientTls(path), parameters.watchesPerSession);

  try {
    const openStarted = performance.now();
    const opened = await fleet.open(
      parameters.watches,
      `/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=3600&resourceVersion=${store.resourceVersion}`,
      parameters.watchStartTimeoutMs,
    );
    const watchesOpenMs = Math.round(performance.now() - openStarted);
    const watchesAtReplicas = testbed.openWatches();
    const rssKiBWithWatches = readProcessUsage(testbed.pid(path)).rssKiB;
    log.info({ path, watches: opened.started, watchFailures: opened.failures, watchesOpenMs, watchesAtReplicas, rssKiBWithWatches }, 'watches open');

    const events = [await postEvent(testbed, fleet, `scale-${path}-before-burst`, parameters)];
    const burst = await sendBurst({
      url: testbed.url(path),
      tls: testbed.clientTls(path),
      path: '/api/v1/nodes/n1',
      requests: parameters.burstRequests,
      sessions: parameters.burstSessions,
      timeoutMs: parameters.requestTimeoutMs,
    });
    log.info({ path, answered: burst.answered, durationMs: burst.durationMs, p99Ms: burst.latencyMs.p99, failureCauses: burst.failureCauses }, 'burst completed');
    events.push(await postEvent(testbed, fleet, `scale-${path}-after-burst`, parameters));

    if (signal.aborted) throw signal.reason;
    return { watchesOpenMs, watchesOpen: opened.started, watchFailures: opened.failures, watchesAtReplicas, rssKiBWithWatches, events, burst, watchesEnded: fleet.ended };
  } finally {
    fleet.close();
  }
}

/** Creates a ConfigMap on one replica (the others apply it too) and waits until every watch received it. */
async function postEvent(testbed: ProcessTestbed, fleet: WatchFleet, name: string, parameters: ScaleParameters): Promise<ScalePathResult['events'][number]> {
  const received = fleet.waitForEvent(name, parameters.eventTimeoutMs);
  testbed.servers[0]!.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: 'default' }, data: { posted: new Date().toISOString() } });
  const fanOutMs = await received;
  return { name, receivedBy: fleet.receivedBy(name), fanOutMs };
}

/**
 * Waits until the replicas hold no watch, so that the next path starts from the same state, and
 * returns the ms it took and the watches still open then.
 */
async function waitForWatchesClosed(testbed: ProcessTestbed, timeoutMs: number, signal: AbortSignal): Promise<{ ms: number; stillOpen: number }> {
  const started = Date.now();
  while (testbed.openWatches() > 0 && Date.now() - started < timeoutMs) await sleep(100, signal);
  return { ms: Date.now() - started, stillOpen: testbed.openWatches() };
}

/** Checks that nothing was lost on either path: every watch opened and got every event, every request got 200. */
export function checkScaleInvariants(paths: Record<ProxyPath, ScalePathResult>, parameters: ScaleParameters): Record<string, boolean> {
  const all = PROXY_PATHS.map((path) => paths[path]);
  return {
    equalRequestCounts: new Set(all.map((entry) => `${entry.watchesOpen}/${entry.burst.requests}/${entry.events.length}`)).size === 1,
    everyWatchOpened: all.every((entry) => entry.watchesOpen === parameters.watches),
    everyWatchReceivedEveryEvent: all.every((entry) => entry.events.every((event) => event.receivedBy === parameters.watches)),
    everyRequestAnswered: all.every((entry) => entry.burst.answered === parameters.burstRequests),
    noWatchEnded: all.every((entry) => entry.watchesEnded === 0),
  };
}
