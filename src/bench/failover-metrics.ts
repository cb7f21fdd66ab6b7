/**
 * Turns the request records of one failover repetition into the figures the benchmark reports,
 * and checks the lease writes against what the server applied. Pure functions, so that the
 * definitions below are tested on their own.
 */
import type { RequestRecord } from './kubelet-loop.js';
import { summarize, type Summary } from './stats.js';

/** The figures of one path in one repetition. */
export interface PathOutcome {
  requests: { get: number; put: number };
  failed: { get: number; put: number };
  /** Failed requests by cause: an error code, or "status 504" and the like. */
  failureCauses: Record<string, number>;
  /** True when the path had a success before the switch and the last request that ended before it succeeded. */
  healthyAtSwitch: boolean;
  /**
   * ms from the switch to the first successful response to a request sent at or after the switch.
   * Requests sent earlier are left out, because their response may have passed the relay before it
   * went silent. null: no such success before the observation ended.
   */
  recoveryMs: number | null;
  /** ms from the switch to the end of the last failed request; 0 when no request failed. */
  disruptionMs: number;
  /** Maximum interval between the completions of two successive successful lease renewals. */
  maxLeaseGapMs: number;
  /** True when no renewal succeeded after the switch, so maxLeaseGapMs runs to the end of the observation and is a lower bound. */
  leaseGapCensored: boolean;
}

/** Numbered writes (lease renewals or status updates) as the client saw them against what the server applied. */
export interface WriteAudit {
  /** Writes that received 200. */
  acknowledged: number;
  /** Writes the server applied (one per change in its history, duplicates included). */
  appliedAtServer: number;
  /** Writes the server applied whose client saw a failure: the outcome the client could not know. */
  appliedUnacknowledged: number;
  /** Writes applied more than once; must be 0. */
  duplicated: number;
  /** Writes acknowledged to the client that the server never applied; must be 0. */
  lost: number;
}

export function summarizePath(records: readonly RequestRecord[], switchAtMs: number, endAtMs: number): PathOutcome {
  const outcome: PathOutcome = {
    requests: { get: 0, put: 0 },
    failed: { get: 0, put: 0 },
    failureCauses: {},
    healthyAtSwitch: isHealthyAt(records, switchAtMs),
    recoveryMs: null,
    disruptionMs: 0,
    maxLeaseGapMs: 0,
    leaseGapCensored: false,
  };

  for (const record of records) {
    // Only the failover scenario calls this, and its loop sends no status PATCH.
    const kind = record.kind === 'get-node' ? 'get' : 'put';
    outcome.requests[kind]++;
    if (record.ok === true) continue;

    outcome.failed[kind]++;
    if (record.endedAtMs !== undefined) outcome.disruptionMs = Math.max(outcome.disruptionMs, record.endedAtMs - switchAtMs);
    const cause = record.error ?? (record.status !== undefined ? `status ${record.status}` : 'unfinished');
    outcome.failureCauses[cause] = (outcome.failureCauses[cause] ?? 0) + 1;
  }

  const firstRecovery = records
    .filter((record) => record.ok === true && record.sentAtMs >= switchAtMs && record.endedAtMs !== undefined)
    .map((record) => record.endedAtMs! - switchAtMs)
    .sort((a, b) => a - b)[0];
  outcome.recoveryMs = firstRecovery ?? null;

  const gap = longestLeaseGap(records, switchAtMs, endAtMs);
  outcome.maxLeaseGapMs = gap.ms;
  outcome.leaseGapCensored = gap.censored;
  return outcome;
}

function isHealthyAt(records: readonly RequestRecord[], atMs: number): boolean {
  const endedBefore = records
    .filter((record) => record.endedAtMs !== undefined && record.endedAtMs < atMs)
    .sort((a, b) => a.endedAtMs! - b.endedAtMs!);
  return endedBefore.length > 0 && endedBefore[endedBefore.length - 1]!.ok === true;
}

function longestLeaseGap(records: readonly RequestRecord[], switchAtMs: number, endAtMs: number): { ms: number; censored: boolean } {
  const renewedAt = records
    .filter((record) => record.kind === 'put-lease' && record.ok === true && record.endedAtMs !== undefined)
    .map((record) => record.endedAtMs!)
    .sort((a, b) => a - b);
  if (renewedAt.length === 0) return { ms: endAtMs, censored: true };

  let longest = 0;
  for (let i = 1; i < renewedAt.length; i++) longest = Math.max(longest, renewedAt[i]! - renewedAt[i - 1]!);

  const last = renewedAt[renewedAt.length - 1]!;
  if (last < switchAtMs) return { ms: Math.max(longest, endAtMs - last), censored: true };
  return { ms: longest, censored: false };
}

/**
 * Compares the client's writes of one kind (lease PUTs unless given) with the sequence numbers found
 * in the server's change history.
 */
export function auditWrites(records: readonly RequestRecord[], appliedNumbers: readonly number[], kind: 'put-lease' | 'patch-status' = 'put-lease'): WriteAudit {
  const writes = records.filter((record) => record.kind === kind);
  const numberOf = (record: RequestRecord) => (kind === 'put-lease' ? record.renewal : record.statusUpdate)!;
  const acknowledged = new Set(writes.filter((record) => record.ok === true).map(numberOf));
  const applied = new Set(appliedNumbers);

  return {
    acknowledged: acknowledged.size,
    appliedAtServer: appliedNumbers.length,
    appliedUnacknowledged: [...applied].filter((number) => !acknowledged.has(number)).length,
    duplicated: appliedNumbers.length - applied.size,
    lost: [...acknowledged].filter((number) => !applied.has(number)).length,
  };
}

/** One path's figures over all repetitions. */
export interface PathSummary {
  repetitions: number;
  /** Recovery times of the repetitions that recovered. */
  recoveryMs: Summary;
  /** Repetitions without a success after the switch within the observation window. */
  notRecovered: number;
  /** Failed requests (GET and PUT) per repetition. */
  failedRequests: Summary & { total: number };
  disruptionMs: Summary;
  maxLeaseGapMs: Summary;
  /** Requests sent over all repetitions. */
  requests: number;
  /** Repetitions in which the path was not healthy when the switch came; their figures are suspect. */
  unhealthyAtSwitch: number;
}

export function summarizeRepetitions(outcomes: readonly PathOutcome[]): PathSummary {
  const recovered = outcomes.filter((outcome) => outcome.recoveryMs !== null).map((outcome) => outcome.recoveryMs!);
  const failed = outcomes.map((outcome) => outcome.failed.get + outcome.failed.put);

  return {
    repetitions: outcomes.length,
    recoveryMs: summarize(recovered),
    notRecovered: outcomes.length - recovered.length,
    failedRequests: { ...summarize(failed), total: failed.reduce((sum, count) => sum + count, 0) },
    disruptionMs: summarize(outcomes.map((outcome) => outcome.disruptionMs)),
    maxLeaseGapMs: summarize(outcomes.map((outcome) => outcome.maxLeaseGapMs)),
    requests: outcomes.reduce((sum, outcome) => sum + outcome.requests.get + outcome.requests.put, 0),
    unhealthyAtSwitch: outcomes.filter((outcome) => !outcome.healthyAtSwitch).length,
  };
}
