/**
 * Scenario `failover`: the load balancer in front of the API server fails over at a random moment.
 * Every open connection goes silent while new ones pass. Four clients run the same kubelet-like
 * request loop side by side and show how long each path takes to succeed again.
 *
 * Paths, all through the same fault relay to the same fake API server:
 * - naive-direct: node:http2 without PING, straight to the balancer;
 * - go-defaults-direct: client-go's HTTP/2 health check emulated, straight to the balancer;
 * - naive-stallguard: the naive client through stallguard;
 * - naive-haproxy: the naive client through HAProxy.
 */
import type { Logger } from 'pino';
import { sleep } from '../abort.js';
import { GO_DEFAULT_HEALTH_CHECK, GoLikeClient, type GoHealthCheck } from '../clients/go-like-client.js';
import { NaiveClient } from '../clients/naive-client.js';
import type { BenchClient, ClientCounters } from '../clients/types.js';
import { auditWrites, summarizePath, summarizeRepetitions, type PathOutcome, type PathSummary, type WriteAudit } from '../failover-metrics.js';
import { FailoverTestbed } from '../failover-testbed.js';
import type { HaproxyServerStat } from '../haproxy.js';
import { KubeletLoop, RENEWAL_ANNOTATION, type LoopSchedule } from '../kubelet-loop.js';
import { SeededRandom } from '../random.js';
import type { Scenario, ScenarioContext, ScenarioReport } from '../scenario.js';
import { Ticker } from '../ticker.js';
import { requireTools } from '../tools.js';

export const FAILOVER_PATHS = ['naive-direct', 'go-defaults-direct', 'naive-stallguard', 'naive-haproxy'] as const;
export type FailoverPath = (typeof FAILOVER_PATHS)[number];

const PATH_DESCRIPTIONS: Record<FailoverPath, string> = {
  'naive-direct': 'node:http2 without PING, straight to the balancer; dials a new session after a request timed out',
  'go-defaults-direct': "client-go's HTTP/2 health check emulated (PING after readIdleTimeout, close after pingTimeout), straight to the balancer",
  'naive-stallguard': 'the naive client through stallguard (in-process, health.pingInterval 1s, health.pingTimeout 1s)',
  'naive-haproxy': 'the naive client through HAProxy (h2 to h2 over TLS, check inter 1s fall 2 rise 1 on-marked-down shutdown-sessions)',
};

export interface FailoverParameters {
  repetitions: number;
  schedule: LoopSchedule;
  /** Traffic before the earliest possible switch. */
  warmUpMs: number;
  /** The switch comes at warmUpMs plus a uniformly random delay in [0, windowMs). */
  windowMs: number;
  /**
   * Traffic continues this long after the switch on every path alike, so the failed requests of
   * all paths are counted over the same window. A path without a success in it has not recovered.
   */
  observeMs: number;
  goHealthCheck: GoHealthCheck;
  haproxyTimeoutServerMs: number;
  /** Time each path gets before a repetition to complete a first GET with 200. */
  readyTimeoutMs: number;
}

/** The full run: kubelet-like timing and the real defaults of every path. */
export const FULL_PARAMETERS: FailoverParameters = {
  repetitions: 10,
  schedule: { tickMs: 1000, leaseEveryTicks: 2, requestTimeoutMs: 10_000 },
  warmUpMs: 5000,
  windowMs: 5000,
  // client-go's 30 s + 15 s, plus the 10 s request timeout and slack.
  observeMs: 60_000,
  goHealthCheck: GO_DEFAULT_HEALTH_CHECK,
  haproxyTimeoutServerMs: 20_000,
  readyTimeoutMs: 30_000,
};

/**
 * --quick: every client-side timeout scaled down so one repetition takes seconds. Only the
 * invariants mean anything then, because stallguard keeps its 1 s + 1 s PING settings and its
 * recovery is no longer comparable with the scaled paths.
 */
export const QUICK_PARAMETERS: FailoverParameters = {
  repetitions: 1,
  schedule: { tickMs: 200, leaseEveryTicks: 2, requestTimeoutMs: 1500 },
  warmUpMs: 1000,
  windowMs: 500,
  observeMs: 5000,
  goHealthCheck: { readIdleTimeoutMs: 1500, pingTimeoutMs: 1000 },
  haproxyTimeoutServerMs: 3000,
  readyTimeoutMs: 5000,
};

