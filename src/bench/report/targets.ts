/** A benchmark's targets, judged per run and, over repeated runs, on the median. */
import { groupBy, spreadOf } from "./spread.js";

export interface Target {
  name: string;
  measured: string;
  goal: string;
  /** null: not measured in this run (a curve, point or scenario is missing). */
  met: boolean | null;
  /** The measured figure, for the median over repeated runs; null: none. */
  value: number | null;
  unit: "ratio" | "ms" | "count";
  /** The goal as a number: met when `value` is at least (higher) or below (lower) it. */
  threshold: number;
  better: "higher" | "lower";
}

export function judged(
  target: Pick<Target, "name" | "goal" | "unit" | "threshold" | "better">,
  value: number | null,
  measured: string,
): Target {
  const met =
    value === null
      ? null
      : target.better === "higher"
        ? value >= target.threshold
        : value < target.threshold;
  return { ...target, value, measured, met };
}

export const pct = (x: number) => `${Math.round(x * 100)}%`;

function show(unit: Target["unit"], x: number): string {
  if (unit === "ratio") return pct(x);
  if (unit === "ms") return `${x.toFixed(1)} ms`;
  return `${x}`;
}

/**
 * Each target over repeated runs: judged on the median of the per-run figures (each measured
 * side by side within its run), with the min-max spread in `measured`.
 */
export function summarizeTargets(runs: readonly (readonly Target[])[]): Target[] {
  return groupBy(runs.flat(), (target) => target.name).map((all) => {
    const first = all[0]!;
    const spread = spreadOf(all.flatMap((t) => (t.value === null ? [] : [t.value])));
    if (!spread) return judged(first, null, "not measured");
    const { unit } = first;
    return judged(
      first,
      spread.median,
      `median ${show(unit, spread.median)} (${show(unit, spread.min)}–${show(unit, spread.max)}, ` +
        `${spread.runs} of ${all.length} runs)`,
    );
  });
}
