/**
 * Scenario `footprint`: the memory and CPU time a proxy costs a node. stallguard (a child process
 * running the built CLI with `run --config FILE`) and HAProxy run side by side, each in front of
 * the same three fake API-server replicas. Both are measured from /proc in two states:
 * - idle: started, with sessions to the replicas but no client traffic;
 * - loaded: 500 open watches plus a kubelet-like request rate (node GETs, Lease renewals, node
 *   status PATCHes) through each.
 * Memory per watch is (RSS loaded − RSS idle) / watches, so it includes what the request rate
 * adds. Each repetition starts both proxies afresh.
 */
import type { Logger } from 'pino';
import { sleep } from '../abort.js';
import { appliedWriteNumbers } from '../applied-writes.js';
import { summarizeBlackholePath, type BlackholePathOutcome } from '../blackhole-metrics.js';
import { NaiveClient } from '../clients/naive-client.js';
import { auditWrites, type WriteAudit } from '../failover-metrics.js';
import { KubeletLoop, RENEWAL_ANNOTATION, STATUS_UPDATE_ANNOTATION, type LoopSchedule } from '../kubelet-loop.js';
import { readProcessUsage, type ProcessUsage } from '../proc-stats.js';
import { PROXY_PATHS, ProcessTestbed, type ProxyPath } from '../process-testbed.js';
import type { Scenario, ScenarioContext, ScenarioReport } from '../scenario.js';
import { ratio, summarize, type Summary } from '../stats.js';
import { Ticker } from '../ticker.js';
import { requireTools } from '../tools.js';
import { WatchFleet } from '../watch-clients.js';

export interface FootprintParameters {
  repetitions: number;
  replicas: number;
  watches: number;
  /** Watches per client HTTP/2 session; HAProxy advertises 100 concurrent streams by default. */
  watchesPerSession: number;
  schedule: LoopSchedule;
  /** Wait after a change of state (start, watches opened) before measuring. */
  settleMs: number;
  /** CPU time is measured over these windows. */
  idleWindowMs: number;
  loadWindowMs: number;
  watchStartTimeoutMs: number;
  /**
   * HAProxy's `timeout server`: one hour, because with the 20 s of the other scenarios HAProxy
   * ends every watch that carried no event for 20 s, and would no longer hold the watches measured.
   */
  haproxyTimeoutServerMs: number;
}

export const FULL_FOOTPRINT_PARAMETERS: FootprintParameters = {
  repetitions: 3,
  replicas: 3,
  watches: 500,
  watchesPerSession: 100,
  schedule: { tickMs: 250, leaseEveryTicks: 8, statusEveryTicks: 8, requestTimeoutMs: 10_000 },
  settleMs: 5000,
  idleWindowMs: 10_000,
  loadWindowMs: 20_000,
  watchStartTimeoutMs: 30_000,
  haproxyTimeoutServerMs: 3_600_000,
};

export const QUICK_FOOTPRINT_PARAMETERS: FootprintParameters = {
  ...FULL_FOOTPRINT_PARAMETERS,
  repetitions: 1,
  watches: 50,
  watchesPerSession: 25,
  schedule: { tickMs: 100, leaseEveryTicks: 4, statusEveryTicks: 4, requestTimeoutMs: 3000 },
  settleMs: 300,
  idleWindowMs: 500,
  loadWindowMs: 1500,
  watchStartTimeoutMs: 10_000,
};

/** One proxy's state: RSS at the end of the window, CPU time over it. */
export interface UsageSample {
  rssKiB: number;
  peakRssKiB: number;
  cpuMs: number;
  windowMs: number;
  /** CPU time as a share of one core over the window, in percent. */
  cpuPercent: number;
}

export interface FootprintPathRepetition {
  idle: UsageSample;
  loaded: UsageSample;
  /** (loaded RSS − idle RSS) / watches, KiB. */
  perWatchKiB: number;
  /** Watches that started with status 200. */
  watchesOpen: number;
  /** Watches that did not start, by cause. */
  watchFailures: Record<string, number>;
  /** Watches that had ended when the loaded window closed; must be 0. */
  watchesEnded: number;
  requests: BlackholePathOutcome;
  leaseWrites: WriteAudit;
  statusWrites: WriteAudit;
}

export interface FootprintRepetition {
  index: number;
  paths: Record<ProxyPath, FootprintPathRepetition>;
}

export interface FootprintPathSummary {
  idleRssMiB: Summary;
  idleCpuPercent: Summary;
  loadedRssMiB: Summary;
  loadedCpuPercent: Summary;
  perWatchKiB: Summary;
}

