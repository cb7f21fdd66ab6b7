/**
 * Scenario `replica-blackhole`: one of three API-server replicas goes silent at a random moment.
 * Its relay then drops every byte both ways on open and new connections, with no FIN and no RST,
 * as a replica behind a dead network path does. Two paths run the same kubelet-like load side by
 * side (node GETs, Lease renewals and node status PATCHes, each with a 10 s timeout):
 * - stallguard: the naive client through stallguard (in-process, defaults), which lists the three
 *   relays as its endpoints;
 * - haproxy: the naive client through HAProxy 2.6 with the three relays as backend servers (check
 *   inter 1s fall 2 rise 1, on-marked-down shutdown-sessions, timeout server 20s).
 *
 * The replica to blackhole is drawn from those stallguard holds a ready session to at that moment.
 * With upstream.warmEndpoints 2, stallguard uses two of the three replicas, and a replica it does
 * not use would not test it. HAProxy sends to all three in turn, so every choice hits it.
 */
import type { Logger } from 'pino';
import { sleep } from '../abort.js';
import { appliedWriteNumbers } from '../applied-writes.js';
import { summarizeBlackholePath, summarizeBlackholeRepetitions, type BlackholePathOutcome, type BlackholePathSummary } from '../blackhole-metrics.js';
import { NaiveClient } from '../clients/naive-client.js';
import type { BenchClient } from '../clients/types.js';
import { auditWrites, type WriteAudit } from '../failover-metrics.js';
import type { HaproxyServerStat } from '../haproxy.js';
import { KubeletLoop, RENEWAL_ANNOTATION, STATUS_UPDATE_ANNOTATION, type LoopSchedule } from '../kubelet-loop.js';
import { SeededRandom } from '../random.js';
import { ReplicaTestbed } from '../replica-testbed.js';
import type { Scenario, ScenarioContext, ScenarioReport } from '../scenario.js';
import { Ticker } from '../ticker.js';
import { requireTools } from '../tools.js';

export const BLACKHOLE_PATHS = ['stallguard', 'haproxy'] as const;
export type BlackholePath = (typeof BLACKHOLE_PATHS)[number];

export interface BlackholeParameters {
  repetitions: number;
  replicas: number;
  schedule: LoopSchedule;
  /** Traffic before the earliest possible blackhole. */
  warmUpMs: number;
  /** The blackhole comes at warmUpMs plus a uniformly random delay in [0, windowMs). */
  windowMs: number;
  /** Traffic continues this long after the blackhole on both paths alike. */
  observeMs: number;
  haproxyTimeoutServerMs: number;
  /** Time each path gets before a repetition to complete a first GET with 200. */
  readyTimeoutMs: number;
  /** Time both proxies get after a repetition to put every replica back in rotation. */
  recoveryTimeoutMs: number;
  /** Replicas stallguard keeps a ready session to (its upstream.warmEndpoints default). */
  stallguardWarmReplicas: number;
}

export const FULL_BLACKHOLE_PARAMETERS: BlackholeParameters = {
  repetitions: 5,
  replicas: 3,
  // 4 GETs per second, a Lease renewal and a status PATCH every 2 s each.
  schedule: { tickMs: 250, leaseEveryTicks: 8, statusEveryTicks: 8, requestTimeoutMs: 10_000 },
  warmUpMs: 5000,
  windowMs: 5000,
  observeMs: 20_000,
  haproxyTimeoutServerMs: 20_000,
  readyTimeoutMs: 30_000,
  recoveryTimeoutMs: 90_000,
  stallguardWarmReplicas: 2,
};

/** --quick: shorter windows and a 3 s request timeout, for the invariants only. */
export const QUICK_BLACKHOLE_PARAMETERS: BlackholeParameters = {
  ...FULL_BLACKHOLE_PARAMETERS,
  repetitions: 1,
  schedule: { tickMs: 100, leaseEveryTicks: 4, statusEveryTicks: 4, requestTimeoutMs: 3000 },
  warmUpMs: 1000,
  windowMs: 500,
  observeMs: 4000,
  readyTimeoutMs: 5000,
  recoveryTimeoutMs: 20_000,
};

