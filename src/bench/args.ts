/** The command line of `npm run bench`. */
import path from 'node:path';
import { BenchUsageError } from './errors.js';

export interface BenchOptions {
  /** Scenario names in the order given; every scenario when none was named. */
  scenarios: string[];
  /** Repetitions per scenario; undefined uses each scenario's default. */
  repeat: number | undefined;
  quick: boolean;
  /** Directory for the result files. */
  out: string;
  /** Seed of the random incident moments; a random one when not given. */
  seed: number;
}

export type ParsedArgs = { help: true } | { help: false; options: BenchOptions };

export const DEFAULT_OUT_DIR = path.join('bench', 'results');

/** Parses argv (without node and the script); throws BenchUsageError on invalid input. */
export function parseBenchArgs(argv: readonly string[], knownScenarios: readonly string[]): ParsedArgs {
  const options: BenchOptions = {
    scenarios: [],
    repeat: undefined,
    quick: false,
    out: DEFAULT_OUT_DIR,
    seed: Math.floor(Math.random() * 2 ** 31),
  };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = (): string => {
      const next = inline ?? argv[++i];
      if (next === undefined || next === '') throw new BenchUsageError(`${flag} needs a value`);
      return next;
    };

    switch (flag) {
      case '--help':
      case '-h':
        return { help: true };
      case '--quick':
        options.quick = true;
        break;
      case '--repeat':
        options.repeat = parsePositiveInteger(flag, value());
        break;
      case '--seed':
        options.seed = parseSeed(value());
        break;
      case '--out':
        options.out = value();
        break;
      default:
        if (flag.startsWith('-')) throw new BenchUsageError(`unknown option ${JSON.stringify(flag)}`);
        if (!knownScenarios.includes(flag)) {
          throw new BenchUsageError(`unknown scenario ${JSON.stringify(flag)}; the scenarios are ${knownScenarios.join(', ')}`);
        }
        if (!options.scenarios.includes(flag)) options.scenarios.push(flag);
    }
  }

  if (options.scenarios.length === 0) options.scenarios = [...knownScenarios];
  return { help: false, options };
}

function parsePositiveInteger(flag: string, raw: string): number {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1 || value > 1000) throw new BenchUsageError(`${flag} must be an integer from 1 to 1000, got ${JSON.stringify(raw)}`);
  return value;
}

function parseSeed(raw: string): number {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** 32) throw new BenchUsageError(`--seed must be an integer from 0 to 4294967295, got ${JSON.stringify(raw)}`);
  return value;
}

export function buildBenchUsage(scenarios: ReadonlyArray<{ name: string; description: string }>): string {
  const nameWidth = Math.max(8, ...scenarios.map((scenario) => scenario.name.length)) + 2;
  return [
    'Usage: npm run bench -- [scenario...] [--repeat N] [--quick] [--out DIR] [--seed N]',
    '',
    'Runs the named scenarios (all when none is named) and writes one JSON result per scenario',
    'to DIR/<scenario>-<UTC date and time>.json. Every server and child process listens on',
    '127.0.0.1 only and is stopped on exit, on an error and on Ctrl-C.',
    '',
    'Scenarios:',
    ...scenarios.map((scenario) => `  ${scenario.name.padEnd(nameWidth)}${scenario.description}`),
    '',
    'Options:',
    "  --repeat N   repetitions per scenario (integer 1-1000); default: each scenario's own;",
    '               profile, scale and fleet run once and ignore it',
    '  --quick      tiny counts and scaled-down timeouts for a smoke test of a few seconds; its figures',
    '               check invariants only and are not comparable with a full run',
    `  --out DIR    directory for the result files; default: ${DEFAULT_OUT_DIR}`,
    '  --seed N     seed of the random draws (incident moments, the replica to blackhole, the fleet',
    '               model\'s delays), an integer, to replay a run; default: random',
    '  --help       print this text',
    '',
  ].join('\n');
}
