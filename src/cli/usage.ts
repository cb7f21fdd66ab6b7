import { CONFIG_KEYS } from '../config/schema.js';

const COMMANDS: Array<[string, string]> = [
  ['run', 'load the configuration and start the proxy; SIGTERM or SIGINT drains and exits 0, a second signal exits at once'],
  ['check-config', 'print the effective configuration as YAML with secrets redacted (exit 0), or every invalid key (exit 1)'],
  ['status', 'print the endpoints, identity, certificate expiry and totals of a running stallguard, read from its /state'],
  ['kubeconfig', 'write a kubeconfig (mode 0600) that points a local client at the TLS listener, with its credentials named by path'],
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
    '  stallguard status [--config FILE | --metrics-address host:port] [--output table|json]',
    '  stallguard kubeconfig --out FILE (--client-cert FILE --client-key FILE | --token-file FILE) [--certificate-authority FILE] [--config FILE]',
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

  lines.push(
    '',
    'Options of status. It reads /state from the metrics address of a running stallguard. An address',
    'taken from the configuration must be loopback (a wildcard 0.0.0.0 or :: is read on loopback);',
    'any other host is read only when given with --metrics-address.',
    '',
    '  --config FILE',
    '      reads metrics.address from this file (and the STALLGUARD_ environment variables).',
    '  --metrics-address host:port',
    `      the metrics address to read; default: metrics.address from --config, else ${describeDefault(CONFIG_KEYS.find((spec) => spec.path === 'metrics.address')?.default)}.`,
    '  --output table|json',
    '      table (default) for people; json prints the /state document unchanged, for scripts.',
  );

  lines.push(
    '',
    'Options of kubeconfig. The server is listen.address from --config (a wildcard address becomes loopback).',
    '',
    '  --out FILE',
    '      the kubeconfig to write, with mode 0600; an existing file is replaced.',
    '  --client-cert FILE, --client-key FILE',
    '      client certificate and key the client presents; named by path, so a rotated pair is read again.',
    '  --token-file FILE',
    '      file with a bearer token the client sends instead (tokenFile); not together with --client-cert.',
    '  --certificate-authority FILE',
    '      CA that verifies the listener; default: stateDir/tls/ca.crt, the local CA. Required when listen.tls.cert is set.',
    '  --config FILE',
    '      the configuration stallguard runs with; default: the built-in defaults.',
  );

  lines.push('', 'Exit status: 0 on success; 1 on an invalid configuration (unknown options of run and check-config included, since options are configuration keys), a failed start or an unreachable stallguard (status); 2 on an unknown command or a usage error of status and kubeconfig.');
  return `${lines.join('\n')}\n`;
}
