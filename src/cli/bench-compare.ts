/**
 * `tara bench compare`: Tara's ZooKeeper service against a real ZooKeeper ensemble and a real
 * etcd cluster (src/bench/compare.ts): options, progress, tables, results directory.
 */
import Table from "cli-table3";
import type { Command } from "commander";
import {
  COMPARE_TARGETS,
  COMPARE_WORKLOADS,
  runCompare,
  type CompareOptions,
  type ComparePoint,
  type CompareRatio,
  type CompareResult,
} from "../bench/compare.js";
import { machineFacts } from "../bench/report/machine.js";
import { renderPlot } from "../bench/report/plot.js";
import { groupBy, medianRows, spreadOf } from "../bench/report/spread.js";
import { createProgress } from "../bench/report/progress.js";
import { createResultsDir, writeCsv, writeJson } from "../bench/report/results.js";
import {
  addCheckpointOptions,
  checkpointConfigOf,
  type CheckpointFlags,
} from "./checkpoint-options.js";
import { choiceList, integer, integerList, param, seconds, secondsOrZero } from "./parsers.js";

type Flags = CheckpointFlags & {
  clients?: number[];
  duration?: number;
  warmup?: number;
  targetWarmup?: number;
  valueBytes: number;
  targets: CompareOptions["targets"];
  workloads: CompareOptions["workloads"];
  param: Record<string, string>;
  repeat: number;
  quick: boolean;
  json: boolean;
};

