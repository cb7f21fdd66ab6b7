#!/usr/bin/env node
/**
 * `npm run demo`: the incident reproduced on loopback. Three fake API-server replicas sit behind a
 * balancer that fails over and silently drops its connections. A kubelet-like client talking to
 * the balancer directly stalls until client-go's health check gives up, while the same client
 * through stallguard carries on. Exits 0 when the client through stallguard had no failed request.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { createLogger } from '../log/logger.js';
import { parseDemoArgs, USAGE, UsageError, type DemoOptions } from './args.js';
import { runDemo } from './run.js';
import { renderSummary } from './summary.js';

const EXIT_PASSED = 0;
const EXIT_STALLGUARD_CLIENT_FAILED = 1;
const EXIT_USAGE = 2;
const EXIT_DEMO_FAILED = 3;
const EXIT_ON_SIGNAL: Record<'SIGINT' | 'SIGTERM', number> = { SIGINT: 130, SIGTERM: 143 };
/** After cleanup the event loop should be empty; anything still open after this long is a leak. */
const EXIT_GRACE_MS = 3000;

async function main(argv: readonly string[]): Promise<number> {
  let options: DemoOptions;
  try {
    options = parseDemoArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`demo: ${err.message}\n`);
    return EXIT_USAGE;
  }
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT_PASSED;
  }

  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-demo-'));
  const logFile = path.join(logDir, 'stallguard.log');
  const logDestination = pino.destination({ dest: logFile, sync: true });
  const logger = createLogger('info', logDestination);

  const abort = new AbortController();
  let received: 'SIGINT' | 'SIGTERM' | undefined;
  const onSignal = (signal: 'SIGINT' | 'SIGTERM') => {
    // A second Ctrl-C during cleanup leaves at once.
    if (received !== undefined) process.exit(EXIT_ON_SIGNAL[signal]);
    received = signal;
    abort.abort();
  };
  const onSigint = () => onSignal('SIGINT');
  const onSigterm = () => onSignal('SIGTERM');
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);

  // A closed pipe (`npm run demo | head`) ends the run like Ctrl-C, without a stack trace.
  process.stdout.on('error', () => abort.abort());

  const output = {
    write: (text: string) => void process.stdout.write(text),
    columns: process.stdout.isTTY ? process.stdout.columns : undefined,
    isTTY: process.stdout.isTTY === true,
    color: process.stdout.isTTY === true && process.env.NO_COLOR === undefined,
  };

  try {
    const summary = await runDemo(options, { output, signal: abort.signal, logger, logFile });
    if (summary === undefined) {
      process.stdout.write(`interrupted; every server and client was stopped. stallguard's log: ${logFile}\n`);
      return EXIT_ON_SIGNAL[received ?? 'SIGINT'];
    }

    process.stdout.write(`${renderSummary(summary)}\n`);
    if (options.jsonPath !== undefined) {
      try {
        fs.writeFileSync(options.jsonPath, `${JSON.stringify(summary, null, 2)}\n`);
      } catch (err) {
        process.stderr.write(`demo: could not write the summary to ${options.jsonPath}: ${(err as Error).message}\n`);
        return EXIT_DEMO_FAILED;
      }
      process.stdout.write(`summary written to ${options.jsonPath}\n`);
    }
    return summary.passed ? EXIT_PASSED : EXIT_STALLGUARD_CLIENT_FAILED;
  } catch (err) {
    process.stderr.write(`demo: failed: ${err instanceof Error ? err.message : String(err)}; stallguard's log: ${logFile}\n`);
    return EXIT_DEMO_FAILED;
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    logDestination.end();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // The process ends on its own once every handle is closed; one still open is a bug worth naming.
    setTimeout(() => {
      const open = process.getActiveResourcesInfo().filter((resource) => resource !== 'TTYWrap');
      process.stderr.write(`demo: still open ${EXIT_GRACE_MS} ms after cleanup, exiting anyway: ${open.join(', ')}\n`);
      process.exit(code);
    }, EXIT_GRACE_MS).unref();
  },
  (err: unknown) => {
    process.stderr.write(`demo: failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(EXIT_DEMO_FAILED);
  },
);
