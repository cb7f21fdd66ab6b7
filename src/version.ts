import fs from 'node:fs';

/** The package version, read from package.json one level above src/ or dist/. */
export const VERSION: string = (() => {
  try {
    const raw = fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8');
    return (JSON.parse(raw) as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();