/** One path in one repetition. */
export interface PathRepetition extends PathOutcome {
  writes: WriteAudit;
  /** Lease updates the server counted (ObjectStore.writeCounts) during the repetition. */
  serverLeaseUpdates: number;
  client: ClientCounters;
}

export interface RepetitionResult {
  index: number;
  /** ms until each path completed a first GET before the repetition; null when none succeeded within readyTimeoutMs. */
  readyAfterMs: Record<FailoverPath, number | null>;
  /** Delay from the first tick to the switch. */
  switchAfterMs: number;
  /** From the first tick to the end of the last request. */
  durationMs: number;
  paths: Record<FailoverPath, PathRepetition>;
  /** Sessions stallguard evicted after an unanswered PING during this repetition. */
  stallguardPingEvictions: number;
  haproxy: { before: HaproxyServerStat; after: HaproxyServerStat };
}

export const failoverScenario: Scenario = {
  name: 'failover',
  description: 'balancer failover at random moments: recovery time, failed requests and lease gaps per path',
  tools: ['haproxy'],

  async run(context: ScenarioContext): Promise<ScenarioReport> {
    const tools = requireTools(['haproxy'], 'failover');
    const base = context.quick ? QUICK_PARAMETERS : FULL_PARAMETERS;
    const parameters: FailoverParameters = { ...base, repetitions: context.repeat ?? base.repetitions };
    const random = new SeededRandom(context.seed);

    const testbed = await FailoverTestbed.start({
      dir: context.dir,
      haproxyBinary: tools.haproxy,
      haproxyTimeoutServerMs: parameters.haproxyTimeoutServerMs,
      leaseNames: FAILOVER_PATHS.map(leaseNameOf),
      supervisor: context.supervisor,
    });

    const repetitions: RepetitionResult[] = [];
    try {
      for (let index = 1; index <= parameters.repetitions; index++) {
        const result = await runRepetition(testbed, parameters, index, random, context.signal, context.log);
        repetitions.push(result);
        logRepetition(context.log, result);
      }
    } finally {
      await testbed.close();
    }

    const summary = Object.fromEntries(
      FAILOVER_PATHS.map((path) => [path, summarizeRepetitions(repetitions.map((repetition) => repetition.paths[path]))]),
    ) as Record<FailoverPath, PathSummary>;

    return {
      parameters: { ...parameters, stallguard: { pingIntervalMs: 1000, pingTimeoutMs: 1000, retryBudgetMs: 10_000 } },
      paths: PATH_DESCRIPTIONS,
      summary,
      repetitions,
      invariants: checkInvariants(repetitions),
    };
  },

  format(report: ScenarioReport): string {
    return formatFailoverSummary(report.summary as Record<FailoverPath, PathSummary>);
  },
};

function leaseNameOf(path: FailoverPath): string {
  return `n1-${path}`;
}

function createClient(testbed: FailoverTestbed, path: FailoverPath, parameters: FailoverParameters): BenchClient {
  switch (path) {
    case 'naive-direct':
      return new NaiveClient(testbed.balancerUrl, testbed.nodeTls);
    case 'go-defaults-direct':
      return new GoLikeClient(testbed.balancerUrl, testbed.nodeTls, parameters.goHealthCheck);
    case 'naive-stallguard':
      return new NaiveClient(testbed.stallguardUrl, testbed.nodeTls);
    case 'naive-haproxy':
      // HAProxy presents the node certificate to the API server itself.
      return new NaiveClient(testbed.haproxyUrl, { ca: testbed.nodeTls.ca });
  }
}

/**
 * Runs one repetition with fresh clients: waits until a GET succeeds on every path, ticks until the
 * switch, fails the balancer over, ticks for observeMs more and waits for the requests still in
 * flight.
 *
 * HAProxy is restarted before every repetition but the first. It keeps a stranded backend
 * connection in its pool of reusable connections while traffic continues (seen for more than 90 s
 * in trial runs), so without a restart one repetition's incident would leak into the next.
 * stallguard runs through all repetitions, because it evicts the stalled session.
 */
