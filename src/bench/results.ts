/** Writes one scenario's result as JSON into the output directory. */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Writes `result` to DIR/<scenario>-<UTC date and time>.json and returns the path. The time has
 * seconds, so that two runs on one day do not overwrite each other.
 */
export function writeResult(dir: string, scenario: string, startedAt: Date, result: object): string {
  mkdirSync(dir, { recursive: true });
  const stamp = startedAt.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/:/g, '');
  const file = path.join(dir, `${scenario}-${stamp}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  return file;
}
