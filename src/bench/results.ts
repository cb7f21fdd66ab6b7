/** Writes one scenario's result as JSON, and its attachments, into the output directory. */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Writes `result` to DIR/<scenario>-<UTC date and time>.json and returns the path. The time has
 * seconds, so that two runs on one day do not overwrite each other.
 */
export function writeResult(dir: string, scenario: string, startedAt: Date, result: object): string {
  mkdirSync(dir, { recursive: true });
  const file = resultPath(dir, scenario, startedAt, 'json');
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  return file;
}

/** Writes each attachment (extension → text) beside the result and returns extension → path. */
export function writeAttachments(dir: string, scenario: string, startedAt: Date, attachments: Record<string, string>): Record<string, string> {
  mkdirSync(dir, { recursive: true });
  const written: Record<string, string> = {};
  for (const [extension, text] of Object.entries(attachments)) {
    if (!/^[a-z0-9]+$/.test(extension) || extension === 'json') throw new Error(`invalid attachment extension ${JSON.stringify(extension)}`);
    written[extension] = resultPath(dir, scenario, startedAt, extension);
    writeFileSync(written[extension], text);
  }
  return written;
}

function resultPath(dir: string, scenario: string, startedAt: Date, extension: string): string {
  const stamp = startedAt.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/:/g, '');
  return path.join(dir, `${scenario}-${stamp}.${extension}`);
}