export const footprintScenario: Scenario = {
  name: 'footprint',
  description: 'RSS and CPU time of stallguard and HAProxy, idle and with 500 watches plus a kubelet-like request rate',
  tools: ['haproxy'],

  async run(context: ScenarioContext): Promise<ScenarioReport> {
    const tools = requireTools(['haproxy'], 'footprint');
    const base = context.quick ? QUICK_FOOTPRINT_PARAMETERS : FULL_FOOTPRINT_PARAMETERS;
    const parameters: FootprintParameters = { ...base, repetitions: context.repeat ?? base.repetitions };

    const repetitions: FootprintRepetition[] = [];
    for (let index = 1; index <= parameters.repetitions; index++) {
      const testbed = await ProcessTestbed.start({
        dir: context.dir,
        replicas: parameters.replicas,
        haproxyBinary: tools.haproxy,
        haproxyTimeoutServerMs: parameters.haproxyTimeoutServerMs,
        objectNames: PROXY_PATHS.map(objectNameOf),
        supervisor: context.supervisor,
      });
      try {
        repetitions.push(await runRepetition(testbed, parameters, index, context.signal, context.log));
      } finally {
        await testbed.close();
      }
    }

    const summary = Object.fromEntries(PROXY_PATHS.map((path) => [path, summarizeFootprint(repetitions.map((repetition) => repetition.paths[path]))])) as Record<
      ProxyPath,
      FootprintPathSummary
    >;
    const medians = (path: ProxyPath) => summary[path];
    return {
      parameters: {
        ...parameters,
        stallguard: 'child process: node dist/cli/main.js run --config FILE, defaults apart from addresses and certificates',
        haproxy: 'nbthread 1, three servers, check inter 1s fall 2 rise 1 on-marked-down shutdown-sessions, timeout server 1h',
        watchPath: WATCH_PATH,
      },
      summary,
      ratios: {
        stallguardToHaproxy: {
          idleRss: ratio(medians('stallguard').idleRssMiB.median, medians('haproxy').idleRssMiB.median),
          loadedRss: ratio(medians('stallguard').loadedRssMiB.median, medians('haproxy').loadedRssMiB.median),
          loadedCpu: ratio(medians('stallguard').loadedCpuPercent.median, medians('haproxy').loadedCpuPercent.median),
          perWatch: ratio(medians('stallguard').perWatchKiB.median, medians('haproxy').perWatchKiB.median),
        },
      },
      repetitions,
      invariants: checkFootprintInvariants(repetitions, parameters),
    };
  },

  format(report: ScenarioReport): string {
    const summary = report.summary as Record<ProxyPath, FootprintPathSummary>;
    const fixed = (value: number | undefined, digits: number) => (value === undefined ? '-' : value.toFixed(digits));
    const lines = ['medians: idle RSS MiB, idle CPU %, loaded RSS MiB, loaded CPU %, KiB per watch'];
    for (const path of PROXY_PATHS) {
      const entry = summary[path];
      lines.push(
        `  ${path.padEnd(11)}${fixed(entry.idleRssMiB.median, 1).padStart(8)}${fixed(entry.idleCpuPercent.median, 2).padStart(8)}` +
          `${fixed(entry.loadedRssMiB.median, 1).padStart(8)}${fixed(entry.loadedCpuPercent.median, 2).padStart(8)}${fixed(entry.perWatchKiB.median, 1).padStart(8)}`,
      );
    }
    return lines.join('\n');
  },
};

const WATCH_PATH = '/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=3600';

function objectNameOf(path: ProxyPath): string {
  return `n1-${path}`;
}

/**
 * Measures both proxies idle, then opens the watches and starts the request loops on both, and
 * measures them again once everything runs.
 */