export function registerCompare(bench: Command): void {
  const compare = bench
    .command("compare")
    .description(
      "closed-loop clients (one request outstanding each, 128-byte values): setData and " +
        "getData through the same ZooKeeper client against Tara's ZooKeeper service (the " +
        "`tara start` topology, a fresh 3-container cluster) and a real 3-server ZooKeeper " +
        "ensemble, and put/get against a real 3-member etcd cluster, one after the other; " +
        "a system whose Debian package is absent is skipped",
    )
    .option(
      "--clients <list>",
      "client counts (default 1,16,64; --quick 16)",
      integerList(1, 1024, "client counts"),
    )
    .option("--duration <s>", "measured window per point (default 5, --quick 2)", seconds)
    .option(
      "--warmup <s>",
      "unmeasured load before each point (default 2, --quick 1)",
      secondsOrZero,
    )
    .option(
      "--target-warmup <s>",
      "unmeasured writes before a system's first point: JIT warm-up of a fresh cluster or JVM " +
        "(default 10, --quick 3)",
      secondsOrZero,
    )
    .option("--value-bytes <n>", "bytes of the value written", integer(0, 1_000_000), 128)
    .option(
      "--targets <list>",
      `systems to measure, in order (${COMPARE_TARGETS.join(",")})`,
      choiceList(COMPARE_TARGETS),
      [...COMPARE_TARGETS],
    )
    .option(
      "--workloads <list>",
      `workloads (${COMPARE_WORKLOADS.join(",")})`,
      choiceList(COMPARE_WORKLOADS),
      [...COMPARE_WORKLOADS],
    )
    .option("--param <key=value>", "Tara topology parameter (repeatable)", param, {})
    .option(
      "--repeat <n>",
      "run the whole comparison this many times (in rounds); tables and plots then show " +
        "medians and the min-max spread of each system's figures and of the ratios",
      integer(1, 100),
      1,
    )
    .option("--quick", "a reduced run of about a minute: a smoke test", false)
    .option("--json", "one JSON object per point, then the ratios and skipped systems", false);
  addCheckpointOptions(compare).action(async (flags: Flags) => {
    const clients = flags.clients ?? (flags.quick ? [16] : [1, 16, 64]);
    const options: CompareOptions = {
      targets: flags.targets,
      workloads: flags.workloads,
      clients,
      durationS: flags.duration ?? (flags.quick ? 2 : 5),
      warmupS: flags.warmup ?? (flags.quick ? 1 : 2),
      targetWarmupS: flags.targetWarmup ?? (flags.quick ? 3 : 10),
      valueBytes: flags.valueBytes,
      sessionTimeoutMs: 30_000,
      checkpoints: checkpointConfigOf(flags),
      params: flags.param,
      progress: () => undefined,
    };
    const { dir, startedAt } = createResultsDir("compare");
    const machineBefore = machineFacts();
    const repeat = flags.repeat;
    const bar = createProgress(
      "compare",
      repeat * options.targets.length * clients.length * options.workloads.length,
    );
    bar.log(
      `compare: ${options.targets.join(", ")}${repeat > 1 ? `, ${repeat} runs` : ""}; results in ${dir}`,
    );
    const runs: CompareResult[] = [];
    try {
      for (let run = 1; run <= repeat; run++) {
        const tag = repeat > 1 ? `run ${run}/${repeat}, ` : "";
        runs.push(
          await runCompare({
            ...options,
            progress: (line) => bar.log(`${tag}${line}`),
            onPoint: (point, skipped) =>
              point
                ? bar.tick(
                    1,
                    `${tag}${point.target} ${point.workload}, ${point.clients} clients: ${point.opsPerSec} ops/s`,
                  )
                : bar.tick(skipped, "skipped"),
          }),
        );
      }
    } finally {
      bar.stop();
    }
    const rows = runs.flatMap((r, i) => r.points.map((p) => ({ run: i + 1, ...pointRow(p) })));
    const summary = summarize(runs);
    const files = [
      writeCsv(dir, "points", rows),
      writeCsv(
        dir,
        "ratios",
        runs.flatMap((r, i) => r.ratios.map((ratio) => ({ run: i + 1, ...ratio }))),
      ),
      writeJson(dir, "compare", {
        startedAt,
        finishedAt: new Date().toISOString(),
        machine: { before: machineBefore, after: machineFacts() },
        options: { ...options, progress: undefined, flags },
        runs: runs.map((r, i) => ({ run: i + 1, ...r })),
        summary,
      }),
    ];
    const plotted =
      repeat > 1
        ? medianRows(rows, (r) => `${r.system} ${r.workload} ${r.clients}`, ["opsPerSec", "p50Ms"])
        : rows;
    for (const workload of options.workloads) {
      const plotRows = plotted.filter((r) => r.workload === workload);
      if (plotRows.length === 0) continue;
      const plot = await renderPlot(dir, `compare-${workload}`, {
        title:
          `${workload === "write" ? "Writes (setData / put)" : "Reads (getData / get)"}, 128-byte values, closed loop` +
          (repeat > 1 ? `, median of ${repeat} runs` : ""),
        x: { field: "opsPerSec", title: "throughput (operations/s)" },
        y: { field: "p50Ms", title: "p50 latency (ms)", scale: "log" },
        series: "system",
        label: "clients",
        rows: plotRows,
      });
      files.push(plot.svg, plot.png);
    }
    if (flags.json) {
      for (const [i, run] of runs.entries()) {
        for (const point of run.points)
          console.log(JSON.stringify({ bench: "compare", run: i + 1, ...point }));
      }
      console.log(
        JSON.stringify({
          bench: "compare",
          ratios: runs.flatMap((r, i) => r.ratios.map((ratio) => ({ run: i + 1, ...ratio }))),
          skipped: runs[0]!.skipped,
          durability: runs[0]!.durability,
          ...(repeat > 1 ? { summary } : {}),
          dir,
          files,
        }),
      );
    } else {
      for (const [i, run] of runs.entries()) {
        if (repeat > 1) console.log(`\nrun ${i + 1} of ${repeat}:`);
        console.log(compareTables(run));
      }
      if (repeat > 1) console.log(summaryTable(repeat, summary));
      console.log(`\nresults: ${dir}\n${files.map((f) => `  ${f}`).join("\n")}`);
    }
  });
}

/** Each system's throughput per point, and each ratio, over the runs: median and spread. */
export function summarize(runs: readonly CompareResult[]) {
  const points = runs.flatMap((r) => r.points);
  return {
    throughput: groupBy(points, (p) => `${systemName(p)} ${p.workload} ${p.clients}`).map(
      (group) => ({
        system: systemName(group[0]!),
        target: group[0]!.target,
        workload: group[0]!.workload,
        clients: group[0]!.clients,
        opsPerSec: spreadOf(group.map((p) => p.opsPerSec)),
        p50Ms: spreadOf(group.map((p) => p.p50Ms)),
      }),
    ),
    ratios: groupBy(
      runs.flatMap((r) => r.ratios),
      (r) => `${r.workload} ${r.clients} ${r.against}`,
    ).map((group) => ({
      workload: group[0]!.workload,
      clients: group[0]!.clients,
      against: group[0]!.against,
      ratio: spreadOf(group.flatMap((r) => (r.ratio === null ? [] : [r.ratio]))),
    })),
  };
}

