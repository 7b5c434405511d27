/** Medians and min-max spreads of figures measured in repeated runs. */

/** The median of a non-empty list (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError("median of nothing");
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  /** Runs that measured it. */
  runs: number;
}

/** null when no run measured it. */
export function spreadOf(values: readonly number[]): Spread | null {
  if (values.length === 0) return null;
  return {
    median: median(values),
    min: Math.min(...values),
    max: Math.max(...values),
    runs: values.length,
  };
}

/** Groups rows by a key, keeping the order in which keys first appear. */
export function groupBy<T>(rows: readonly T[], key: (row: T) => string): T[][] {
  const groups = new Map<string, T[]>();
  for (const row of rows) {
    const k = key(row);
    const group = groups.get(k);
    if (group) group.push(row);
    else groups.set(k, [row]);
  }
  return [...groups.values()];
}

/**
 * The median row of repeated runs, for plots: rows grouped by `key` (a point measured in each
 * run), each group one row, the first's fields with the median of each of `fields`.
 */
export function medianRows<Row extends Record<string, unknown>>(
  rows: readonly Row[],
  key: (row: Row) => string,
  fields: readonly (keyof Row & string)[],
): Row[] {
  return groupBy(rows, key).map((group) => {
    const row: Record<string, unknown> = { ...group[0]! };
    for (const field of fields) row[field] = median(group.map((r) => Number(r[field])));
    return row as Row;
  });
}
