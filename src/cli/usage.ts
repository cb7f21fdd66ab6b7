import { CONFIG_KEYS } from '../config/schema.js';

const COMMANDS: Array<[string, string]> = [
  ['run', 'load the configuration and start the proxy; SIGTERM or SIGINT drains and exits 0, a second signal exits at once'],
  ['check-config', 'print the effective configuration as YAML with secrets redacted (exit 0), or every invalid key (exit 1)'],
  ['version', 'print the stallguard version'],
  ['help', 'print this text (also --help)'],
];

function describeDefault(value: unknown): string {
  if (Array.isArray(value)) {
    return value.length === 0 ? 'none' : value.join(',');
  }
  return value === '' ? 'unset' : String(value);
}

/** Builds the `stallguard help` text from the schema, so every key is listed with its unit and default. */
export function buildUsage(): string {
  const lines = [
    'stallguard: node-local HTTP/2 proxy between kubelet and the Kubernetes API servers that evicts stalled sessions.',
    '',
    'Usage:',
    '  stallguard run [--config FILE] [options]',
    '  stallguard check-config [--config FILE] [options]',
    '  stallguard version',
    '  stallguard help',
    '',
    'Commands:',
    ...COMMANDS.map(([name, text]) => `  ${name.padEnd(14)}${text}`),
    '',
    'Options. Each one overrides the environment variable shown, which overrides the file key of the',
    'same name, which overrides the default. Durations take a unit: 500ms, 2s, 1m, 1h30m.',
    '',
    '  --config FILE',
    '      YAML or JSON configuration file (JSON when the name ends in .json or the text starts with "{").',
  ];

  for (const spec of CONFIG_KEYS) {
    // A boolean flag alone means true, so its value is optional.
    const usage = typeof spec.default === 'boolean' ? `${spec.flag}[=true|false]` : `${spec.flag} ${spec.unit}`;
    lines.push(`  ${usage}`);
    lines.push(`      ${spec.doc}`);
    lines.push(`      default: ${describeDefault(spec.default)}; file key: ${spec.path}; environment: ${spec.env}`);
  }

  lines.push('', 'Exit status: 0 on success, 1 on an invalid configuration or a failed start, 2 on an unknown command.');
  return `${lines.join('\n')}\n`;
}
