import type { ClientRecord, GoHealthCheck, KubeletTimings } from '../testbed/kubelet-client.js';
import type { DemoClient, DemoClientName } from './clients.js';
import { latency, seconds } from './notices.js';

export interface ClientSummary {
  name: DemoClientName;
  label: string;
  nodeName: string;
  via: 'balancer' | 'stallguard';
  healthCheck: GoHealthCheck | null;
  closeOnHeartbeatFailure: boolean;
  requests: number;
  requestsFailed: number;
  /** Failed lease GETs, creates and updates. */
  leaseRequestsFailed: number;
  worstLatencyMs: number;
  /** Maximum time between two successful lease renewals, counting the start and the end of the run. */
  longestLeaseGapMs: number;
  /** True when longestLeaseGapMs reached the grace period. */
  notReady: boolean;
  /** Time from the incident to the client's next success; null when none came. */
  recoveredAfterMs: number | null;
  /** Maximum time without any success (a response, watch headers or a watch event), from the first success to the end. */
  longestSilenceMs: number;
  /** Pod changes made for this client's node after its first LIST, and how many its watch delivered as events. */
  watchEvents: { emitted: number; received: number; missed: number };
  watchesEndedCleanly: number;
  watchesBroken: number;
  lists: number;
  connectionsClosed: Record<string, number>;
  /** Every failed request, with its time in ms after the start. */
  failures: Array<{ atMs: number; operation: string; message: string }>;
}

export interface DemoSummary {
  version: string;
  scale: number;
  durationMs: number;
  incidentAtMs: number;
  stallguardUpstream: 'balancer' | 'replicas';
  gracePeriodMs: number;
  timers: {
    kubelet: KubeletTimings;
    clientGo: GoHealthCheck;
    stallguard: { pingIntervalMs: number; pingTimeoutMs: number };
  };
  clients: ClientSummary[];
  stallguard: { sessionsEvictedAfterPingTimeout: number; sessionsEvicted: number; logFile: string };
  /** True when the client through stallguard had no failed request, lease requests included. */
  passed: boolean;
}

export interface SummaryInput {
  version: string;
  scale: number;
  durationMs: number;
  gracePeriodMs: number;
  stallguardUpstream: 'balancer' | 'replicas';
  timers: DemoSummary['timers'];
  clients: readonly DemoClient[];
  records: ReadonlyMap<string, ClientRecord>;
  /** Pod changes per node name. */
  podChanges: ReadonlyMap<string, ReadonlyArray<{ resourceVersion: number; at: number }>>;
  startedAt: number;
  endedAt: number;
  incidentAt: number;
  stallguard: DemoSummary['stallguard'];
}

export function summarize(input: SummaryInput): DemoSummary {
  const clients = input.clients.map((client) => summarizeClient(client, input));
  const throughStallguard = clients.find((client) => client.name === 'stallguard');

  return {
    version: input.version,
    scale: input.scale,
    durationMs: input.endedAt - input.startedAt,
    incidentAtMs: input.incidentAt - input.startedAt,
    stallguardUpstream: input.stallguardUpstream,
    gracePeriodMs: input.gracePeriodMs,
    timers: input.timers,
    clients,
    stallguard: input.stallguard,
    passed: throughStallguard !== undefined && throughStallguard.requestsFailed === 0 && throughStallguard.leaseRequestsFailed === 0,
  };
}

