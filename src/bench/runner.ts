/**
 * Runs scenarios one after another and writes a result file for each. A scenario's child
 * processes are stopped and its temporary directory removed in a `finally`, before the result is
 * written, so the file's `processes` section shows whether each process ended.
 */
import type { Logger } from 'pino';
import type { BenchOptions } from './args.js';
import { describeMachine } from './machine.js';
import type { ProcessSupervisor } from './processes.js';
import { writeAttachments, writeResult } from './results.js';
import type { Scenario } from './scenario.js';
import type { TemporaryDirectories } from './temp-dirs.js';

export interface RunnerDependencies {
  scenarios: readonly Scenario[];
  supervisor: ProcessSupervisor;
  directories: TemporaryDirectories;
  log: Logger;
  signal: AbortSignal;
  /** The command line as the user typed it, for the result file. */
  command: string;
}

export interface ScenarioOutcome {
  scenario: string;
  file: string;
  /** Names of the invariants that did not hold; empty when all held. */
  failedInvariants: string[];
  summary: string;
}

export async function runBenchmarks(options: BenchOptions, deps: RunnerDependencies): Promise<ScenarioOutcome[]> {
  const machine = describeMachine();
  const outcomes: ScenarioOutcome[] = [];

  for (const name of options.scenarios) {
    const scenario = deps.scenarios.find((candidate) => candidate.name === name);
    if (scenario === undefined) throw new Error(`scenario ${name} is not registered`);
    outcomes.push(await runScenario(scenario, options, deps, machine));
  }
  return outcomes;
}

async function runScenario(
  scenario: Scenario,
  options: BenchOptions,
  deps: RunnerDependencies,
  machine: ReturnType<typeof describeMachine>,
): Promise<ScenarioOutcome> {
  const startedAt = new Date();
  const firstProcess = deps.supervisor.records.length;
  const dir = deps.directories.create(`stallguard-bench-${scenario.name}-`);
  const log = deps.log.child({ scenario: scenario.name });
  log.info({ quick: options.quick, repeat: options.repeat, seed: options.seed }, 'scenario started');

  let report;
  try {
    report = await scenario.run({
      quick: options.quick,
      repeat: options.repeat,
      seed: options.seed,
      signal: deps.signal,
      supervisor: deps.supervisor,
      log,
      dir,
      outDir: options.out,
    });
  } finally {
    await deps.supervisor.stopAll();
    deps.directories.remove(dir);
  }

  const processes = deps.supervisor.records.slice(firstProcess);
  const invariants = { ...report.invariants, allProcessesEnded: processes.every((process) => process.ended) };
  const { attachments, ...sections } = report;
  const attachmentFiles = attachments === undefined ? undefined : writeAttachments(options.out, scenario.name, startedAt, attachments);
  const file = writeResult(options.out, scenario.name, startedAt, {
    scenario: scenario.name,
    command: deps.command,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    quick: options.quick,
    seed: options.seed,
    machine,
    ...sections,
    invariants,
    attachments: attachmentFiles,
    processes,
  });

  const failedInvariants = Object.entries(invariants)
    .filter(([, held]) => !held)
    .map(([invariant]) => invariant);
  log.info({ file, failedInvariants }, 'scenario finished');
  return { scenario: scenario.name, file, failedInvariants, summary: scenario.format(report) };
}
