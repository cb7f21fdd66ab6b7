#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { loadConfig } from '../config/load.js';
import { renderConfigYaml } from '../config/redact.js';
import { ConfigError, describeError } from '../errors.js';
import { formatConfigError, processDependencies, runCommand } from './run.js';
import { buildUsage } from './usage.js';

// Exit status 2 is the shell convention for a usage error, kept apart from 1 (invalid configuration).
const EXIT_USAGE = 2;

function readVersion(): string {
  // src/cli and dist/cli are both two levels below the package root.
  const packageJson = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return packageJson.version;
}

function checkConfig(argv: string[], env: NodeJS.ProcessEnv): number {
  try {
    const loaded = loadConfig({ argv, env });
    for (const warning of loaded.warnings) {
      process.stderr.write(`warning: ${warning}\n`);
    }
    process.stdout.write(renderConfigYaml(loaded.config));
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(formatConfigError(err));
      return 1;
    }
    throw err;
  }
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;

  if (command === 'help' || command === '--help' || command === '-h' || rest.includes('--help')) {
    process.stdout.write(buildUsage());
    return;
  }

  switch (command) {
    case 'run': {
      // Imported here so that help, version and check-config work without loading the proxy.
      const { startStallguard } = await import('../server.js');
      await runCommand(rest, process.env, processDependencies(startStallguard));
      return;
    }
    case 'check-config':
      process.exitCode = checkConfig(rest, process.env);
      return;
    case 'status': {
      const { runStatusCommand } = await import('./status.js');
      process.exitCode = await runStatusCommand(rest, {
        env: process.env,
        write: (text) => process.stdout.write(text),
        writeError: (text) => process.stderr.write(text),
      });
      return;
    }
    case 'kubeconfig': {
      const { runKubeconfigCommand } = await import('./kubeconfig.js');
      process.exitCode = runKubeconfigCommand(rest, {
        env: process.env,
        write: (text) => process.stdout.write(text),
        writeError: (text) => process.stderr.write(text),
      });
      return;
    }
    case 'version':
    case '--version':
      process.stdout.write(`stallguard ${readVersion()}\n`);
      return;
    case undefined:
      process.stderr.write(`missing command; run "stallguard help" for the commands\n\n${buildUsage()}`);
      process.exitCode = EXIT_USAGE;
      return;
    default:
      process.stderr.write(`unknown command "${command}"; the commands are run, check-config, status, kubeconfig, version and help\n`);
      process.exitCode = EXIT_USAGE;
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`stallguard failed: ${describeError(err)}\n`);
  process.exit(1);
});
