import Table from "cli-table3";
import { InvalidArgumentError, type Command } from "commander";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  CASES,
  runPlatformBench,
  type CaseId,
  type CaseResult,
  type LatencyResult,
  type PlatformBenchReport,
  type ThroughputResult,
} from "../bench/platform.js";
import { runThroughputBench, type ThroughputPoint } from "../bench/throughput.js";
import { integerList, param, seconds, secondsOrZero } from "./parsers.js";
import { registerFigures } from "./bench-figures.js";
import { createResultsDir, RESULTS_ROOT, writeJson } from "../bench/report/results.js";
import { registerFigure6 } from "./bench-figure6.js";
import {
  addCheckpointOptions,
  checkpointConfigOf,
  type CheckpointFlags,
} from "./checkpoint-options.js";

function caseList(text: string): CaseId[] {
  const wanted = text.split(",").map((s) => s.trim());
  const picked = CASES.filter((id) => wanted.some((w) => id === w || id.startsWith(`${w}-`)));
  const unknown = wanted.filter((w) => !CASES.some((id) => id === w || id.startsWith(`${w}-`)));
  if (unknown.length > 0 || picked.length === 0) {
    throw new InvalidArgumentError(
      `unknown case ${unknown.join(", ")}: one of ${CASES.join(", ")}`,
    );
  }
  return picked;
}

export function registerBench(program: Command): void {
  const bench = program.command("bench").description("benchmarks (see docs/BENCHMARKS.md)");

  const throughput = bench
    .command("throughput")
    .description(
      "closed-loop clients (one request outstanding each, 128-byte values) against the " +
        "replicated key-value service on a fresh 3-container cluster: requests/s and latency " +
        "per client count",
    )
    .option("--clients <list>", "client counts to sweep", integerList(1, 4096, "client counts"))
    .option("--duration <s>", "measured window per client count (default 10, --quick 2)", seconds)
    .option(
      "--cluster-warmup <s>",
      "unmeasured load at 32 clients before the first point: the fresh cluster's JIT warm-up " +
        "(default 10, --quick 3)",
      secondsOrZero,
    )
    .option("--param <key=value>", "TARA parameter (repeatable)", param, {})
    .option("--quick", "1, 16 and 64 clients, 2 s each: a smoke test", false)
    .option("--json", "one JSON object per client count", false);
  addCheckpointOptions(throughput).action(
    async (
      options: CheckpointFlags & {
        clients?: number[];
        duration?: number;
        clusterWarmup?: number;
        param: Record<string, string>;
        quick: boolean;
        json: boolean;
      },
    ) => {
      const began = performance.now();
      const progress = (line: string) =>
        process.stderr.write(
          `[bench ${((performance.now() - began) / 1000).toFixed(1)}s] ${line}\n`,
        );
      const { dir, startedAt } = createResultsDir("throughput");
      const { points, warmup } = await runThroughputBench({
        checkpoints: checkpointConfigOf(options),
        clients: options.clients ?? (options.quick ? [1, 16, 64] : [1, 4, 16, 32, 64, 128, 256]),
        durationS: options.duration ?? (options.quick ? 2 : 10),
        warmupS: options.quick ? 1 : 2,
        clusterWarmupS: options.clusterWarmup ?? (options.quick ? 3 : 10),
        valueBytes: 128,
        params: options.param,
        progress,
      });
      const file = writeJson(dir, "throughput", { startedAt, options, warmup, points });
      progress(`results written to ${file}`);
      if (options.json) {
        for (const point of points) console.log(JSON.stringify({ bench: "throughput", ...point }));
      } else {
        console.log(throughputTable(points));
      }
    },
  );

  bench
    .command("platform")
    .description(
      "tuple throughput and round-trip latency through the stream managers (same container, " +
        "across containers) against a raw Node TCP baseline",
    )
    .option("--json", "print one JSON object per line instead of tables", false)
    .option(
      "--duration <s>",
      "measured window of every case, seconds (default 8, --quick 2)",
      seconds,
    )
    .option("--quick", "a few seconds per case: a smoke test", false)
    .option(
      "--only <cases>",
      `comma-separated cases or prefixes (${CASES.join(", ")}; e.g. throughput,latency-cross)`,
      caseList,
    )
    .action(
      async (options: { json: boolean; duration?: number; quick: boolean; only?: CaseId[] }) => {
        const began = performance.now();
        const progress = (line: string) =>
          process.stderr.write(
            `[bench ${((performance.now() - began) / 1000).toFixed(1)}s] ${line}\n`,
          );
        const report = await runPlatformBench({
          durationS: options.duration ?? (options.quick ? 2 : 8),
          warmupS: options.quick ? 1 : 3,
          size: 100,
          batch: 2000,
          cases: options.only ?? CASES,
          progress,
        });
        const file = writeResults(report);
        progress(`results written to ${file}`);
        if (options.json) {
          for (const result of report.results)
            console.log(JSON.stringify({ bench: "platform", ...result }));
          console.log(
            JSON.stringify({
              bench: "platform",
              case: "summary",
              targets: report.targets,
              machine: report.machine,
              options: report.options,
              elapsedS: report.elapsedS,
              file,
            }),
          );
        } else {
          console.log(formatTables(report));
        }
        if (report.targets.some((t) => t.met === false)) progress("some targets were not met");
      },
    );

  registerFigures(bench);
  registerFigure6(bench);
}