export interface BlackholePathRepetition extends BlackholePathOutcome {
  leaseWrites: WriteAudit;
  statusWrites: WriteAudit;
}

export interface BlackholeRepetition {
  index: number;
  /** The replica blackholed (0-based), and the replicas stallguard held ready sessions to then. */
  victim: number;
  stallguardReplicasInUse: number[];
  /** From the first tick to the blackhole. */
  blackholeAfterMs: number;
  durationMs: number;
  paths: Record<BlackholePath, BlackholePathRepetition>;
  /** Sessions stallguard evicted after an unanswered PING during this repetition. */
  stallguardPingEvictions: number;
  /** HAProxy's view of the blackholed server before the blackhole and after the observation. */
  haproxyVictim: { before: HaproxyServerStat; after: HaproxyServerStat };
}

export const replicaBlackholeScenario: Scenario = {
  name: 'replica-blackhole',
  description: 'one of three replicas blackholed at a random moment: worst latency, p99 and failed requests, stallguard vs HAProxy',
  tools: ['haproxy'],

  async run(context: ScenarioContext): Promise<ScenarioReport> {
    const tools = requireTools(['haproxy'], 'replica-blackhole');
    const base = context.quick ? QUICK_BLACKHOLE_PARAMETERS : FULL_BLACKHOLE_PARAMETERS;
    const parameters: BlackholeParameters = { ...base, repetitions: context.repeat ?? base.repetitions };
    const random = new SeededRandom(context.seed);

    const testbed = await ReplicaTestbed.start({
      dir: context.dir,
      replicas: parameters.replicas,
      haproxyBinary: tools.haproxy,
      haproxyTimeoutServerMs: parameters.haproxyTimeoutServerMs,
      objectNames: BLACKHOLE_PATHS.map(objectNameOf),
      supervisor: context.supervisor,
    });

    const repetitions: BlackholeRepetition[] = [];
    try {
      for (let index = 1; index <= parameters.repetitions; index++) {
        await testbed.waitUntilRecovered(parameters.stallguardWarmReplicas, parameters.recoveryTimeoutMs, context.signal);
        const result = await runRepetition(testbed, parameters, index, random, context.signal, context.log);
        repetitions.push(result);
        logRepetition(context.log, result);
      }
    } finally {
      await testbed.close();
    }

    const summary = Object.fromEntries(
      BLACKHOLE_PATHS.map((path) => [path, summarizeBlackholeRepetitions(repetitions.map((repetition) => repetition.paths[path]))]),
    ) as Record<BlackholePath, BlackholePathSummary>;

    return {
      parameters: {
        ...parameters,
        stallguard: 'in-process, defaults (health.pingInterval 1s, health.pingTimeout 1s, upstream.warmEndpoints 2, health.ejectionTime 5s)',
        haproxy: 'nbthread 1, three servers round robin, check inter 1s fall 2 rise 1 on-marked-down shutdown-sessions, timeout server 20s',
      },
      summary,
      repetitions,
      invariants: checkBlackholeInvariants(repetitions),
    };
  },

  format(report: ScenarioReport): string {
    return formatBlackholeSummary(report.summary as Record<BlackholePath, BlackholePathSummary>);
  },
};

function objectNameOf(path: BlackholePath): string {
  return `n1-${path}`;
}

function createClient(testbed: ReplicaTestbed, path: BlackholePath): BenchClient {
  // HAProxy presents the node certificate to the API servers itself.
  return path === 'stallguard' ? new NaiveClient(testbed.stallguardUrl, testbed.nodeTls) : new NaiveClient(testbed.haproxyUrl, { ca: testbed.nodeTls.ca });
}