function summaryTable(repeat: number, summary: ReturnType<typeof summarize>): string {
  const style = process.stdout.isTTY ? {} : { style: { head: [], border: [] } };
  const fmt = (x: number) => Math.round(x).toLocaleString("en-US");
  const table = new Table({
    head: [
      "workload",
      "clients",
      "system",
      "median ops/s",
      "min–max",
      "median p50 ms",
      "Tara/this",
    ],
    colAligns: ["left", "right", "left", "right", "right", "right", "right"],
    ...style,
  });
  for (const t of summary.throughput) {
    const against = summary.ratios.find(
      (r) => r.workload === t.workload && r.clients === t.clients && r.against === t.target,
    );
    table.push([
      t.workload,
      t.clients,
      t.system,
      t.opsPerSec ? fmt(t.opsPerSec.median) : "-",
      t.opsPerSec ? `${fmt(t.opsPerSec.min)}–${fmt(t.opsPerSec.max)}` : "-",
      t.p50Ms ? t.p50Ms.median.toFixed(2) : "-",
      against?.ratio
        ? `${against.ratio.median.toFixed(2)} (${against.ratio.min.toFixed(2)}–${against.ratio.max.toFixed(2)})`
        : "",
    ]);
  }
  return [
    `\ncompare, ${repeat} runs: medians (Tara/this: the median of the ratios, each measured within a run, and their spread):`,
    table.toString(),
  ].join("\n");
}

function systemName(p: ComparePoint): string {
  if (p.target !== "tara") return p.target === "zookeeper" ? "ZooKeeper" : "etcd";
  return `Tara ${p.mechanism?.toUpperCase()}${p.instance && p.mechanism !== "gpc" ? " + instance" : ""}`;
}

function pointRow(p: ComparePoint) {
  return {
    system: systemName(p),
    target: p.target,
    workload: p.workload,
    clients: p.clients,
    opsPerSec: p.opsPerSec,
    p50Ms: p.p50Ms,
    p90Ms: p.p90Ms,
    p99Ms: p.p99Ms,
    p999Ms: p.p999Ms,
    maxMs: p.maxMs,
    meanMs: Math.round(p.meanMs * 1000) / 1000,
    count: p.count,
    errors: p.errors,
    windowS: p.windowS,
    drainMs: p.drainMs,
    targetCpuCores:
      Math.round(
        Object.entries(p.processes)
          .filter(([name]) => name !== "load-generator")
          .reduce((sum, [, use]) => sum + use.cpu, 0) * 100,
      ) / 100,
    loadGeneratorCpuCores: p.processes["load-generator"]?.cpu ?? null,
    machineBusyCores: p.machine?.busyCores ?? null,
    otherLoadCores: p.machine?.otherCores ?? null,
    stealCores: p.machine?.stealCores ?? null,
    mechanism: p.mechanism ?? null,
    instance: p.instance ?? null,
  };
}

function compareTables(result: CompareResult): string {
  const style = process.stdout.isTTY ? {} : { style: { head: [], border: [] } };
  const table = new Table({
    head: [
      "workload",
      "clients",
      "system",
      "ops/s",
      "p50 ms",
      "p99 ms",
      "Tara/this",
      "other load",
      "busiest processes (share of a core)",
    ],
    colAligns: ["left", "right", "left", "right", "right", "right", "right", "right", "left"],
    ...style,
  });
  const order = ["tara", "zookeeper", "etcd"];
  const points = [...result.points].sort(
    (a, b) =>
      (a.workload === b.workload ? 0 : a.workload === "write" ? -1 : 1) ||
      a.clients - b.clients ||
      order.indexOf(a.target) - order.indexOf(b.target),
  );
  const ratioOf = (p: ComparePoint): CompareRatio | undefined =>
    result.ratios.find(
      (r) => r.workload === p.workload && r.clients === p.clients && r.against === p.target,
    );
  for (const p of points) {
    const busiest = Object.entries(p.processes)
      .sort(([, a], [, b]) => b.cpu - a.cpu)
      .slice(0, 4)
      .map(([name, use]) => `${name} ${use.cpu}`)
      .join(", ");
    table.push([
      p.workload,
      p.clients,
      systemName(p),
      p.opsPerSec.toLocaleString("en-US") + (p.errors > 0 ? ` (${p.errors} errors)` : ""),
      p.p50Ms.toFixed(2),
      p.p99Ms.toFixed(2),
      ratioOf(p)?.ratio?.toFixed(2) ?? "",
      p.machine ? p.machine.otherCores.toFixed(2) : "-",
      busiest,
    ]);
  }
  return [
    "compare (Tara/this: Tara's ops/s over this system's at the same point; other load: cores " +
      "busy on the machine outside the measured processes):",
    table.toString(),
    "durability and consistency:",
    ...Object.values(result.durability).map((d) => `- ${d}`),
    ...result.skipped.map((s) => `skipped ${s.target}: ${s.reason}`),
  ].join("\n");
}
