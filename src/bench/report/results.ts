// Where a bench command leaves its data: one directory per run under bench-results/.
import { stringify } from "csv-stringify/sync";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

export const RESULTS_ROOT = "bench-results";

export type CsvValue = string | number | boolean | null;

/**
 * Creates `bench-results/<ISO timestamp, ':' and '.' replaced by '-'>-<command>/` under the
 * working directory (or under `root`) and returns its absolute path and the run's start time.
 */
export function createResultsDir(
  command: string,
  root: string = RESULTS_ROOT,
): { dir: string; startedAt: string } {
  if (!/^[A-Za-z0-9_-]+$/.test(command)) {
    throw new Error(`bench command name ${JSON.stringify(command)} is not a safe directory name`);
  }
  const startedAt = new Date().toISOString();
  const dir = resolve(root, `${startedAt.replace(/[:.]/g, "-")}-${command}`);
  mkdirSync(dir, { recursive: true });
  return { dir, startedAt };
}

function fileName(name: string, extension: string): string {
  return name.endsWith(extension) ? name : `${name}${extension}`;
}

/** Writes `<name>.json` (pretty-printed) into `dir`; returns the file's path. */
export function writeJson(dir: string, name: string, data: unknown): string {
  const file = join(dir, fileName(name, ".json"));
  writeFileSync(file, JSON.stringify(data, null, 2) + "\n");
  return file;
}

/**
 * Writes `<name>.csv` into `dir`: a header row with every key in the order first seen, then one
 * row per record (a missing key, undefined or null is an empty field); returns the file's path.
 */
export function writeCsv(
  dir: string,
  name: string,
  rows: Record<string, CsvValue | undefined>[],
): string {
  const columns: string[] = [];
  const seen = new Set<string>();
  for (const row of rows) {
    for (const key of Object.keys(row)) {
      if (!seen.has(key)) {
        seen.add(key);
        columns.push(key);
      }
    }
  }
  const text = stringify(rows, {
    header: true,
    columns,
    // csv-stringify writes true/false as 1/"" by default; spell them out.
    cast: { boolean: (value) => String(value) },
  });
  const file = join(dir, fileName(name, ".csv"));
  writeFileSync(file, text);
  return file;
}
