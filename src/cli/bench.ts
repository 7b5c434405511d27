import Table from "cli-table3";
import { InvalidArgumentError, type Command } from "commander";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
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
import { runZkBench, ZK_TARGETS, type ZkPoint, type ZkRatio, type ZkTarget } from "../bench/zk.js";
import { integer, param } from "./parsers.js";
import {
  addCheckpointOptions,
  checkpointConfigOf,
  type CheckpointFlags,
} from "./checkpoint-options.js";

const RESULTS_DIR = "bench-results";

function seconds(text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0 || value > 600) {
    throw new InvalidArgumentError("expected a number of seconds in (0, 600]");
  }
  return value;
}

/** Like `seconds`, but 0 is allowed (no warm-up). */
function secondsOrZero(text: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < 0 || value > 600) {
    throw new InvalidArgumentError("expected a number of seconds in [0, 600]");
  }
  return value;
}

function targetList(text: string): ZkTarget[] {
  const wanted = text.split(",").map((s) => s.trim());
  const unknown = wanted.filter((w) => !(ZK_TARGETS as readonly string[]).includes(w));
  if (unknown.length > 0 || wanted.length === 0) {
    throw new InvalidArgumentError(
      `unknown target ${unknown.join(", ")}: ${ZK_TARGETS.join(", ")}`,
    );
  }
  return [...new Set(wanted as ZkTarget[])];
}

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