/**
 * Runs one repetition with fresh clients: waits until a GET succeeds on both paths, ticks until the
 * blackhole, blackholes one replica, ticks for observeMs more and waits for the requests still in
 * flight. Then it resets what is left open on the victim's relay and lets traffic pass again, so
 * that the next repetition starts from three healthy replicas.
 */
async function runRepetition(
  testbed: ReplicaTestbed,
  parameters: BlackholeParameters,
  index: number,
  random: SeededRandom,
  signal: AbortSignal,
  log: Logger,
): Promise<BlackholeRepetition> {
  let origin = performance.now();
  const now = () => performance.now() - origin;
  const clients = Object.fromEntries(BLACKHOLE_PATHS.map((path) => [path, createClient(testbed, path)])) as Record<BlackholePath, BenchClient>;
  const loops = Object.fromEntries(
    BLACKHOLE_PATHS.map((path) => [path, new KubeletLoop(clients[path], objectNameOf(path), parameters.schedule, now)]),
  ) as Record<BlackholePath, KubeletLoop>;
  const ticker = new Ticker(parameters.schedule.tickMs, (tick) => {
    for (const path of BLACKHOLE_PATHS) loops[path].tick(tick);
  });

  const store = testbed.servers[0]!.store;
  let revisionBefore = store.resourceVersion;
  let victim = -1;
  let inUse: number[] = [];
  let blackholeAtMs = 0;
  let endAtMs = 0;
  let evictionsBefore = 0;
  let haproxyBefore: HaproxyServerStat | undefined;

  try {
    await waitUntilAnswered(clients, parameters, signal);
    revisionBefore = store.resourceVersion;
    evictionsBefore = await pingEvictions(testbed);

    origin = performance.now();
    ticker.start();
    await sleep(parameters.warmUpMs + random.between(0, parameters.windowMs), signal);

    inUse = testbed.replicasInUseByStallguard();
    const candidates = inUse.length > 0 ? inUse : testbed.relays.map((_, replica) => replica);
    victim = candidates[Math.floor(random.next() * candidates.length)]!;
    haproxyBefore = await testbed.haproxy.serverStat(testbed.haproxy.serverNames[victim]);
    blackholeAtMs = now();
    testbed.relays[victim]!.blackhole('both');
    log.info({ repetition: index, victim, stallguardReplicasInUse: inUse, blackholeAfterMs: Math.round(blackholeAtMs) }, 'replica blackholed');
    await sleep(parameters.observeMs, signal);
  } finally {
    ticker.stop();
    // On an abort, closing the clients first fails their requests at once instead of after the request timeout.
    if (signal.aborted) for (const path of BLACKHOLE_PATHS) clients[path].close();
    await Promise.all(BLACKHOLE_PATHS.map((path) => loops[path].settle()));
    endAtMs = now();
    for (const path of BLACKHOLE_PATHS) clients[path].close();
    if (victim >= 0) {
      testbed.relays[victim]!.reset();
      await testbed.relays[victim]!.pass();
    }
  }

  const haproxyAfter = await testbed.haproxy.serverStat(testbed.haproxy.serverNames[victim]);
  const leases = appliedWriteNumbers(store, revisionBefore, 'leases', RENEWAL_ANNOTATION);
  const statuses = appliedWriteNumbers(store, revisionBefore, 'nodes', STATUS_UPDATE_ANNOTATION);
  const paths = Object.fromEntries(
    BLACKHOLE_PATHS.map((path): [BlackholePath, BlackholePathRepetition] => [
      path,
      {
        ...summarizeBlackholePath(loops[path].records),
        leaseWrites: auditWrites(loops[path].records, leases.get(objectNameOf(path)) ?? [], 'put-lease'),
        statusWrites: auditWrites(loops[path].records, statuses.get(objectNameOf(path)) ?? [], 'patch-status'),
      },
    ]),
  ) as Record<BlackholePath, BlackholePathRepetition>;

  return {
    index,
    victim,
    stallguardReplicasInUse: inUse,
    blackholeAfterMs: Math.round(blackholeAtMs),
    durationMs: Math.round(endAtMs),
    paths,
    stallguardPingEvictions: (await pingEvictions(testbed)) - evictionsBefore,
    haproxyVictim: { before: haproxyBefore!, after: haproxyAfter },
  };
}

