/**
 * The paper's Figures 4 and 5 (Section 5.1 and 5.2): throughput against latency of the
 * replicated key-value service under each checkpoint mechanism, one curve per configuration,
 * each on a fresh cluster, swept over closed-loop client counts until throughput stops growing.
 *
 * - Figure 4, group checkpoints (executors, every K = 1,000 requests): PDC, LPC-CM, LPC-CS.
 * - Figure 5, instance checkpoints (full crash recovery): GPC at several intervals, LPC-CM and
 *   LPC-CS at several batch factors, and Figure 4's PDC curve measured in the same run as the
 *   baseline of the targets.
 */
import { round } from "./bench-cluster.js";
import { spreadOf, type Spread } from "./report/spread.js";
import { judged, pct, type Target } from "./report/targets.js";
import { runThroughputBench, type ThroughputPoint, type ThroughputRun } from "./throughput.js";
import type { Mechanism } from "../platform/api/stage.js";
import { checkpointConfigSchema, type CheckpointConfig } from "../platform/runtime/config.js";

export const GROUP_MECHANISMS = ["pdc", "lpc-cm", "lpc-cs"] as const;
export type GroupMechanism = (typeof GROUP_MECHANISMS)[number];
export const LPC_MECHANISMS = ["lpc-cm", "lpc-cs"] as const;
export type LpcMechanism = (typeof LPC_MECHANISMS)[number];

/** One line of a figure: a checkpoint configuration measured on its own fresh cluster. */
export interface Curve {
  /** Short id for files and JSON: "pdc", "lpc-cs-bf10", "gpc-250ms". */
  id: string;
  /** Legend text. */
  label: string;
  checkpoints: CheckpointConfig;
  /** Client reply timeout: GPC holds replies for a checkpoint, so it needs more than 2 s. */
  timeoutMs: number;
}

const NAMES: Record<Mechanism, string> = {
  pdc: "PDC",
  gpc: "GPC",
  "lpc-cm": "LPC-CM",
  "lpc-cs": "LPC-CS",
};

function config(settings: Partial<CheckpointConfig>): CheckpointConfig {
  return checkpointConfigSchema.parse(settings);
}

export function figure4Curves(mechanisms: readonly GroupMechanism[]): Curve[] {
  return mechanisms.map((mechanism) => ({
    id: mechanism,
    label: NAMES[mechanism],
    checkpoints: config({ mechanism }),
    timeoutMs: 2000,
  }));
}

export interface Figure5Choice {
  gpcIntervalsMs: readonly number[];
  lpc: readonly LpcMechanism[];
  /** Batch factors of the LPC curves; 1 is the platform's default, adaptive group commit. */
  batchFactors: readonly number[];
  /** Figure 4's PDC curve, measured in the same run (the targets compare against it). */
  baseline: boolean;
}

export function figure5Curves(choice: Figure5Choice): Curve[] {
  const curves: Curve[] = [];
  for (const interval of choice.gpcIntervalsMs) {
    curves.push({
      id: `gpc-${interval}ms`,
      label: `GPC ${interval} ms`,
      checkpoints: config({ mechanism: "gpc", gpcIntervalMs: interval }),
      // A reply waits for up to a few checkpoints; retrying sooner only adds load.
      timeoutMs: Math.max(2000, 10 * interval),
    });
  }
  for (const mechanism of choice.lpc) {
    for (const batchFactor of choice.batchFactors) {
      curves.push({
        id: `${mechanism}-bf${batchFactor}`,
        label: `${NAMES[mechanism]} ${batchFactor === 1 ? "adaptive (bf 1)" : `bf ${batchFactor}`}`,
        checkpoints: config({ mechanism, instance: true, batchFactor }),
        timeoutMs: 2000,
      });
    }
  }
  if (choice.baseline) {
    curves.push({
      id: "pdc",
      label: "PDC (group only)",
      checkpoints: config({ mechanism: "pdc" }),
      timeoutMs: 2000,
    });
  }
  return curves;
}

/**
 * Throughput has stopped growing: each of the last `flat` points gained less than `minGain`
 * (a fraction) over the best throughput before it. One noisy point does not end a curve.
 */
export function plateaued(
  points: readonly Pick<ThroughputPoint, "requestsPerSec">[],
  minGain: number,
  flat = 2,
): boolean {
  if (minGain <= 0 || points.length < flat + 1) return false;
  for (let i = points.length - flat; i < points.length; i++) {
    const best = Math.max(...points.slice(0, i).map((p) => p.requestsPerSec));
    if (points[i]!.requestsPerSec >= best * (1 + minGain)) return false;
  }
  return true;
}

