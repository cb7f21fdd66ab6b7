import { constants } from 'node:os';
import type { Logger } from 'pino';
import { loadConfig } from '../config/load.js';
import { redactConfig } from '../config/redact.js';
import type { Config } from '../config/types.js';
import { ConfigError } from '../errors.js';
import { createLogger } from '../log/logger.js';
import type { RunningStallguard } from '../server.js';

/** Process services that `stallguard run` uses, passed in so that tests can supply fakes. */
export interface RunDependencies {
  start(config: Config, logger: Logger): Promise<RunningStallguard>;
  createLogger(level: Config['log']['level']): Logger;
  /** Registers a signal handler; process.on in production. */
  onSignal(signal: 'SIGTERM' | 'SIGINT', handler: () => void): void;
  exit(code: number): void;
  writeError(text: string): void;
}

/** Returns the dependencies of a real process: stdout logging, process signals and process.exit. */
export function processDependencies(start: RunDependencies['start']): RunDependencies {
  return {
    start,
    createLogger: (level) => createLogger(level),
    onSignal: (signal, handler) => {
      process.on(signal, handler);
    },
    exit: (code) => process.exit(code),
    writeError: (text) => {
      process.stderr.write(text);
    },
  };
}

/** Formats a ConfigError for a terminal: one problem per line. */
export function formatConfigError(err: ConfigError): string {
  const count = err.problems.length === 1 ? '1 problem' : `${err.problems.length} problems`;
  return `invalid configuration (${count}):\n${err.problems.map((problem) => `  ${problem}\n`).join('')}`;
}

/**
 * Runs `stallguard run`: loads the configuration, logs it redacted, starts the proxy and closes it
 * on the first SIGTERM or SIGINT. A second signal exits at once with 128 + the signal number, the
 * shell convention, without waiting for the drain.
 */
export async function runCommand(argv: string[], env: NodeJS.ProcessEnv, deps: RunDependencies): Promise<void> {
  let loaded;
  try {
    loaded = loadConfig({ argv, env });
  } catch (err) {
    if (err instanceof ConfigError) {
      deps.writeError(formatConfigError(err));
      deps.exit(1);
      return;
    }
    throw err;
  }

  const logger = deps.createLogger(loaded.config.log.level);
  for (const warning of loaded.warnings) {
    logger.warn({ reason: warning }, 'configuration warning');
  }
  logger.info(
    { config: redactConfig(loaded.config), configFile: loaded.configFile, sources: loaded.sources },
    'effective configuration',
  );

  let running: RunningStallguard | undefined;
  let stopping = false;

  const handleSignal = (signal: 'SIGTERM' | 'SIGINT'): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal, exiting without waiting for the drain');
      deps.exit(128 + constants.signals[signal]);
      return;
    }
    stopping = true;

    if (running === undefined) {
      // The signal arrived while start() was still running; exiting releases whatever it opened.
      logger.info({ signal }, 'signal during startup, exiting');
      deps.exit(0);
      return;
    }

    logger.info({ signal }, 'shutdown started');
    running.close().then(
      () => {
        logger.info('shutdown complete');
        deps.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        deps.exit(1);
      },
    );
  };
  deps.onSignal('SIGTERM', () => handleSignal('SIGTERM'));
  deps.onSignal('SIGINT', () => handleSignal('SIGINT'));

  try {
    running = await deps.start(loaded.config, logger);
  } catch (err) {
    logger.fatal({ err }, 'start failed');
    deps.exit(1);
    return;
  }
  logger.info({ addresses: running.addresses }, 'stallguard started');
}
