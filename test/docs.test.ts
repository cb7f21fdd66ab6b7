import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS } from '../src/config/schema.js';

// Keeps the reference pages in docs/ in step with the code: every configuration key with its
// schema default, every SG_ERR_ code that src/ raises, and every test that docs/faults.md cites.

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

const CONFIG_TABLE_HEADER = ['key', 'default', 'value', 'environment variable', 'flag'];
const ERROR_TABLE_HEADER = ['code', 'origin', 'raised when', 'what the client sees', 'where it shows', 'what to do'];
const FAULT_TABLE_HEADER = ['test file', 'test'];

function readRepoFile(path: string): string {
  return readFileSync(join(REPO_ROOT, path), 'utf8');
}

/** Splits a Markdown table row into trimmed cells. An escaped `\|` stays inside its cell. */
function splitRow(line: string): string[] {
  return line
    .trim()
    .slice(1, -1)
    .split(/(?<!\\)\|/)
    .map((cell) => cell.trim().replace(/\\\|/g, '|'));
}

interface TableRow {
  /** The `## ` heading above the table, or '' before the first one. */
  section: string;
  cells: string[];
}

/**
 * Returns the body rows of every table whose header row has exactly the cells in `header`, with
 * the level-2 section each row sits in. Rows of other tables are left out.
 */
function readTableRows(markdown: string, header: readonly string[]): TableRow[] {
  const rows: TableRow[] = [];
  let section = '';
  let inTable = false;

  for (const line of markdown.split('\n')) {
    if (line.startsWith('## ')) {
      section = line.slice(3).trim();
    }

    const isRow = line.trim().startsWith('|');
    if (!isRow) {
      inTable = false;
      continue;
    }

    const cells = splitRow(line);
    if (!inTable) {
      inTable = cells.length === header.length && cells.every((cell, index) => cell === header[index]);
      continue;
    }
    if (cells.every((cell) => /^:?-+:?$/.test(cell))) {
      continue;
    }
    rows.push({ section, cells });
  }
  return rows;
}

/** Returns the text inside a code cell such as `` `health.pingInterval` ``, or undefined when the cell is not one. */
function codeSpan(cell: string): string | undefined {
  const match = /^`([^`]*)`$/.exec(cell);
  return match === null ? undefined : match[1];
}

/**
 * Parses a default as docs/configuration.md writes it: `""` is the empty string, `[]` the empty
 * list, true and false are booleans, whole numbers are numbers, and anything else is a string.
 */
function parseDocumentedDefault(text: string): unknown {
  if (text === '""') {
    return '';
  }
  if (text === '[]') {
    return [];
  }
  if (text === 'true' || text === 'false') {
    return text === 'true';
  }
  if (/^\d+$/.test(text)) {
    return Number(text);
  }
  return text;
}

interface DocumentedKey {
  defaultCell: string;
  env: string | undefined;
  flag: string | undefined;
}

function readDocumentedKeys(): Map<string, DocumentedKey> {
  const keys = new Map<string, DocumentedKey>();
  for (const { cells } of readTableRows(readRepoFile('docs/configuration.md'), CONFIG_TABLE_HEADER)) {
    const [keyCell, defaultCell, , envCell, flagCell] = cells;
    keys.set(codeSpan(keyCell!) ?? keyCell!, { defaultCell: defaultCell!, env: codeSpan(envCell!), flag: codeSpan(flagCell!) });
  }
  return keys;
}

/** Lists every `.ts` file under src/, as paths relative to the repository root. */
function sourceFiles(): string[] {
  return (readdirSync(join(REPO_ROOT, 'src'), { recursive: true }) as string[])
    .filter((path) => path.endsWith('.ts'))
    .map((path) => join('src', path));
}

/**
 * Returns the names of the tests declared in a test file: the string literal that is the first
 * argument of `it(...)`, `test(...)` or a variant such as `it.skipIf(...)(...)`. Names built by
 * `it.each` tables are left out, because their placeholders are filled in at run time.
 */
function declaredTestNames(source: string): Set<string> {
  const names = new Set<string>();
  const call = /\b(?:it|test)\b[^\n]*?\(\s*(['"`])((?:\\.|(?!\1)[^\\\n])*)\1\s*,/g;
  for (const match of source.matchAll(call)) {
    names.add(match[2]!.replace(/\\(.)/g, '$1'));
  }
  return names;
}

