/** Finds the external programs a scenario needs and reads their versions for the result file. */
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { ToolMissingError } from './errors.js';

export type ToolName = 'haproxy' | 'h2load' | 'nginx';

// Debian installs haproxy and nginx into /usr/sbin, which is not on every user's PATH.
const EXTRA_DIRECTORIES = ['/usr/sbin', '/usr/local/sbin'];

/** Returns the absolute path of an executable `name` on PATH or in the sbin directories, or undefined. */
export function findTool(name: ToolName): string | undefined {
  const directories = [...(process.env.PATH ?? '').split(path.delimiter).filter((dir) => dir !== ''), ...EXTRA_DIRECTORIES];
  for (const directory of directories) {
    const candidate = path.join(directory, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}

/** Returns the paths of every tool in `names`, or throws ToolMissingError listing those not found. */
export function requireTools<T extends ToolName>(names: readonly T[], scenario: string): Record<T, string> {
  const found = {} as Record<T, string>;
  const missing: string[] = [];
  for (const name of names) {
    const location = findTool(name);
    if (location === undefined) missing.push(name);
    else found[name] = location;
  }

  if (missing.length > 0) throw new ToolMissingError(missing, scenario);
  return found;
}

/** Returns the first line of a tool's version output, or undefined when the tool is missing or fails. */
export function toolVersion(name: ToolName): string | undefined {
  const location = findTool(name);
  if (location === undefined) return undefined;

  const flag = name === 'h2load' ? '--version' : '-v';
  // nginx prints its version on stderr, so both streams are read.
  const result = spawnSync(location, [flag], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 });
  return firstLine(`${result.stdout ?? ''}\n${result.stderr ?? ''}`);
}

function firstLine(text: string): string | undefined {
  const line = text.split('\n').find((candidate) => candidate.trim() !== '');
  return line?.trim();
}
