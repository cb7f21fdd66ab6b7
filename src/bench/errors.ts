/**
 * Errors of the benchmark runner. They extend the product's StallguardError so that every failure
 * carries a stable code, but their codes start with SG_BENCH_ because only `npm run bench` and its
 * tests raise them.
 */
import { StallguardError } from '../errors.js';

/** An invalid command line: unknown scenario, unknown option or a value out of range. */
export class BenchUsageError extends StallguardError {
  constructor(message: string) {
    super('SG_BENCH_USAGE', 'config', `${message}; run "npm run bench -- --help" for the options`);
  }
}

/** A program that a scenario needs (haproxy, h2load, nginx) is not on PATH. */
export class ToolMissingError extends StallguardError {
  readonly tools: string[];

  constructor(tools: string[], scenario: string) {
    super(
      'SG_BENCH_TOOL_MISSING',
      'config',
      `scenario ${scenario} needs ${tools.join(', ')} on PATH, but ${tools.length === 1 ? 'it was' : 'they were'} not found; ` +
        'on Debian install the haproxy, nghttp2-client and nginx packages',
    );
    this.tools = tools;
  }
}

/** A child process (haproxy, nginx, h2load) failed to start, exited early or failed. */
export class ChildProcessError extends StallguardError {
  constructor(name: string, message: string, output: string) {
    const tail = output.trim() === '' ? '' : `; its last output:\n${output.trim()}`;
    super('SG_BENCH_CHILD_PROCESS', 'local', `${name}: ${message}${tail}`);
  }
}

/** The run was interrupted (SIGINT, SIGTERM) before it finished. */
export class BenchAbortedError extends StallguardError {
  constructor(reason: string) {
    super('SG_BENCH_ABORTED', 'local', `benchmark aborted: ${reason}`);
  }
}
