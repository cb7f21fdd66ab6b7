#!/usr/bin/env node
/**
 * `npm run bench [scenario...] [--repeat N] [--quick] [--out DIR] [--seed N]`: see args.ts.
 *
 * Progress goes to stderr as pino JSON lines, the summaries and result paths to stdout. Exit
 * status: 0 when every invariant held, 1 when one did not or the run failed, 2 on a usage error,
 * 130 after Ctrl-C (SIGINT) and 143 after SIGTERM. Child processes are stopped on every one of
 * these paths; a second signal kills them at once and exits.
 */
import pino from 'pino';
import { buildBenchUsage, parseBenchArgs } from './args.js';
import { BenchAbortedError, BenchUsageError } from './errors.js';
import { ProcessSupervisor } from './processes.js';
import { runBenchmarks } from './runner.js';
import { TemporaryDirectories } from './temp-dirs.js';
import { failoverScenario } from './scenarios/failover.js';
import { fleetScenario } from './scenarios/fleet.js';
import { footprintScenario } from './scenarios/footprint.js';
import { latencyScenario } from './scenarios/latency.js';
import { profileScenario } from './scenarios/profile.js';
import { replicaBlackholeScenario } from './scenarios/replica-blackhole.js';
import { scaleScenario } from './scenarios/scale.js';

const SCENARIOS = [failoverScenario, latencyScenario, profileScenario, replicaBlackholeScenario, footprintScenario, scaleScenario, fleetScenario];
const EXIT_STATUS = { invariantFailed: 1, usage: 2, SIGINT: 130, SIGTERM: 143 } as const;

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseBenchArgs(argv, SCENARIOS.map((scenario) => scenario.name));
  } catch (err) {
    if (!(err instanceof BenchUsageError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return EXIT_STATUS.usage;
  }
  if (parsed.help) {
    process.stdout.write(buildBenchUsage(SCENARIOS));
    return 0;
  }

  const log = pino({ base: { name: 'stallguard-bench' }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination(2));
  const supervisor = new ProcessSupervisor(log);
  const directories = new TemporaryDirectories();
  const controller = new AbortController();
  let interruptedBy: 'SIGINT' | 'SIGTERM' | undefined;

  const onSignal = (signal: 'SIGINT' | 'SIGTERM') => {
    if (interruptedBy !== undefined) {
      supervisor.killAllSync();
      process.exit(EXIT_STATUS[signal]);
    }
    interruptedBy = signal;
    log.warn({ signal }, 'interrupted; stopping child processes (send it again to kill them at once)');
    controller.abort(new BenchAbortedError(signal));
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  // The last resort when the process ends without the cleanup above: an uncaught error or process.exit().
  process.on('exit', () => {
    supervisor.killAllSync();
    directories.removeAllSync();
  });

  try {
    const outcomes = await runBenchmarks(parsed.options, {
      scenarios: SCENARIOS,
      supervisor,
      directories,
      log,
      signal: controller.signal,
      command: ['npm run bench --', ...argv].join(' '),
    });

    for (const outcome of outcomes) {
      process.stdout.write(`\n${outcome.scenario}: ${outcome.file}\n${outcome.summary}\n`);
      if (outcome.failedInvariants.length > 0) process.stdout.write(`invariants that did not hold: ${outcome.failedInvariants.join(', ')}\n`);
    }
    return outcomes.some((outcome) => outcome.failedInvariants.length > 0) ? EXIT_STATUS.invariantFailed : 0;
  } catch (err) {
    if (interruptedBy !== undefined) return EXIT_STATUS[interruptedBy];
    log.error({ err }, 'benchmark failed');
    process.stderr.write(`benchmark failed: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    await supervisor.stopAll();
  }
}

process.exitCode = await main(process.argv.slice(2));