function summarizeClient(client: DemoClient, input: SummaryInput): ClientSummary {
  const record = input.records.get(client.name);
  if (record === undefined) throw new Error(`no record for demo client ${client.name}`);

  const { startedAt, endedAt, incidentAt } = input;
  const longestLeaseGapMs = record.longestLeaseGapMs(startedAt, endedAt);
  const recoveredAt = record.firstSuccessAfter(incidentAt);

  const firstList = record.firstListVersion ?? 0;
  const emitted = (input.podChanges.get(client.nodeName) ?? []).filter((change) => change.resourceVersion > firstList);
  const received = emitted.filter((change) => record.watchedVersions.has(String(change.resourceVersion))).length;

  return {
    name: client.name,
    label: client.label,
    nodeName: client.nodeName,
    via: client.via,
    healthCheck: client.healthCheck ?? null,
    closeOnHeartbeatFailure: client.closeOnHeartbeatFailure,
    requests: record.requests,
    requestsFailed: record.failedRequests,
    leaseRequestsFailed: record.failedLeaseRequests,
    worstLatencyMs: record.worstLatencyMs,
    longestLeaseGapMs,
    notReady: longestLeaseGapMs >= input.gracePeriodMs,
    recoveredAfterMs: recoveredAt === undefined ? null : recoveredAt - incidentAt,
    longestSilenceMs: record.longestSilenceMs(record.firstSuccessAfter(startedAt) ?? startedAt, endedAt),
    watchEvents: { emitted: emitted.length, received, missed: emitted.length - received },
    watchesEndedCleanly: record.watchesEndedCleanly,
    watchesBroken: record.watchesBroken,
    lists: record.lists,
    connectionsClosed: Object.fromEntries(record.connectionsClosed),
    failures: record.failures.map((failure) => ({ atMs: failure.at - startedAt, operation: failure.operation, message: failure.message })),
  };
}

/** Renders the summary as a table with one column per client, followed by the verdict and the log's path. */
export function renderSummary(summary: DemoSummary): string {
  const graceLabel = `node NotReady (${seconds(summary.gracePeriodMs)} grace)`;
  const rows: Array<[string, (client: ClientSummary) => string]> = [
    ['requests failed', (client) => `${client.requestsFailed} of ${client.requests}`],
    ['lease requests failed', (client) => String(client.leaseRequestsFailed)],
    ['worst request latency', (client) => latency(client.worstLatencyMs)],
    ['longest lease gap', (client) => seconds(client.longestLeaseGapMs)],
    [graceLabel, (client) => (client.notReady ? 'yes' : 'no')],
    ['incident → next success', (client) => (client.recoveredAfterMs === null ? 'never' : latency(client.recoveredAfterMs))],
    ['longest time without success', (client) => seconds(client.longestSilenceMs)],
    ['watch events missed', (client) => `${client.watchEvents.missed} of ${client.watchEvents.emitted}`],
  ];

  const labelWidth = Math.max(...rows.map(([label]) => label.length)) + 2;
  const columnWidths = summary.clients.map((client) => Math.max(client.label.length, ...rows.map(([, value]) => value(client).length)) + 2);
  const line = (label: string, cells: string[]) => `${label.padEnd(labelWidth)}${cells.map((cell, i) => cell.padEnd(columnWidths[i]!)).join('')}`.trimEnd();

  const table = [
    line('', summary.clients.map((client) => client.label)),
    ...rows.map(([label, value]) => line(label, summary.clients.map(value))),
  ];

  const verdict = summary.passed
    ? ['PASS: the client through stallguard had no failed request and renewed its lease on time.']
    : ['FAIL: the client through stallguard had failed requests:', ...failureLines(summary)];
  const evictions = `stallguard evicted ${summary.stallguard.sessionsEvictedAfterPingTimeout} session(s) after an unanswered PING; its log: ${summary.stallguard.logFile}`;
  const grace =
    `NotReady: no lease renewal for the grace period, kube-controller-manager's --node-monitor-grace-period ` +
    `(40 s before Kubernetes 1.32, 50 s since; --grace-period sets it).`;

  return [...table, '', ...verdict, evictions, grace].join('\n');
}

/** Lists the failed requests of the client through stallguard, at most MAX_FAILURE_LINES of them. */
function failureLines(summary: DemoSummary): string[] {
  const failures = summary.clients.find((client) => client.name === 'stallguard')?.failures ?? [];
  const lines = failures.slice(0, MAX_FAILURE_LINES).map((failure) => `  ${seconds(failure.atMs).padStart(7)}  ${failure.operation}: ${failure.message}`);
  if (failures.length > MAX_FAILURE_LINES) lines.push(`  and ${failures.length - MAX_FAILURE_LINES} more (--json writes them all)`);
  return lines;
}

const MAX_FAILURE_LINES = 5;