describe('docs/configuration.md', () => {
  const documented = readDocumentedKeys();

  it('documents every configuration key', () => {
    const missing = CONFIG_KEYS.map((spec) => spec.path).filter((path) => !documented.has(path));

    expect(missing).toEqual([]);
  });

  it('documents no key the schema lacks', () => {
    const known = new Set(CONFIG_KEYS.map((spec) => spec.path));
    const unknown = [...documented.keys()].filter((path) => !known.has(path));

    expect(unknown).toEqual([]);
  });

  it('writes the schema default of every key', () => {
    const mismatches: string[] = [];
    for (const spec of CONFIG_KEYS) {
      const entry = documented.get(spec.path);
      if (entry === undefined) {
        continue;
      }

      const text = codeSpan(entry.defaultCell);
      if (text === undefined) {
        mismatches.push(`${spec.path}: default cell ${entry.defaultCell} is not written in backticks`);
        continue;
      }
      const parsed = parseDocumentedDefault(text);
      if (JSON.stringify(parsed) !== JSON.stringify(spec.default)) {
        mismatches.push(`${spec.path}: documented ${JSON.stringify(parsed)}, schema ${JSON.stringify(spec.default)}`);
      }
    }

    expect(mismatches).toEqual([]);
  });

  it('names the environment variable and flag of every key', () => {
    const mismatches: string[] = [];
    for (const spec of CONFIG_KEYS) {
      const entry = documented.get(spec.path);
      if (entry === undefined) {
        continue;
      }

      if (entry.env !== spec.env) {
        mismatches.push(`${spec.path}: environment variable documented ${entry.env}, schema ${spec.env}`);
      }
      if (entry.flag !== spec.flag) {
        mismatches.push(`${spec.path}: flag documented ${entry.flag}, schema ${spec.flag}`);
      }
    }

    expect(mismatches).toEqual([]);
  });
});

describe('docs/errors.md', () => {
  it('lists every SG_ERR_ code raised in src', () => {
    const raised = new Set<string>();
    for (const file of sourceFiles()) {
      for (const match of readRepoFile(file).matchAll(/\bSG_ERR_[A-Z0-9_]+/g)) {
        raised.add(match[0]);
      }
    }
    const rows = readTableRows(readRepoFile('docs/errors.md'), ERROR_TABLE_HEADER);
    const documented = new Set(rows.map(({ cells }) => codeSpan(cells[0]!)));

    const missing = [...raised].filter((code) => !documented.has(code)).sort();

    expect(raised.size).toBeGreaterThan(0);
    expect(missing).toEqual([]);
  });
});

describe('docs/faults.md', () => {
  const rows = readTableRows(readRepoFile('docs/faults.md'), FAULT_TABLE_HEADER);

  it('cites only tests that exist in the named file', () => {
    const namesByFile = new Map<string, Set<string>>();
    const stale: string[] = [];

    for (const { section, cells } of rows) {
      const file = codeSpan(cells[0]!) ?? cells[0]!;
      const name = cells[1]!;
      if (!namesByFile.has(file)) {
        let source = '';
        try {
          source = readRepoFile(file);
        } catch {
          // A missing file is reported below through its names, which cannot be found.
        }
        namesByFile.set(file, declaredTestNames(source));
      }

      if (!namesByFile.get(file)!.has(name)) {
        stale.push(`${section}: ${file}: "${name}"`);
      }
    }

    expect(rows.length).toBeGreaterThan(0);
    expect(stale).toEqual([]);
  });

  it('cites a test for every scenario', () => {
    const markdown = readRepoFile('docs/faults.md');
    const scenarios = [...markdown.matchAll(/^## (B\d+):/gm)].map((match) => match[1]!);
    const cited = new Set(rows.map(({ section }) => /^(B\d+):/.exec(section)?.[1]));

    const uncovered = scenarios.filter((id) => !cited.has(id));

    expect(scenarios.length).toBeGreaterThan(0);
    expect(uncovered).toEqual([]);
  });
});
