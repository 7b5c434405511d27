/**
 * `tara bench figure4`, `figure5` and `compare`: option parsing, progress, the tables at the
 * end, JSON lines, and the results directory (CSV, JSON, SVG and PNG plots).
 */
import Table from "cli-table3";
import { InvalidArgumentError, type Command } from "commander";
import {
  figure4Curves,
  figure4Targets,
  figure5Curves,
  figure5Targets,
  GROUP_MECHANISMS,
  LPC_MECHANISMS,
  PAPER,
  paperPeak,
  pointRow,
  runCurves,
  summarizePeaks,
  type CurveResult,
  type PeakSummary,
} from "../bench/figures.js";
import { machineFacts } from "../bench/report/machine.js";
import { renderPlot } from "../bench/report/plot.js";
import { medianRows } from "../bench/report/spread.js";
import { summarizeTargets, type Target } from "../bench/report/targets.js";
import { createProgress } from "../bench/report/progress.js";
import { createResultsDir, writeCsv, writeJson } from "../bench/report/results.js";
import { choiceList, integer, integerList, param, seconds, secondsOrZero } from "./parsers.js";
import { registerCompare } from "./bench-compare.js";

const FULL_CLIENTS = [1, 4, 16, 32, 64, 128, 256];

function percent(text: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < 0 || value > 100) {
    throw new InvalidArgumentError("expected a percentage in [0, 100]");
  }
  return value;
}

interface SweepFlags {
  clients?: number[];
  duration?: number;
  warmup?: number;
  clusterWarmup?: number;
  plateau: number;
  param: Record<string, string>;
  repeat: number;
  quick: boolean;
  json: boolean;
}

/** The options every figure shares. */
function addSweepOptions(command: Command, quickClients: number[]): Command {
  return command
    .option(
      "--clients <list>",
      `client counts, in order (default ${FULL_CLIENTS.join(",")}; --quick ${quickClients.join(",")})`,
      integerList(1, 4096, "client counts"),
    )
    .option("--duration <s>", "measured window per point (default 10, --quick 2)", seconds)
    .option(
      "--warmup <s>",
      "unmeasured load before each point (default 2, --quick 1)",
      secondsOrZero,
    )
    .option(
      "--cluster-warmup <s>",
      "unmeasured load at 32 clients before a curve's first point: a fresh cluster's JIT " +
        "warm-up (default 10, --quick 3)",
      secondsOrZero,
    )
    .option(
      "--plateau <percent>",
      "end a curve once two points in a row gained less than this over its best (0: never)",
      percent,
      5,
    )
    .option(
      "--param <key=value>",
      "TARA parameter, e.g. checkpointInterval=1000 (repeatable)",
      param,
      {},
    )
    .option(
      "--repeat <n>",
      "run every curve this many times (in rounds, so the machine's drift touches all curves " +
        "alike); tables, targets and plots then show medians and the min-max spread",
      integer(1, 100),
      1,
    )
    .option("--quick", "a reduced run of about a minute: a smoke test", false)
    .option("--json", "one JSON object per point and per target on stdout", false);
}

/** Colourless tables when stdout is a file or a pipe. */
function tableStyle() {
  return process.stdout.isTTY ? {} : { style: { head: [], border: [] } };
}