function clientCounts(text: string): number[] {
  const counts = text.split(",").map((s) => Number(s.trim()));
  if (counts.some((n) => !Number.isInteger(n) || n < 1 || n > 4096)) {
    throw new InvalidArgumentError("expected comma-separated client counts in [1, 4096]");
  }
  return counts;
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
    .option("--clients <list>", "client counts to sweep", clientCounts)
    .option("--duration <s>", "measured window per client count (default 10, --quick 2)", seconds)
    .option("--param <key=value>", "TARA parameter (repeatable)", param, {})
    .option("--quick", "1, 16 and 64 clients, 2 s each: a smoke test", false)
    .option("--json", "one JSON object per client count", false);
  addCheckpointOptions(throughput).action(
    async (
      options: CheckpointFlags & {
        clients?: number[];
        duration?: number;
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
      const startedAt = new Date().toISOString();
      const points = await runThroughputBench({
        checkpoints: checkpointConfigOf(options),
        clients: options.clients ?? (options.quick ? [1, 16, 64] : [1, 4, 16, 32, 64, 128, 256]),
        durationS: options.duration ?? (options.quick ? 2 : 10),
        warmupS: options.quick ? 1 : 2,
        valueBytes: 128,
        params: options.param,
        progress,
      });
      const dir = resolve(RESULTS_DIR, startedAt.replace(/[:.]/g, "-"));
      mkdirSync(dir, { recursive: true });
      const file = join(dir, "throughput.json");
      writeFileSync(file, JSON.stringify({ startedAt, options, points }, null, 2) + "\n");
      progress(`results written to ${file}`);
      if (options.json) {
        for (const point of points) console.log(JSON.stringify({ bench: "throughput", ...point }));
      } else {
        console.log(throughputTable(points));
      }
    },
  );

  const zk = bench
    .command("zk")
    .description(
      "closed-loop ZooKeeper clients (node-zookeeper-client, one request outstanding each): " +
        "setData and getData against Tara's ZooKeeper service on a fresh 3-container cluster " +
        "and against a real 3-server ZooKeeper 3.8 ensemble, one after the other: ops/s and " +
        "latency per client count, and their ratio",
    )
    .option("--clients <list>", "client counts to sweep", clientCounts, [1, 16, 64])
    .option("--duration <s>", "measured window per point", seconds, 5)
    .option("--warmup <s>", "warm-up before each point's window", secondsOrZero, 2)
    .option("--value-bytes <n>", "bytes of the value written", integer(0, 1_000_000), 128)
    .option("--targets <list>", `what to measure, in order (${ZK_TARGETS.join(",")})`, targetList, [
      ...ZK_TARGETS,
    ])
    .option("--param <key=value>", "Tara topology parameter (repeatable)", param, {})
    .option("--json", "one JSON object per point, then one with the ratios", false);
  addCheckpointOptions(zk).action(
    async (
      options: CheckpointFlags & {
        clients: number[];
        duration: number;
        warmup: number;
        valueBytes: number;
        targets: ZkTarget[];
        param: Record<string, string>;
        json: boolean;
      },
    ) => {
      const began = performance.now();
      const progress = (line: string) =>
        process.stderr.write(
          `[bench ${((performance.now() - began) / 1000).toFixed(1)}s] ${line}\n`,
        );
      const startedAt = new Date().toISOString();
      const machine = {
        nproc: cpus().length,
        cpuModel: cpus()[0]?.model ?? "unknown",
        node: process.version,
        loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
      };
      const { points, ratios } = await runZkBench({
        targets: options.targets,
        clients: options.clients,
        durationS: options.duration,
        warmupS: options.warmup,
        valueBytes: options.valueBytes,
        sessionTimeoutMs: 30_000,
        checkpoints: checkpointConfigOf(options),
        params: options.param,
        progress,
      });
      mkdirSync(resolve(RESULTS_DIR), { recursive: true });
      const file = resolve(RESULTS_DIR, `zk-${startedAt.replace(/[:.]/g, "-")}.json`);
      writeFileSync(
        file,
        JSON.stringify({ startedAt, options, machine, points, ratios }, null, 2) + "\n",
      );
      progress(`results written to ${file}`);
      if (options.json) {
        for (const point of points) console.log(JSON.stringify({ bench: "zk", ...point }));
        console.log(JSON.stringify({ bench: "zk", ratios, file }));
      } else {
        console.log(zkTable(points, ratios));
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
}

function writeResults(report: PlatformBenchReport): string {
  const stamp = report.startedAt.replace(/[:.]/g, "-");
  const dir = resolve(RESULTS_DIR, stamp);
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

function zkTable(points: ZkPoint[], ratios: ZkRatio[]): string {
  const style = process.stdout.isTTY ? {} : { style: { head: [], border: [] } };
  const table = new Table({
    head: [
      "workload",
      "clients",
      "target",
      "ops/s",
      "p50 ms",
      "p99 ms",
      "Tara/ZK",
      "other load",
      "busiest processes (share of a core)",
    ],
    colAligns: ["left", "right", "left", "right", "right", "right", "right", "right", "left"],
    ...style,
  });
  const order = [...points].sort(
    (a, b) =>
      (a.workload === b.workload ? 0 : a.workload === "write" ? -1 : 1) ||
      a.clients - b.clients ||
      (a.target === b.target ? 0 : a.target === "tara" ? -1 : 1),
  );
  for (const p of order) {
    const ratio = ratios.find((r) => r.workload === p.workload && r.clients === p.clients);
    const busiest = Object.entries(p.processes)
      .sort(([, a], [, b]) => b.cpu - a.cpu)
      .slice(0, 4)
      .map(([name, use]) => `${name} ${use.cpu}`)
      .join(", ");
    table.push([
      p.workload,
      p.clients,
      p.target,
      p.opsPerSec + (p.errors > 0 ? ` (${p.errors} errors)` : ""),
      p.p50Ms.toFixed(2),
      p.p99Ms.toFixed(2),
      p.target === "tara" && ratio ? (ratio.ratio?.toFixed(2) ?? "-") : "",
      p.machine ? p.machine.otherCores.toFixed(2) : "-",
      busiest,
    ]);
  }
  const durability = [...new Map(points.map((p) => [p.target, p.durability])).values()];
  return [
    "zk bench (other load: cores busy on the machine outside the measured processes):",
    table.toString(),
    ...durability.map((d) => `- ${d}`),
  ].join("\n");
}