function writeResults(report: PlatformBenchReport): string {
  const stamp = report.startedAt.replace(/[:.]/g, "-");
  const dir = resolve(RESULTS_ROOT, stamp);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, "platform.json");
  writeFileSync(file, JSON.stringify(report, null, 2) + "\n");
  return file;
}

function formatTables(report: PlatformBenchReport): string {
  const byPlacement = <R extends CaseResult>(kind: R["kind"], placement: string): R | undefined =>
    report.results.find((r) => r.kind === kind && r.placement === placement) as R | undefined;
  const placements = ["same-container", "cross-container", "raw-tcp"] as const;
  const tput = placements.map((p) => byPlacement<ThroughputResult>("throughput", p));
  const lat = placements.map((p) => byPlacement<LatencyResult>("latency", p));
  const cell = (value: number | undefined, digits = 0) =>
    value === undefined
      ? "-"
      : value.toLocaleString("en-US", {
          minimumFractionDigits: digits,
          maximumFractionDigits: digits,
        });
  // No colour codes when the output goes to a file or a pipe.
  const style = process.stdout.isTTY ? {} : { style: { head: [], border: [] } };
  const results = new Table({
    head: ["100-byte tuples", "same container", "cross container", "raw TCP"],
    colAligns: ["left", "right", "right", "right"],
    ...style,
  });
  results.push(
    ["throughput (tuples/s)", ...tput.map((r) => cell(r?.tuplesPerSec))],
    ["throughput (MB/s payload)", ...tput.map((r) => cell(r?.mbPerSec, 1))],
    ["RTT p50 (ms)", ...lat.map((r) => cell(r?.p50Ms, 3))],
    ["RTT p99 (ms)", ...lat.map((r) => cell(r?.p99Ms, 3))],
    ["RTT p99.9 (ms)", ...lat.map((r) => cell(r?.p999Ms, 3))],
    ["round trips measured", ...lat.map((r) => cell(r?.count))],
  );
  const targets = new Table({ head: ["target", "measured", "goal", "met"], ...style });
  for (const t of report.targets) {
    targets.push([t.name, t.value ?? "-", t.goal, t.met === null ? "n/a" : t.met ? "yes" : "NO"]);
  }
  const m = report.machine;
  return [
    `platform bench: ${m.nproc} CPUs (${m.cpuModel}), node ${m.node}, ` +
      `${report.options.durationS} s per case after ${report.options.warmupS} s warm-up`,
    results.toString(),
    targets.toString(),
  ].join("\n");
}

function throughputTable(points: ThroughputPoint[]): string {
  const style = process.stdout.isTTY ? {} : { style: { head: [], border: [] } };
  const table = new Table({
    head: ["clients", "req/s", "p50 ms", "p99 ms", "busiest processes (share of a core)"],
    colAligns: ["right", "right", "right", "right", "left"],
    ...style,
  });
  for (const p of points) {
    const busiest = Object.entries(p.processes)
      .sort(([, a], [, b]) => b.cpu - a.cpu)
      .slice(0, 4)
      .map(([name, use]) => `${name} ${use.cpu}`)
      .join(", ");
    table.push([p.clients, p.requestsPerSec, p.p50Ms.toFixed(2), p.p99Ms.toFixed(2), busiest]);
  }
  const first = points[0];
  const label = first ? `${first.mechanism}${first.instance ? ", instance checkpoints" : ""}` : "-";
  return `throughput bench (${label}):\n${table.toString()}`;
}