export interface SweepOptions {
  clients: number[];
  durationS: number;
  warmupS: number;
  clusterWarmupS: number;
  clusterWarmupClients: number;
  valueBytes: number;
  params: Record<string, string>;
  /** Stop a curve once two points in a row gained less than this fraction (0: never). */
  plateau: number;
  progress: (line: string) => void;
  /** After each point, and once per client count skipped by the plateau rule. */
  onPoint: (curve: Curve, point: ThroughputPoint | undefined, skipped?: number) => void;
}

export interface CurveResult {
  curve: Curve;
  run: ThroughputRun;
  /** Why the curve could not be measured (its cluster failed); the other curves still run. */
  error?: string;
  /** Highest throughput of the curve and the point it was measured at. */
  peak: ThroughputPoint | undefined;
}

/**
 * Measures each curve in turn, each on a fresh cluster. A curve that fails is recorded with
 * its error (and the points it measured are lost) so that a long run still reports the others.
 */
export async function runCurves(
  curves: readonly Curve[],
  options: SweepOptions,
): Promise<CurveResult[]> {
  const results: CurveResult[] = [];
  for (const curve of curves) {
    let measured = 0;
    try {
      const run = await runThroughputBench({
        checkpoints: curve.checkpoints,
        clients: options.clients,
        durationS: options.durationS,
        warmupS: options.warmupS,
        clusterWarmupS: options.clusterWarmupS,
        clusterWarmupClients: options.clusterWarmupClients,
        valueBytes: options.valueBytes,
        params: options.params,
        timeoutMs: curve.timeoutMs,
        label: curve.label,
        progress: options.progress,
        onPoint: (point) => {
          measured++;
          options.onPoint(curve, point);
        },
        stopWhen: (points) => plateaued(points, options.plateau),
      });
      if (run.skipped.length > 0) options.onPoint(curve, undefined, run.skipped.length);
      results.push({ curve, run, peak: peakOf(run.points) });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      options.progress(`${curve.label}: failed: ${message}`);
      const left = options.clients.length - measured;
      if (left > 0) options.onPoint(curve, undefined, left);
      results.push({
        curve,
        run: { points: [], warmup: null, skipped: options.clients.slice(measured) },
        peak: undefined,
        error: message,
      });
    }
  }
  return results;
}

export function peakOf(points: readonly ThroughputPoint[]): ThroughputPoint | undefined {
  return points.reduce<ThroughputPoint | undefined>(
    (best, p) => (!best || p.requestsPerSec > best.requestsPerSec ? p : best),
    undefined,
  );
}

/** One flat row per point, for CSV and the plots. */
export function pointRow(figure: string, curve: Curve, p: ThroughputPoint) {
  const cluster = Object.entries(p.processes)
    .filter(([name]) => name !== "load-generator")
    .reduce((sum, [, use]) => sum + use.cpu, 0);
  return {
    figure,
    curve: curve.label,
    curveId: curve.id,
    mechanism: curve.checkpoints.mechanism,
    instance: p.instance,
    // Batching applies to instance checkpoints only.
    batchFactor:
      curve.checkpoints.mechanism.startsWith("lpc") && curve.checkpoints.instance
        ? curve.checkpoints.batchFactor
        : null,
    gpcIntervalMs: curve.checkpoints.mechanism === "gpc" ? curve.checkpoints.gpcIntervalMs : null,
    clients: p.clients,
    requestsPerSec: p.requestsPerSec,
    p50Ms: p.p50Ms,
    p90Ms: p.p90Ms,
    p99Ms: p.p99Ms,
    p999Ms: p.p999Ms,
    maxMs: p.maxMs,
    meanMs: round(p.meanMs, 3),
    count: p.count,
    retries: p.retries,
    windowS: p.windowS,
    clusterCpuCores: round(cluster, 2),
    loadGeneratorCpuCores: p.processes["load-generator"]?.cpu ?? null,
    machineBusyCores: p.machine?.busyCores ?? null,
    machineStealCores: p.machine?.stealCores ?? null,
  };
}

const fmt = (x: number) => x.toLocaleString("en-US", { maximumFractionDigits: 0 });

function byMechanism(results: readonly CurveResult[], mechanism: Mechanism): CurveResult[] {
  return results.filter((r) => r.curve.checkpoints.mechanism === mechanism);
}

/** Figure 4's targets: LPC-CS and LPC-CM peaks within 5% of PDC's (or above it). */
export function figure4Targets(results: readonly CurveResult[]): Target[] {
  const pdc = byMechanism(results, "pdc")[0]?.peak;
  return LPC_MECHANISMS.map((mechanism) => {
    const peak = byMechanism(results, mechanism)[0]?.peak;
    const target = {
      name: `${NAMES[mechanism]} peak within 5% of PDC's (group checkpoints)`,
      goal: "≥ 95%",
      unit: "ratio" as const,
      threshold: 0.95,
      better: "higher" as const,
    };
    if (!pdc || !peak || pdc.requestsPerSec === 0) return judged(target, null, "not measured");
    const ratio = peak.requestsPerSec / pdc.requestsPerSec;
    return judged(
      target,
      ratio,
      `${pct(ratio)} (${fmt(peak.requestsPerSec)} vs ${fmt(pdc.requestsPerSec)} req/s)`,
    );
  });
}

