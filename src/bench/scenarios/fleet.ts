/**
 * Scenario `fleet`: what a fleet of nodes running stallguard does to the API servers. It simulates
 * (no sockets) N nodes that lose their load balancer at the same moment and reconnect with
 * stallguard's real backoff code, with full jitter and with a fixed delay. It reports the new TLS
 * handshakes per second arriving at the API servers over time, and the steady load of PINGs and
 * readiness probes per node count. It writes the time series as an SVG chart beside the result.
 * See fleet-model.ts for what is modelled and what is not.
 */
import { simulateReconnect, simulateSteadyLoad, STALLGUARD_DEFAULT_TIMINGS, type FleetTimings, type JitterMode, type ReconnectOutcome, type SteadyLoad } from '../fleet-model.js';
import { SeededRandom } from '../random.js';
import type { Scenario, ScenarioContext, ScenarioReport } from '../scenario.js';
import { renderLineChart } from '../svg-chart.js';

export interface FleetParameters {
  nodeCounts: number[];
  /** Warm sessions per node (upstream.warmEndpoints), each to its own endpoint. */
  sessionsPerNode: number;
  /** How long new connections fail after the loss; 0 is a failover where they pass at once. */
  outagesMs: number[];
  jitterModes: JitterMode[];
  timings: FleetTimings;
  /** Bin width of the handshake time series. */
  binMs: number;
  /** The node count whose time series the chart shows. */
  chartNodes: number;
  /** Length of the simulated idle period for the PING and probe counts. */
  steadyWindowMs: number;
}

export const FULL_FLEET_PARAMETERS: FleetParameters = {
  nodeCounts: [1000, 2000, 5000, 10_000],
  sessionsPerNode: 2,
  outagesMs: [0, 30_000],
  jitterModes: ['full', 'fixed'],
  timings: STALLGUARD_DEFAULT_TIMINGS,
  binMs: 100,
  chartNodes: 10_000,
  steadyWindowMs: 60_000,
};

export const QUICK_FLEET_PARAMETERS: FleetParameters = {
  ...FULL_FLEET_PARAMETERS,
  nodeCounts: [100, 1000],
  outagesMs: [0, 5000],
  chartNodes: 1000,
  steadyWindowMs: 10_000,
};

const JITTER_LABELS: Record<JitterMode, string> = {
  full: 'full jitter (stallguard): delay uniform in [0, min(max, base·2^(n-1)))',
  fixed: 'fixed delay: min(max, base·2^(n-1)), no random draw',
};
const JITTER_COLORS: Record<JitterMode, string> = { full: '#1f77b4', fixed: '#d62728' };

/** The reconnect runs without their time series, for the summary table. */
export type ReconnectSummary = Omit<ReconnectOutcome, 'handshakesPerBin'>;