async function runRepetition(
  testbed: FailoverTestbed,
  parameters: FailoverParameters,
  index: number,
  random: SeededRandom,
  signal: AbortSignal,
  log: Logger,
): Promise<RepetitionResult> {
  if (index > 1) await testbed.restartHaproxy();

  // Times in the records are ms since the first tick; `origin` is reset when the ticker starts.
  let origin = performance.now();
  const now = () => performance.now() - origin;
  const clients = Object.fromEntries(FAILOVER_PATHS.map((path) => [path, createClient(testbed, path, parameters)])) as Record<FailoverPath, BenchClient>;
  const loops = Object.fromEntries(
    FAILOVER_PATHS.map((path) => [path, new KubeletLoop(clients[path], leaseNameOf(path), parameters.schedule, now)]),
  ) as Record<FailoverPath, KubeletLoop>;
  const ticker = new Ticker(parameters.schedule.tickMs, (tick) => {
    for (const path of FAILOVER_PATHS) loops[path].tick(tick);
  });

  let readyAfterMs: Record<FailoverPath, number | null>;
  let revisionBefore: number;
  let updatesBefore: Record<string, number>;
  let evictionsBefore: number;
  let haproxyBefore: HaproxyServerStat;
  let switchAtMs = 0;
  let endAtMs = 0;

  try {
    readyAfterMs = await waitUntilAnswered(clients, parameters, signal);
    for (const path of FAILOVER_PATHS) {
      if (readyAfterMs[path] === null) log.warn({ repetition: index, path, readyTimeoutMs: parameters.readyTimeoutMs }, 'path had no successful GET before the repetition; its figures are suspect');
    }

    revisionBefore = testbed.server.store.resourceVersion;
    updatesBefore = Object.fromEntries(FAILOVER_PATHS.map((path) => [path, leaseUpdates(testbed, path)]));
    evictionsBefore = await testbed.stallguardPingEvictions();
    haproxyBefore = await testbed.haproxy.serverStat();

    origin = performance.now();
    ticker.start();
    await sleep(parameters.warmUpMs + random.between(0, parameters.windowMs), signal);

    switchAtMs = now();
    testbed.relay.failover();
    log.info({ repetition: index, switchAfterMs: Math.round(switchAtMs) }, 'balancer failed over');
    await sleep(parameters.observeMs, signal);
  } finally {
    ticker.stop();
    // On an abort, closing the clients first fails their requests at once instead of after the request timeout.
    if (signal.aborted) for (const path of FAILOVER_PATHS) clients[path].close();
    await Promise.all(FAILOVER_PATHS.map((path) => loops[path].settle()));
    endAtMs = now();
    for (const path of FAILOVER_PATHS) clients[path].close();
  }

  const applied = appliedRenewals(testbed, revisionBefore);
  const paths = Object.fromEntries(
    FAILOVER_PATHS.map((path): [FailoverPath, PathRepetition] => [
      path,
      {
        ...summarizePath(loops[path].records, switchAtMs, endAtMs),
        writes: auditWrites(loops[path].records, applied.get(leaseNameOf(path)) ?? []),
        serverLeaseUpdates: leaseUpdates(testbed, path) - updatesBefore[path]!,
        client: { ...clients[path].counters },
      },
    ]),
  ) as Record<FailoverPath, PathRepetition>;

  return {
    index,
    readyAfterMs,
    switchAfterMs: Math.round(switchAtMs),
    durationMs: Math.round(endAtMs),
    paths,
    stallguardPingEvictions: (await testbed.stallguardPingEvictions()) - evictionsBefore,
    haproxy: { before: haproxyBefore, after: await testbed.haproxy.serverStat() },
  };
}

/** Sends a GET every half second on each path until one returns 200, for at most readyTimeoutMs. */
async function waitUntilAnswered(
  clients: Record<FailoverPath, BenchClient>,
  parameters: FailoverParameters,
  signal: AbortSignal,
): Promise<Record<FailoverPath, number | null>> {
  const started = performance.now();
  const readyAfterMs = Object.fromEntries(FAILOVER_PATHS.map((path) => [path, null])) as Record<FailoverPath, number | null>;
  const probe = async (path: FailoverPath) => {
    const deadline = started + parameters.readyTimeoutMs;
    while (performance.now() < deadline) {
      const attemptStarted = performance.now();
      const timeoutMs = Math.max(1, Math.min(parameters.schedule.requestTimeoutMs, deadline - attemptStarted));
      const answered = await clients[path].send({ path: '/api/v1/nodes/n1', timeoutMs }).then(
        (response) => response.status === 200,
        () => false,
      );
      if (answered) {
        readyAfterMs[path] = Math.round(performance.now() - started);
        return;
      }
      await sleep(Math.max(0, 500 - (performance.now() - attemptStarted)), signal);
    }
  };

  await Promise.all(FAILOVER_PATHS.map(probe));
  return readyAfterMs;
}