async function runRepetition(testbed: ProcessTestbed, parameters: FootprintParameters, index: number, signal: AbortSignal, log: Logger): Promise<FootprintRepetition> {
  await sleep(parameters.settleMs, signal);
  const idle = await measure(testbed, parameters.idleWindowMs, signal);

  const store = testbed.servers[0]!.store;
  const revisionBefore = store.resourceVersion;
  const fleets = Object.fromEntries(PROXY_PATHS.map((path) => [path, new WatchFleet(testbed.url(path), testbed.clientTls(path), parameters.watchesPerSession)])) as Record<
    ProxyPath,
    WatchFleet
  >;
  const origin = performance.now();
  const now = () => performance.now() - origin;
  const clients = Object.fromEntries(PROXY_PATHS.map((path) => [path, new NaiveClient(testbed.url(path), testbed.clientTls(path))])) as Record<ProxyPath, NaiveClient>;
  const loops = Object.fromEntries(PROXY_PATHS.map((path) => [path, new KubeletLoop(clients[path], objectNameOf(path), parameters.schedule, now)])) as Record<
    ProxyPath,
    KubeletLoop
  >;
  const ticker = new Ticker(parameters.schedule.tickMs, (tick) => {
    for (const path of PROXY_PATHS) loops[path].tick(tick);
  });

  let loaded: Record<ProxyPath, UsageSample>;
  let watchesEnded: Record<ProxyPath, number>;
  const watchFailures = {} as Record<ProxyPath, Record<string, number>>;
  try {
    const opened = await Promise.all(PROXY_PATHS.map((path) => fleets[path].open(parameters.watches, `${WATCH_PATH}&resourceVersion=${store.resourceVersion}`, parameters.watchStartTimeoutMs)));
    PROXY_PATHS.forEach((path, index) => {
      watchFailures[path] = opened[index]!.failures;
    });
    ticker.start();
    await sleep(parameters.settleMs, signal);
    loaded = await measure(testbed, parameters.loadWindowMs, signal);
    watchesEnded = Object.fromEntries(PROXY_PATHS.map((path) => [path, fleets[path].ended])) as Record<ProxyPath, number>;
  } finally {
    ticker.stop();
    if (signal.aborted) for (const path of PROXY_PATHS) clients[path].close();
    await Promise.all(PROXY_PATHS.map((path) => loops[path].settle()));
    for (const path of PROXY_PATHS) {
      clients[path].close();
      fleets[path].close();
    }
  }

  const leases = appliedWriteNumbers(store, revisionBefore, 'leases', RENEWAL_ANNOTATION);
  const statuses = appliedWriteNumbers(store, revisionBefore, 'nodes', STATUS_UPDATE_ANNOTATION);
  const paths = Object.fromEntries(
    PROXY_PATHS.map((path): [ProxyPath, FootprintPathRepetition] => [
      path,
      {
        idle: idle[path],
        loaded: loaded[path],
        perWatchKiB: Math.round(((loaded[path].rssKiB - idle[path].rssKiB) / parameters.watches) * 10) / 10,
        watchesOpen: fleets[path].started,
        watchFailures: watchFailures[path] ?? {},
        watchesEnded: watchesEnded[path],
        requests: summarizeBlackholePath(loops[path].records),
        leaseWrites: auditWrites(loops[path].records, leases.get(objectNameOf(path)) ?? [], 'put-lease'),
        statusWrites: auditWrites(loops[path].records, statuses.get(objectNameOf(path)) ?? [], 'patch-status'),
      },
    ]),
  ) as Record<ProxyPath, FootprintPathRepetition>;

  for (const path of PROXY_PATHS) {
    const entry = paths[path];
    log.info({ repetition: index, path, idleRssKiB: entry.idle.rssKiB, loadedRssKiB: entry.loaded.rssKiB, loadedCpuPercent: entry.loaded.cpuPercent, perWatchKiB: entry.perWatchKiB }, 'repetition measured');
  }
  return { index, paths };
}

/** Samples both proxies' /proc counters at the start and the end of a window of `windowMs`. */
async function measure(testbed: ProcessTestbed, windowMs: number, signal: AbortSignal): Promise<Record<ProxyPath, UsageSample>> {
  const before = Object.fromEntries(PROXY_PATHS.map((path) => [path, readProcessUsage(testbed.pid(path))])) as Record<ProxyPath, ProcessUsage>;
  const started = performance.now();
  await sleep(windowMs, signal);
  const elapsedMs = performance.now() - started;

  return Object.fromEntries(
    PROXY_PATHS.map((path) => {
      const after = readProcessUsage(testbed.pid(path));
      const cpuMs = after.cpuMs - before[path].cpuMs;
      const sample: UsageSample = {
        rssKiB: after.rssKiB,
        peakRssKiB: after.peakRssKiB,
        cpuMs: Math.round(cpuMs),
        windowMs: Math.round(elapsedMs),
        cpuPercent: Math.round((cpuMs / elapsedMs) * 10_000) / 100,
      };
      return [path, sample];
    }),
  ) as Record<ProxyPath, UsageSample>;
}

export function summarizeFootprint(repetitions: readonly FootprintPathRepetition[]): FootprintPathSummary {
  const mib = (kib: number) => Math.round((kib / 1024) * 10) / 10;
  return {
    idleRssMiB: summarize(repetitions.map((entry) => mib(entry.idle.rssKiB))),
    idleCpuPercent: summarize(repetitions.map((entry) => entry.idle.cpuPercent)),
    loadedRssMiB: summarize(repetitions.map((entry) => mib(entry.loaded.rssKiB))),
    loadedCpuPercent: summarize(repetitions.map((entry) => entry.loaded.cpuPercent)),
    perWatchKiB: summarize(repetitions.map((entry) => entry.perWatchKiB)),
  };
}

/** Checks that both proxies carried the same load, every watch stayed open and every write was accounted for. */
export function checkFootprintInvariants(repetitions: readonly FootprintRepetition[], parameters: FootprintParameters): Record<string, boolean> {
  const all = repetitions.flatMap((repetition) => PROXY_PATHS.map((path) => repetition.paths[path]));
  const audits = all.flatMap((entry) => [entry.leaseWrites, entry.statusWrites]);
  return {
    everyRepetitionMeasured: repetitions.length === parameters.repetitions,
    equalRequestCounts: repetitions.every((repetition) => new Set(PROXY_PATHS.map((path) => JSON.stringify(repetition.paths[path].requests.requests))).size === 1),
    everyRequestSucceeded: all.every((entry) => entry.requests.failed['get-node'] + entry.requests.failed['put-lease'] + entry.requests.failed['patch-status'] === 0),
    everyWatchStayedOpen: all.every((entry) => entry.watchesOpen === parameters.watches && entry.watchesEnded === 0),
    noDuplicatedWrites: audits.every((audit) => audit.duplicated === 0),
    noLostWrites: audits.every((audit) => audit.lost === 0),
  };
}