export function registerFigures(bench: Command): void {
  addSweepOptions(
    bench
      .command("figure4")
      .description(
        "the paper's Figure 4, group checkpoints: throughput against latency of the key-value " +
          "service (closed-loop clients, 128-byte puts) under PDC, LPC-CM and LPC-CS, executors " +
          "checkpointing every 1,000 requests, each on a fresh cluster",
      )
      .option(
        "--mechanisms <list>",
        `curves to measure (${GROUP_MECHANISMS.join(",")})`,
        choiceList(GROUP_MECHANISMS),
        [...GROUP_MECHANISMS],
      ),
    [1, 16, 64],
  ).action(async (flags: SweepFlags & { mechanisms: (typeof GROUP_MECHANISMS)[number][] }) => {
    await runFigure("figure4", flags, figure4Curves(flags.mechanisms), [1, 16, 64]);
  });

  addSweepOptions(
    bench
      .command("figure5")
      .description(
        "the paper's Figure 5, instance checkpoints (full crash recovery): throughput against " +
          "latency under GPC at several intervals and LPC-CM and LPC-CS at several batch " +
          "factors, with Figure 4's PDC curve measured in the same run as the baseline",
      )
      .option(
        "--gpc-intervals <ms>",
        "GPC curves: global checkpoint intervals (default 100,250,500; --quick 100; '' for none)",
        gpcIntervals,
      )
      .option(
        "--lpc <list>",
        `LPC curves (${LPC_MECHANISMS.join(",")}; '' for none)`,
        (text: string) => (text.trim() === "" ? [] : choiceList(LPC_MECHANISMS)(text)),
        [...LPC_MECHANISMS],
      )
      .option(
        "--batch-factors <list>",
        "batch factors of the LPC curves; 1 is the default, adaptive group commit (default 1,10; --quick 1)",
        integerList(1, 100_000, "batch factors"),
      )
      .option("--no-baseline", "leave out the PDC curve (and the target that needs it)"),
    [1, 16],
  ).action(
    async (
      flags: SweepFlags & {
        gpcIntervals?: number[];
        lpc: (typeof LPC_MECHANISMS)[number][];
        batchFactors?: number[];
        baseline: boolean;
      },
    ) => {
      const curves = figure5Curves({
        gpcIntervalsMs: flags.gpcIntervals ?? (flags.quick ? [100] : [100, 250, 500]),
        lpc: flags.lpc,
        batchFactors: flags.batchFactors ?? (flags.quick ? [1] : [1, 10]),
        baseline: flags.baseline,
      });
      if (curves.length === 0) throw new InvalidArgumentError("no curve to measure");
      await runFigure("figure5", flags, curves, [1, 16]);
    },
  );

  registerCompare(bench);
}

function gpcIntervals(text: string): number[] {
  if (text.trim() === "") return [];
  return integerList(50, 3_600_000, "intervals in ms")(text);
}