/** Sends a GET every half second on each path until one returns 200, for at most readyTimeoutMs. */
async function waitUntilAnswered(clients: Record<BlackholePath, BenchClient>, parameters: BlackholeParameters, signal: AbortSignal): Promise<void> {
  const deadline = performance.now() + parameters.readyTimeoutMs;
  const probe = async (path: BlackholePath) => {
    while (performance.now() < deadline) {
      const attemptStarted = performance.now();
      const timeoutMs = Math.max(1, Math.min(parameters.schedule.requestTimeoutMs, deadline - attemptStarted));
      const answered = await clients[path].send({ path: '/api/v1/nodes/n1', timeoutMs }).then(
        (response) => response.status === 200,
        () => false,
      );
      if (answered) return;
      await sleep(Math.max(0, 500 - (performance.now() - attemptStarted)), signal);
    }
    throw new Error(`path ${path} had no successful GET within ${parameters.readyTimeoutMs}ms before the repetition`);
  };
  await Promise.all(BLACKHOLE_PATHS.map(probe));
}

async function pingEvictions(testbed: ReplicaTestbed): Promise<number> {
  const data = await testbed.stallguard.metrics.sessionsEvicted.get();
  return data.values.filter((entry) => entry.labels.reason === 'ping_timeout').reduce((sum, entry) => sum + entry.value, 0);
}

/** Checks what holds on any machine: both paths were loaded alike and no write was lost or doubled. */
export function checkBlackholeInvariants(repetitions: readonly BlackholeRepetition[]): Record<string, boolean> {
  const all = repetitions.flatMap((repetition) => BLACKHOLE_PATHS.map((path) => repetition.paths[path]));
  const audits = all.flatMap((outcome) => [outcome.leaseWrites, outcome.statusWrites]);
  return {
    equalRequestCounts: repetitions.every((repetition) => new Set(BLACKHOLE_PATHS.map((path) => JSON.stringify(repetition.paths[path].requests))).size === 1),
    everyRequestEnded: all.every((outcome) => outcome.unfinished === 0),
    noDuplicatedWrites: audits.every((audit) => audit.duplicated === 0),
    noLostWrites: audits.every((audit) => audit.lost === 0),
  };
}

function logRepetition(log: Logger, result: BlackholeRepetition): void {
  for (const path of BLACKHOLE_PATHS) {
    const outcome = result.paths[path];
    log.info(
      {
        repetition: result.index,
        path,
        victim: result.victim,
        worstMs: outcome.latencyMs.max,
        p99Ms: outcome.latencyMs.p99,
        failed: outcome.failed['get-node'] + outcome.failed['put-lease'] + outcome.failed['patch-status'],
        slowRequests: outcome.slowRequests,
      },
      'repetition measured',
    );
  }
}

function formatBlackholeSummary(summary: Record<BlackholePath, BlackholePathSummary>): string {
  const seconds = (ms: number | undefined) => (ms === undefined ? '-' : (ms / 1000).toFixed(2));
  const header = ['path', 'worst s median/max', 'p99 s median/max', 'failed median/max/total', 'slower than 1 s total', 'requests'];
  const rows = BLACKHOLE_PATHS.map((path) => {
    const entry = summary[path];
    return [
      path,
      `${seconds(entry.worstMs.median)} / ${seconds(entry.worstMs.max)}`,
      `${seconds(entry.p99Ms.median)} / ${seconds(entry.p99Ms.max)}`,
      `${entry.failedRequests.median ?? '-'} / ${entry.failedRequests.max ?? '-'} / ${entry.failedRequests.total}`,
      String(entry.slowRequests.total),
      String(entry.requests),
    ];
  });
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)) + 2);
  return [header, ...rows].map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('').trimEnd()).join('\n');
}
