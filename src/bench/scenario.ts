/** The contract between the runner and one benchmark scenario. */
import type { Logger } from 'pino';
import type { ProcessSupervisor } from './processes.js';
import type { ToolName } from './tools.js';

export interface ScenarioContext {
  quick: boolean;
  /** Repetitions to run; the scenario's own default when --repeat was not given. */
  repeat: number | undefined;
  seed: number;
  /** Aborts on SIGINT or SIGTERM; scenarios stop waiting and clean up when it fires. */
  signal: AbortSignal;
  supervisor: ProcessSupervisor;
  log: Logger;
  /** A private temporary directory, removed after the scenario. */
  dir: string;
  /** The directory of the result files, for files a scenario keeps beside them (a CPU profile). */
  outDir: string;
}

/** A scenario's result: its parameters, raw figures and summary, stored in the result file as they are. */
export interface ScenarioReport {
  parameters: Record<string, unknown>;
  /** Checks that hold whatever the machine's speed; the runner fails the run when one is false. */
  invariants: Record<string, boolean>;
  /**
   * Text files to write beside the result, by file extension (`svg` becomes
   * <scenario>-<UTC date and time>.svg). The result file lists their paths instead of their text.
   */
  attachments?: Record<string, string>;
  [section: string]: unknown;
}

export interface Scenario {
  name: string;
  /** One line for --help. */
  description: string;
  tools: readonly ToolName[];
  run(context: ScenarioContext): Promise<ScenarioReport>;
  /** Formats the summary as a few lines for the terminal. */
  format(report: ScenarioReport): string;
}
