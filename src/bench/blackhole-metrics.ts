/**
 * Turns the request records of one replica-blackhole repetition into its figures: request latency
 * (failed requests count with the time until they failed), failures by cause and the requests that
 * took longer than a second. Pure functions, so that the definitions are tested on their own.
 */
import type { RequestKind, RequestRecord } from './kubelet-loop.js';
import { percentile, summarize, type Summary } from './stats.js';

/** Requests slower than this count as held up by the incident; the loop's requests take milliseconds otherwise. */
export const SLOW_REQUEST_MS = 1000;

export type RequestCounts = Record<RequestKind, number>;

export interface BlackholePathOutcome {
  requests: RequestCounts;
  failed: RequestCounts;
  /** Failed requests by cause: an error code, or "status 503" and the like. */
  failureCauses: Record<string, number>;
  /** Latency of every request of the repetition, the failed ones included. */
  latencyMs: { p50: number | undefined; p99: number | undefined; max: number | undefined };
  /** Requests that took longer than SLOW_REQUEST_MS, failed or not. */
  slowRequests: number;
  /** Requests that had not ended when the records were read; 0 after the loop settled. */
  unfinished: number;
}

export function summarizeBlackholePath(records: readonly RequestRecord[]): BlackholePathOutcome {
  const outcome: BlackholePathOutcome = {
    requests: emptyCounts(),
    failed: emptyCounts(),
    failureCauses: {},
    latencyMs: { p50: undefined, p99: undefined, max: undefined },
    slowRequests: 0,
    unfinished: 0,
  };
  const latencies: number[] = [];

  for (const record of records) {
    outcome.requests[record.kind]++;
    if (record.endedAtMs === undefined) {
      outcome.unfinished++;
      continue;
    }

    const latency = record.endedAtMs - record.sentAtMs;
    latencies.push(latency);
    if (latency > SLOW_REQUEST_MS) outcome.slowRequests++;
    if (record.ok === true) continue;

    outcome.failed[record.kind]++;
    const cause = record.error ?? (record.status !== undefined ? `status ${record.status}` : 'unfinished');
    outcome.failureCauses[cause] = (outcome.failureCauses[cause] ?? 0) + 1;
  }

  const round = (value: number | undefined) => (value === undefined ? undefined : Math.round(value * 10) / 10);
  outcome.latencyMs = {
    p50: round(percentile(latencies, 50)),
    p99: round(percentile(latencies, 99)),
    max: round(latencies.length === 0 ? undefined : Math.max(...latencies)),
  };
  return outcome;
}

/** One path's figures over all repetitions. */
export interface BlackholePathSummary {
  repetitions: number;
  /** Requests sent over all repetitions. */
  requests: number;
  /** The worst request latency of each repetition. */
  worstMs: Summary;
  p99Ms: Summary;
  p50Ms: Summary;
  /** Failed requests per repetition, and their total. */
  failedRequests: Summary & { total: number };
  slowRequests: Summary & { total: number };
}

export function summarizeBlackholeRepetitions(outcomes: readonly BlackholePathOutcome[]): BlackholePathSummary {
  const defined = (values: Array<number | undefined>) => values.filter((value): value is number => value !== undefined);
  const total = (counts: RequestCounts) => counts['get-node'] + counts['put-lease'] + counts['patch-status'];
  const failed = outcomes.map((outcome) => total(outcome.failed));
  const slow = outcomes.map((outcome) => outcome.slowRequests);

  return {
    repetitions: outcomes.length,
    requests: outcomes.reduce((sum, outcome) => sum + total(outcome.requests), 0),
    worstMs: summarize(defined(outcomes.map((outcome) => outcome.latencyMs.max))),
    p99Ms: summarize(defined(outcomes.map((outcome) => outcome.latencyMs.p99))),
    p50Ms: summarize(defined(outcomes.map((outcome) => outcome.latencyMs.p50))),
    failedRequests: { ...summarize(failed), total: failed.reduce((sum, count) => sum + count, 0) },
    slowRequests: { ...summarize(slow), total: slow.reduce((sum, count) => sum + count, 0) },
  };
}

function emptyCounts(): RequestCounts {
  return { 'get-node': 0, 'put-lease': 0, 'patch-status': 0 };
}