export const fleetScenario: Scenario = {
  name: 'fleet',
  description: 'simulated fleet of 1,000-10,000 nodes losing the balancer: TLS handshakes/s at the API servers, PING and probe load',
  tools: [],

  async run(context: ScenarioContext): Promise<ScenarioReport> {
    const parameters = context.quick ? QUICK_FLEET_PARAMETERS : FULL_FLEET_PARAMETERS;
    const random = new SeededRandom(context.seed);
    const draw = () => random.next();

    const outcomes: ReconnectOutcome[] = [];
    for (const outageMs of parameters.outagesMs) {
      for (const nodes of parameters.nodeCounts) {
        for (const jitter of parameters.jitterModes) {
          const outcome = simulateReconnect({ nodes, sessionsPerNode: parameters.sessionsPerNode, jitter, outageMs }, parameters.timings, draw, parameters.binMs);
          outcomes.push(outcome);
          context.log.info({ nodes, jitter, outageMs, peakPerSecond: outcome.peakPerSecond, reconnectedMs: outcome.reconnectedMs }, 'reconnect simulated');
        }
      }
    }

    const steady: SteadyLoad[] = parameters.nodeCounts.map((nodes) => simulateSteadyLoad(nodes, parameters.sessionsPerNode, parameters.timings, draw, parameters.steadyWindowMs));

    return {
      parameters: { ...parameters, jitterDescriptions: JITTER_LABELS },
      reconnects: outcomes.map(({ handshakesPerBin: _series, ...summary }) => summary),
      series: outcomes
        .filter((outcome) => outcome.nodes === parameters.chartNodes)
        .map((outcome) => ({ nodes: outcome.nodes, jitter: outcome.jitter, outageMs: outcome.outageMs, binMs: outcome.binMs, handshakesPerBin: outcome.handshakesPerBin })),
      steady,
      invariants: checkFleetInvariants(outcomes, parameters),
      attachments: { svg: renderFleetChart(outcomes, parameters) },
    };
  },

  format(report: ScenarioReport): string {
    const lines = ['reconnect after losing the balancer: peak handshakes/s, 99 % and all reconnected (s)'];
    for (const entry of report.reconnects as ReconnectSummary[]) {
      lines.push(
        `  outage ${(entry.outageMs / 1000).toFixed(0).padStart(3)} s  ${String(entry.nodes).padStart(6)} nodes  ${entry.jitter.padEnd(6)}` +
          `${String(entry.peakPerSecond).padStart(9)}/s  ${(entry.reconnectedMs.p99 / 1000).toFixed(1).padStart(6)}  ${(entry.reconnectedMs.all / 1000).toFixed(1).padStart(6)}`,
      );
    }
    lines.push('steady load of an idle fleet: PINGs/s, probes/s');
    for (const entry of report.steady as SteadyLoad[]) {
      lines.push(`  ${String(entry.nodes).padStart(6)} nodes ${String(entry.pingsPerSecond).padStart(10)} ${String(entry.probesPerSecond).padStart(10)}`);
    }
    return lines.join('\n');
  },
};

/**
 * Checks what the model must keep whatever its figures: the time series counts every session
 * exactly once, its first handshake falls in or after the bin where the outage ends, and both
 * jitter modes count the same number of sessions.
 */
export function checkFleetInvariants(outcomes: readonly ReconnectOutcome[], parameters: FleetParameters): Record<string, boolean> {
  const handshakes = (outcome: ReconnectOutcome) => outcome.handshakesPerBin.reduce((sum, count) => sum + count, 0);
  return {
    everyRunSimulated: outcomes.length === parameters.nodeCounts.length * parameters.outagesMs.length * parameters.jitterModes.length,
    everySessionReconnectedOnce: outcomes.every((outcome) => handshakes(outcome) === outcome.nodes * outcome.sessionsPerNode),
    noHandshakeDuringOutage: outcomes.every((outcome) => {
      const firstBin = outcome.handshakesPerBin.findIndex((count) => count > 0);
      return firstBin * outcome.binMs >= Math.floor(outcome.outageMs / outcome.binMs) * outcome.binMs;
    }),
    equalSessionCounts: parameters.outagesMs.every((outageMs) =>
      parameters.nodeCounts.every((nodes) => new Set(outcomes.filter((outcome) => outcome.outageMs === outageMs && outcome.nodes === nodes).map(handshakes)).size === 1),
    ),
  };
}

function renderFleetChart(outcomes: readonly ReconnectOutcome[], parameters: FleetParameters): string {
  const panels = parameters.outagesMs.map((outageMs) => ({
    title: outageMs === 0 ? 'failover: new connections pass at once' : `balancer out for ${outageMs / 1000} s`,
    series: parameters.jitterModes.map((jitter) => {
      const outcome = outcomes.find((candidate) => candidate.outageMs === outageMs && candidate.nodes === parameters.chartNodes && candidate.jitter === jitter)!;
      const perSecond = 1000 / outcome.binMs;
      return {
        name: jitter === 'full' ? 'full jitter (stallguard)' : 'fixed delay (no jitter)',
        color: JITTER_COLORS[jitter],
        points: outcome.handshakesPerBin.map((count, bin): [number, number] => [((bin + 0.5) * outcome.binMs) / 1000, count * perSecond]),
      };
    }),
  }));

  return renderLineChart({
    title: `New TLS handshakes at the API servers: ${parameters.chartNodes.toLocaleString('en-US')} nodes × ${parameters.sessionsPerNode} sessions lose the balancer at t = 0 (simulated)`,
    xLabel: 'seconds after the loss',
    yLabel: `handshakes per second (${parameters.binMs} ms bins)`,
    panels,
  });
}
