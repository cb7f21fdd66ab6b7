import { CONFIG_KEYS, type ConfigKeySpec } from './schema.js';
import { suggestClosest } from './suggest.js';

/** The config file and the key values named on the command line, before validation. */
export interface ParsedFlags {
  configFile: string | null;
  /** Flag text by key path; a repeated list flag has its values joined with commas. */
  values: Map<string, { flag: string; text: string }>;
  /** One message per unknown flag, missing value or stray argument. */
  problems: string[];
}

const FLAG_TO_SPEC: ReadonlyMap<string, ConfigKeySpec> = new Map(CONFIG_KEYS.map((spec) => [spec.flag, spec]));

const CONFIG_FLAG = '--config';

/**
 * Parses `--config FILE` and `--<key-in-kebab-case> VALUE` (or `--flag=VALUE`) arguments. A boolean
 * flag given without `=` means true, so `--listen-allow-remote` turns it on and
 * `--listen-allow-remote=false` turns it off. A repeated flag overrides the earlier one, except
 * that a repeated list flag adds its entries.
 */
export function parseFlags(argv: readonly string[]): ParsedFlags {
  const parsed: ParsedFlags = { configFile: null, values: new Map(), problems: [] };

  for (let index = 0; index < argv.length; index += 1) {
    const argument = argv[index];

    if (!argument.startsWith('--')) {
      parsed.problems.push(`unexpected argument "${argument}"; options are written as --name value or --name=value`);
      continue;
    }

    const equals = argument.indexOf('=');
    const flag = equals === -1 ? argument : argument.slice(0, equals);
    let text: string | undefined = equals === -1 ? undefined : argument.slice(equals + 1);

    const spec = FLAG_TO_SPEC.get(flag);
    if (flag !== CONFIG_FLAG && spec === undefined) {
      parsed.problems.push(describeUnknownFlag(flag));
      // Skip the value of a misspelled "--flag VALUE" too, so that it is not reported a second time.
      if (text === undefined && argv[index + 1] !== undefined && !argv[index + 1].startsWith('--')) {
        index += 1;
      }
      continue;
    }

    const isBoolean = spec !== undefined && typeof spec.default === 'boolean';
    if (text === undefined && isBoolean) {
      text = 'true';
    }
    if (text === undefined) {
      const next = argv[index + 1];
      if (next === undefined || next.startsWith('--')) {
        parsed.problems.push(`${flag} needs a value; write ${flag} VALUE or ${flag}=VALUE`);
        continue;
      }
      text = next;
      index += 1;
    }

    if (spec === undefined) {
      parsed.configFile = text;
      continue;
    }
    recordValue(parsed, spec, flag, text);
  }
  return parsed;
}

function recordValue(parsed: ParsedFlags, spec: ConfigKeySpec, flag: string, text: string): void {
  const earlier = parsed.values.get(spec.path);
  const isList = Array.isArray(spec.default);

  if (earlier !== undefined && isList) {
    parsed.values.set(spec.path, { flag, text: `${earlier.text},${text}` });
    return;
  }
  parsed.values.set(spec.path, { flag, text });
}

function describeUnknownFlag(flag: string): string {
  const known = [CONFIG_FLAG, ...CONFIG_KEYS.map((spec) => spec.flag)];
  const suggestion = suggestClosest(flag, known);
  const hint = suggestion === undefined ? 'run "stallguard help" to list the options' : `did you mean ${suggestion}?`;
  return `unknown option ${flag}; ${hint}`;
}
