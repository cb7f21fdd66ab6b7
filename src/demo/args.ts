import { DurationSyntaxError, parseDuration } from '../config/duration.js';
import { suggestClosest } from '../config/suggest.js';

/** Options of one `npm run demo` run. */
export interface DemoOptions {
  /** How long the clients run, incident included. */
  durationMs: number;
  /** Multiplies kubelet's and client-go's timers; stallguard's own timers stay at their defaults. */
  scale: number;
  /** File for the summary as JSON; undefined writes none. */
  jsonPath: string | undefined;
  /** Adds a client that sends no PING at all. */
  naive: boolean;
  /** Points stallguard at the three replicas instead of the balancer. */
  replicas: boolean;
  /** Turns on kubelet's OnHeartbeatFailure (close the connection after repeated heartbeat failures) for the direct client. */
  /** kube-controller-manager's --node-monitor-grace-period: how long without a lease renewal makes a node NotReady. */
  gracePeriodMs: number;
  help: boolean;
}

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The default run, 90 s at scale 1: long enough for client-go's 45 s detection and what follows it. */
export const DEFAULT_DURATION_MS = 90_000;
/** --node-monitor-grace-period before Kubernetes 1.32; 1.32 raised the default to 50 s. */
export const DEFAULT_GRACE_PERIOD_MS = 40_000;
/** The steady phase before the incident, at scale 1. */
export const STEADY_PHASE_MS = 10_000;

export const USAGE = `Usage: npm run demo -- [options]

Reproduces a load-balancer failover that silently drops every open connection, on loopback, and
shows a kubelet-like client going straight to the balancer stalling while the same client through
stallguard carries on.

Options:
  --duration DURATION   how long the clients run: a Go duration ("90s", "1m30s") or seconds ("90");
                        default 90s, multiplied by --scale
  --scale FACTOR        multiplies kubelet's and client-go's timers (intervals, timeouts, lease
                        duration, health check) for a shorter run, from 0.2 to 10; stallguard's own
                        timers are not scaled; default 1
  --json FILE           also writes the summary as JSON to FILE
  --naive               adds a client that sends no HTTP/2 PING at all
  --replicas            points stallguard at the three API-server replicas instead of the balancer
                        (the balancer then carries only the clients that go straight to it)
  --grace-period DURATION
                        no lease renewal for this long makes a node NotReady
                        (kube-controller-manager's --node-monitor-grace-period); default 40s
                        (the default before Kubernetes 1.32, which raised it to 50s), multiplied by --scale
  -h, --help            prints this help

Exit status: 0 when the client through stallguard had no failed request, 1 when it had one,
2 for invalid options, 3 when the demo itself could not run, 130 or 143 when interrupted.`;

const FLAGS = ['--duration', '--scale', '--json', '--naive', '--replicas', '--grace-period', '--help'];
const VALUE_FLAGS = new Set(['--duration', '--scale', '--json', '--grace-period']);

/** Parses the demo's command line; throws UsageError with the fix for anything invalid. */
export function parseDemoArgs(argv: readonly string[]): DemoOptions {
  const values = new Map<string, string>();
  const switches = new Set<string>();

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      switches.add('--help');
      continue;
    }

    const [flag, inlineValue] = splitFlag(arg);
    if (!FLAGS.includes(flag)) {
      const suggestion = suggestClosest(flag, FLAGS);
      throw new UsageError(`unknown option ${JSON.stringify(arg)}${suggestion !== undefined ? `; did you mean ${suggestion}?` : ''} (see --help)`);
    }
    if (!VALUE_FLAGS.has(flag)) {
      if (inlineValue !== undefined) throw new UsageError(`option ${flag} takes no value, got ${JSON.stringify(inlineValue)}`);
      switches.add(flag);
      continue;
    }

    const value = inlineValue ?? argv[++i];
    if (value === undefined || (inlineValue === undefined && value.startsWith('--'))) {
      throw new UsageError(`option ${flag} needs a value (see --help)`);
    }
    values.set(flag, value);
  }

  const scale = values.has('--scale') ? parseScale(values.get('--scale')!) : 1;
  const durationMs = values.has('--duration') ? parseDurationOption('--duration', values.get('--duration')!) : DEFAULT_DURATION_MS * scale;
  const gracePeriodMs = values.has('--grace-period') ? parseDurationOption('--grace-period', values.get('--grace-period')!) : DEFAULT_GRACE_PERIOD_MS * scale;
  const jsonPath = values.get('--json');
  if (jsonPath === '') throw new UsageError('option --json needs a file name');

  const minimumMs = incidentAtMs(scale) + 2000;
  if (durationMs < minimumMs) {
    throw new UsageError(
      `--duration ${values.get('--duration')} is too short: the incident happens at ${seconds(incidentAtMs(scale))} with --scale ${scale}; use at least ${seconds(minimumMs)}`,
    );
  }
  if (gracePeriodMs <= 0) throw new UsageError('--grace-period must be above 0s');

  return {
    durationMs,
    scale,
    jsonPath,
    naive: switches.has('--naive'),
    replicas: switches.has('--replicas'),
    gracePeriodMs,
    help: switches.has('--help'),
  };
}

/**
 * When the balancer fails over: after the steady phase, plus a quarter of a heartbeat interval
 * (10 s at scale 1), so the incident does not coincide with the clients' heartbeats.
 */
export function incidentAtMs(scale: number): number {
  return (STEADY_PHASE_MS + 2_500) * scale;
}

function splitFlag(arg: string): [string, string | undefined] {
  const equals = arg.indexOf('=');
  return equals === -1 ? [arg, undefined] : [arg.slice(0, equals), arg.slice(equals + 1)];
}

/**
 * Below 0.2, kubelet's 10 s request timeout would drop under 2 s. stallguard's PING interval and
 * timeout (1 s each) are not scaled, so it needs up to 2 s to find a stall, and the comparison
 * would be unfair.
 */
const MIN_SCALE = 0.2;
const MAX_SCALE = 10;

function parseScale(text: string): number {
  const scale = Number(text);
  if (text.trim() === '' || !Number.isFinite(scale) || scale < MIN_SCALE || scale > MAX_SCALE) {
    throw new UsageError(
      `invalid --scale ${JSON.stringify(text)}: expected a number from ${MIN_SCALE} to ${MAX_SCALE}; ` +
        `below ${MIN_SCALE}, kubelet's request timeout would be shorter than stallguard's stall detection, which is not scaled`,
    );
  }
  return scale;
}

/** Parses a Go duration, or a plain number of seconds. */
function parseDurationOption(flag: string, text: string): number {
  if (/^\d+(\.\d+)?$/.test(text.trim())) return Math.round(Number(text) * 1000);
  try {
    return parseDuration(text);
  } catch (err) {
    if (err instanceof DurationSyntaxError) throw new UsageError(`invalid ${flag} "${text}": it ${err.message}`);
    throw err;
  }
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))}s`;
}