/** Figure 5's targets, each against curves of the same run. */
export function figure5Targets(results: readonly CurveResult[]): Target[] {
  const targets: Target[] = [];
  const pdc = byMechanism(results, "pdc")[0]?.peak;
  const lpcCs = peakOf(byMechanism(results, "lpc-cs").flatMap((r) => (r.peak ? [r.peak] : [])));
  const best = byMechanism(results, "lpc-cs").find((r) => r.peak === lpcCs);
  const half = {
    name: "LPC-CS peak with instance checkpoints ≥ half the PDC peak",
    goal: "≥ 50%",
    unit: "ratio" as const,
    threshold: 0.5,
    better: "higher" as const,
  };
  if (!pdc || !lpcCs || !best) {
    targets.push(judged(half, null, "not measured"));
  } else {
    const ratio = lpcCs.requestsPerSec / pdc.requestsPerSec;
    targets.push(
      judged(
        half,
        ratio,
        `${pct(ratio)} (${best.curve.label}: ${fmt(lpcCs.requestsPerSec)} vs ${fmt(pdc.requestsPerSec)} req/s)`,
      ),
    );
  }
  for (const mechanism of LPC_MECHANISMS) {
    for (const r of byMechanism(results, mechanism)) {
      const at16 = r.run.points.find((p) => p.clients === 16);
      targets.push(
        judged(
          {
            name: `${r.curve.label}: p50 at 16 clients`,
            goal: "< 5 ms",
            unit: "ms",
            threshold: 5,
            better: "lower",
          },
          at16?.p50Ms ?? null,
          at16 ? `${at16.p50Ms.toFixed(1)} ms` : "no 16-client point",
        ),
      );
    }
  }
  for (const r of byMechanism(results, "gpc")) {
    const interval = r.curve.checkpoints.gpcIntervalMs;
    targets.push(
      judged(
        {
          name: `${r.curve.label}: p50 at peak throughput`,
          goal: `< ${fmt(3 * interval)} ms (3x interval)`,
          unit: "ms",
          threshold: 3 * interval,
          better: "lower",
        },
        r.peak?.p50Ms ?? null,
        r.peak
          ? `${fmt(r.peak.p50Ms)} ms (${r.peak.clients} clients, ${fmt(r.peak.requestsPerSec)} req/s)`
          : "not measured",
      ),
    );
  }
  return targets;
}

// ---- Repeated runs: medians and spread ----

export interface PeakSummary {
  curve: string;
  curveId: string;
  /** Each run's peak, in run order (null: the curve failed in that run). */
  perRun: (number | null)[];
  peak: Spread | null;
}

/** Each curve's peak throughput over repeated runs. */
export function summarizePeaks(runs: readonly (readonly CurveResult[])[]): PeakSummary[] {
  const first = runs[0] ?? [];
  return first.map(({ curve }) => {
    const perRun = runs.map(
      (results) => results.find((r) => r.curve.id === curve.id)?.peak?.requestsPerSec ?? null,
    );
    return {
      curve: curve.label,
      curveId: curve.id,
      perRun,
      peak: spreadOf(perRun.flatMap((x) => (x === null ? [] : [x]))),
    };
  });
}

/** The paper's figures, read off its text (Section 5), for a ratio beside ours. */
export const PAPER = {
  figure4: {
    peakRequestsPerSec: 13_000,
    note: "PDC and LPC-CM ≈ 13,000 req/s; LPC-CS up to 20% lower",
  },
  figure5: {
    lpcCmPeak: 400,
    lpcCsPeak: 600,
    lpcLatencyMs: 300,
    gpc500msMeanLatencyMs: 1200,
    note: "batch factor up to 10: LPC-CM ≈ 400, LPC-CS ≈ 600 req/s at ≈ 300 ms; GPC 500 ms ≈ 1.2 s mean latency",
  },
} as const;

/** Our peak over the paper's, where the paper gives one for the curve's mechanism. */
export function paperPeak(figure: "figure4" | "figure5", curve: Curve): number | null {
  const mechanism = curve.checkpoints.mechanism;
  if (figure === "figure4") {
    // The paper: LPC-CS "up to 20%" below the others.
    return PAPER.figure4.peakRequestsPerSec * (mechanism === "lpc-cs" ? 0.8 : 1);
  }
  if (mechanism === "lpc-cm") return PAPER.figure5.lpcCmPeak;
  if (mechanism === "lpc-cs") return PAPER.figure5.lpcCsPeak;
  if (mechanism === "pdc") return PAPER.figure4.peakRequestsPerSec;
  return null;
}