function leaseUpdates(testbed: FailoverTestbed, path: FailoverPath): number {
  return testbed.server.writeCounts('leases', 'kube-node-lease', leaseNameOf(path)).updates;
}

/** Returns, per lease name, the renewal numbers of the lease updates applied after `revision`. */
function appliedRenewals(testbed: FailoverTestbed, revision: number): Map<string, number[]> {
  const applied = new Map<string, number[]>();
  for (const change of testbed.server.store.changesSince(revision)) {
    if (change.resource !== 'leases' || change.type !== 'MODIFIED') continue;

    const annotations = change.object.metadata.annotations as Record<string, string> | undefined;
    const renewal = Number(annotations?.[RENEWAL_ANNOTATION]);
    if (!Number.isInteger(renewal)) continue;

    const list = applied.get(change.object.metadata.name) ?? [];
    list.push(renewal);
    applied.set(change.object.metadata.name, list);
  }
  return applied;
}

/** Checks what holds on any machine: the paths were loaded alike and no lease write was lost or doubled. */
export function checkInvariants(repetitions: readonly RepetitionResult[]): Record<string, boolean> {
  const all = repetitions.flatMap((repetition) => FAILOVER_PATHS.map((path) => repetition.paths[path]));
  return {
    equalRequestCounts: repetitions.every((repetition) => {
      const counts = FAILOVER_PATHS.map((path) => `${repetition.paths[path].requests.get}/${repetition.paths[path].requests.put}`);
      return new Set(counts).size === 1;
    }),
    noDuplicatedWrites: all.every((outcome) => outcome.writes.duplicated === 0),
    noLostWrites: all.every((outcome) => outcome.writes.lost === 0),
    serverCountsMatchClients: all.every(
      (outcome) =>
        outcome.serverLeaseUpdates === outcome.writes.appliedAtServer &&
        outcome.serverLeaseUpdates === outcome.writes.acknowledged + outcome.writes.appliedUnacknowledged,
    ),
  };
}

function logRepetition(log: Logger, result: RepetitionResult): void {
  for (const path of FAILOVER_PATHS) {
    const outcome = result.paths[path];
    log.info(
      {
        repetition: result.index,
        path,
        recoveryMs: outcome.recoveryMs === null ? null : Math.round(outcome.recoveryMs),
        failed: outcome.failed.get + outcome.failed.put,
        maxLeaseGapMs: Math.round(outcome.maxLeaseGapMs),
        sessionsOpened: outcome.client.sessionsOpened,
      },
      'repetition measured',
    );
  }
}

function formatFailoverSummary(summary: Record<FailoverPath, PathSummary>): string {
  const seconds = (ms: number | undefined) => (ms === undefined ? '-' : (ms / 1000).toFixed(1));
  const header = ['path', 'recovery s median/worst', 'failed median/worst/total', 'disruption s median/worst', 'lease gap s median/worst'];
  const rows = FAILOVER_PATHS.map((path) => {
    const entry = summary[path];
    const worstRecovery = entry.notRecovered > 0 ? `none in ${entry.notRecovered}/${entry.repetitions}` : seconds(entry.recoveryMs.max);
    return [
      path,
      `${seconds(entry.recoveryMs.median)} / ${worstRecovery}`,
      `${entry.failedRequests.median} / ${entry.failedRequests.max} / ${entry.failedRequests.total}`,
      `${seconds(entry.disruptionMs.median)} / ${seconds(entry.disruptionMs.max)}`,
      `${seconds(entry.maxLeaseGapMs.median)} / ${seconds(entry.maxLeaseGapMs.max)}`,
    ];
  });

  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)) + 2);
  return [header, ...rows].map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('').trimEnd()).join('\n');
}