async function runFigure(
  figure: "figure4" | "figure5",
  flags: SweepFlags,
  curves: ReturnType<typeof figure4Curves>,
  quickClients: number[],
): Promise<void> {
  const sweep = {
    clients: flags.clients ?? (flags.quick ? quickClients : FULL_CLIENTS),
    durationS: flags.duration ?? (flags.quick ? 2 : 10),
    warmupS: flags.warmup ?? (flags.quick ? 1 : 2),
    clusterWarmupS: flags.clusterWarmup ?? (flags.quick ? 3 : 10),
    clusterWarmupClients: 32,
    valueBytes: 128,
    params: flags.param,
    plateau: flags.plateau / 100,
  };
  const { dir, startedAt } = createResultsDir(figure);
  const machineBefore = machineFacts();
  const repeat = flags.repeat;
  const bar = createProgress(figure, repeat * curves.length * sweep.clients.length);
  bar.log(
    `${figure}: ${curves.length} curves (${curves.map((c) => c.label).join(", ")})` +
      `${repeat > 1 ? `, ${repeat} runs` : ""}; results in ${dir}`,
  );
  const runs: CurveResult[][] = [];
  try {
    for (let run = 1; run <= repeat; run++) {
      const tag = repeat > 1 ? `run ${run}/${repeat}, ` : "";
      runs.push(
        await runCurves(curves, {
          ...sweep,
          progress: (line) => bar.log(`${tag}${line}`),
          onPoint: (curve, point, skipped) => {
            if (point) {
              bar.tick(
                1,
                `${tag}${curve.label}, ${point.clients} clients: ${point.requestsPerSec} req/s`,
              );
            } else {
              bar.tick(skipped, `${tag}${curve.label}: ${skipped} points skipped`);
            }
          },
        }),
      );
    }
  } finally {
    bar.stop();
  }
  const targetsOf = figure === "figure4" ? figure4Targets : figure5Targets;
  const perRun = runs.map((results, i) => {
    const peaks = results.map((r) => {
      const paper = paperPeak(figure, r.curve);
      return {
        run: i + 1,
        curve: r.curve.label,
        curveId: r.curve.id,
        peakRequestsPerSec: r.peak?.requestsPerSec ?? null,
        peakClients: r.peak?.clients ?? null,
        peakP50Ms: r.peak?.p50Ms ?? null,
        peakP99Ms: r.peak?.p99Ms ?? null,
        paperPeakRequestsPerSec: paper,
        ratioToPaper:
          paper && r.peak ? Math.round((r.peak.requestsPerSec / paper) * 100) / 100 : null,
        skippedClients: r.run.skipped.join(" "),
      };
    });
    const rows = results.flatMap((r) =>
      r.run.points.map((p) => ({ run: i + 1, ...pointRow(figure, r.curve, p) })),
    );
    return { results, peaks, rows, targets: targetsOf(results) };
  });
  const rows = perRun.flatMap((r) => r.rows);
  const peaks = perRun.flatMap((r) => r.peaks);
  const summary = {
    peaks: summarizePeaks(runs),
    targets: repeat > 1 ? summarizeTargets(perRun.map((r) => r.targets)) : perRun[0]!.targets,
  };
  const files = [
    writeCsv(dir, "points", rows),
    writeCsv(dir, "peaks", peaks),
    writeJson(dir, figure, {
      figure,
      startedAt,
      finishedAt: new Date().toISOString(),
      machine: { before: machineBefore, after: machineFacts() },
      options: { ...sweep, flags },
      paper: figure === "figure4" ? PAPER.figure4 : PAPER.figure5,
      runs: perRun.map(({ results, peaks: runPeaks, targets }, i) => ({
        run: i + 1,
        curves: results.map((r) => ({
          id: r.curve.id,
          label: r.curve.label,
          checkpoints: r.curve.checkpoints,
          clientTimeoutMs: r.curve.timeoutMs,
          error: r.error ?? null,
          warmup: r.run.warmup,
          skipped: r.run.skipped,
          points: r.run.points,
        })),
        peaks: runPeaks,
        targets,
      })),
      summary,
    }),
  ];
  const title =
    figure === "figure4"
      ? "Figure 4: group checkpoints (executors every 1,000 requests)"
      : "Figure 5: instance checkpoints (full crash recovery)";
  const plotted =
    repeat > 1
      ? medianRows(rows, (r) => `${r.curveId} ${r.clients}`, ["requestsPerSec", "p50Ms", "p99Ms"])
      : rows;
  // Nothing to draw if every curve failed.
  const plots = plotted.length > 0 ? (["p50", "p99"] as const) : [];
  for (const name of plots) {
    const field = `${name}Ms` as const;
    const plot = await renderPlot(dir, `${figure}-${name}`, {
      title: `${title}, ${name} latency${repeat > 1 ? `, median of ${repeat} runs` : ""}`,
      x: { field: "requestsPerSec", title: "throughput (requests/s)" },
      // GPC's latencies are hundreds of ms, LPC's a few: a log axis shows both.
      y: { field, title: `${name} latency (ms)`, scale: figure === "figure5" ? "log" : "linear" },
      series: "curve",
      label: "clients",
      rows: plotted,
    });
    files.push(plot.svg, plot.png);
  }
  if (flags.json) {
    for (const row of rows) console.log(JSON.stringify({ bench: figure, ...row }));
    for (const target of summary.targets) console.log(JSON.stringify({ bench: figure, target }));
    if (repeat > 1) {
      for (const peak of summary.peaks) console.log(JSON.stringify({ bench: figure, peak }));
    }
    console.log(JSON.stringify({ bench: figure, dir, files }));
  } else {
    for (const [i, run] of perRun.entries()) {
      if (repeat > 1) console.log(`\nrun ${i + 1} of ${repeat}:`);
      console.log(figureTables(figure, run.results, run.peaks, run.targets));
    }
    if (repeat > 1) console.log(summaryTables(figure, repeat, summary));
    console.log(`\nresults: ${dir}\n${files.map((f) => `  ${f}`).join("\n")}`);
  }
  const failed = runs.flat().filter((r) => r.error !== undefined);
  if (failed.length > 0) {
    for (const r of failed)
      process.stderr.write(`${figure}: ${r.curve.label} failed: ${r.error}\n`);
    process.exitCode = 1;
  }
}

