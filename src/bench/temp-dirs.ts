/**
 * The runner's temporary directories (configuration files, certificates, h2load logs). Each is
 * removed after its scenario, and `removeAllSync()` removes what is left when the process exits
 * early, from an uncaught error or a second Ctrl-C.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export class TemporaryDirectories {
  readonly #directories = new Set<string>();

  /** Creates a directory under the OS temporary directory, named `prefix` plus random characters. */
  create(prefix: string): string {
    const directory = mkdtempSync(path.join(os.tmpdir(), prefix));
    this.#directories.add(directory);
    return directory;
  }

  remove(directory: string): void {
    rmSync(directory, { recursive: true, force: true });
    this.#directories.delete(directory);
  }

  /** Removes every directory not removed yet; synchronous, for a process 'exit' handler. */
  removeAllSync(): void {
    for (const directory of this.#directories) this.remove(directory);
  }
}