function summaryTables(
  figure: string,
  repeat: number,
  summary: { peaks: PeakSummary[]; targets: Target[] },
): string {
  const style = tableStyle();
  const fmt = (x: number) => Math.round(x).toLocaleString("en-US");
  const peaks = new Table({
    head: ["curve", "median peak req/s", "min–max", "per run"],
    colAligns: ["left", "right", "right", "left"],
    ...style,
  });
  for (const p of summary.peaks) {
    peaks.push([
      p.curve,
      p.peak ? fmt(p.peak.median) : "-",
      p.peak ? `${fmt(p.peak.min)}–${fmt(p.peak.max)}` : "-",
      p.perRun.map((x) => (x === null ? "failed" : fmt(x))).join(", "),
    ]);
  }
  const targets = new Table({ head: ["target", "measured", "goal", "met"], ...style });
  for (const t of summary.targets) {
    targets.push([t.name, t.measured, t.goal, t.met === null ? "n/a" : t.met ? "yes" : "NO"]);
  }
  return [
    `\n${figure}, ${repeat} runs: peaks and targets (each target's figure is measured within a run; the median over the runs is judged):`,
    peaks.toString(),
    targets.toString(),
  ].join("\n");
}

function figureTables(
  figure: string,
  results: CurveResult[],
  peaks: { curve: string; paperPeakRequestsPerSec: number | null; ratioToPaper: number | null }[],
  targets: Target[],
): string {
  const style = tableStyle();
  const points = new Table({
    head: [
      "curve",
      "clients",
      "req/s",
      "p50 ms",
      "p99 ms",
      "retries",
      "cluster CPU",
      "load gen. CPU",
      "machine busy",
      "steal",
    ],
    colAligns: [
      "left",
      "right",
      "right",
      "right",
      "right",
      "right",
      "right",
      "right",
      "right",
      "right",
    ],
    ...style,
  });
  for (const r of results) {
    for (const p of r.run.points) {
      const row = pointRow(figure, r.curve, p);
      points.push([
        r.curve.label,
        p.clients,
        p.requestsPerSec.toLocaleString("en-US"),
        p.p50Ms.toFixed(2),
        p.p99Ms.toFixed(2),
        p.retries,
        row.clusterCpuCores.toFixed(2),
        row.loadGeneratorCpuCores?.toFixed(2) ?? "-",
        row.machineBusyCores?.toFixed(2) ?? "-",
        row.machineStealCores?.toFixed(2) ?? "-",
      ]);
    }
  }
  const peakTable = new Table({
    head: ["curve", "peak req/s", "at clients", "p50 ms", "paper req/s", "ours/paper"],
    colAligns: ["left", "right", "right", "right", "right", "right"],
    ...style,
  });
  for (const [i, r] of results.entries()) {
    const paper = peaks[i]!;
    peakTable.push([
      r.curve.label,
      r.peak?.requestsPerSec.toLocaleString("en-US") ?? "-",
      r.peak?.clients ?? "-",
      r.peak?.p50Ms.toFixed(2) ?? "-",
      paper.paperPeakRequestsPerSec?.toLocaleString("en-US") ?? "-",
      paper.ratioToPaper?.toFixed(2) ?? "-",
    ]);
  }
  const targetTable = new Table({ head: ["target", "measured", "goal", "met"], ...style });
  for (const t of targets) {
    targetTable.push([t.name, t.measured, t.goal, t.met === null ? "n/a" : t.met ? "yes" : "NO"]);
  }
  return [
    `${figure} (CPU in cores: the cluster's stream managers and replicas, the load generator, ` +
      "the whole machine; steal: taken by the hypervisor):",
    points.toString(),
    peakTable.toString(),
    targetTable.toString(),
  ].join("\n");
}
