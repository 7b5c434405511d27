/** `tara bench figure6`: node-crash impact (src/bench/figure6.ts, docs/BENCHMARKS.md). */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import Table from "cli-table3";
import { InvalidArgumentError, Option, type Command } from "commander";
import {
  CRASH_MECHANISMS,
  figure6Targets,
  runFigure6,
  SCENARIO_IDS,
  STEPS_PER_SCENARIO,
  summarizeScenarios,
  writeFigure6Results,
  type CrashMechanism,
  type Figure6Files,
  type Figure6Report,
  type ScenarioId,
  type ScenarioResult,
  type ScenarioSpread,
  withoutTimeline,
} from "../bench/figure6.js";
import { machineFacts } from "../bench/report/machine.js";
import { createProgress } from "../bench/report/progress.js";
import { createResultsDir, writeJson } from "../bench/report/results.js";
import type { Spread } from "../bench/report/spread.js";
import { summarizeTargets, type Target } from "../bench/report/targets.js";
import { integer, param } from "./parsers.js";

function scenarioList(text: string): ScenarioId[] {
  const wanted = text.split(",").map((s) => s.trim());
  const unknown = wanted.filter((w) => !(SCENARIO_IDS as readonly string[]).includes(w));
  if (unknown.length > 0) {
    throw new InvalidArgumentError(
      `unknown scenario ${unknown.join(", ")}: expected some of ${SCENARIO_IDS.join(", ")}`,
    );
  }
  // In the canonical order, each once.
  return SCENARIO_IDS.filter((id) => wanted.includes(id));
}

function secondsIn(min: number, max: number) {
  return (text: string): number => {
    const value = Number(text);
    if (text.trim() === "" || !Number.isFinite(value) || value < min || value > max) {
      throw new InvalidArgumentError(`expected a number of seconds in [${min}, ${max}]`);
    }
    return value;
  };
}

interface Figure6Flags {
  scenarios: ScenarioId[];
  clients: number;
  duration?: number;
  warmup?: number;
  clientTimeoutMs: number;
  gpcIntervalMs: number;
  crashMechanism: CrashMechanism;
  container?: number;
  param: Record<string, string>;
  repeat: number;
  quick: boolean;
  json: boolean;
}

export function registerFigure6(bench: Command): void {
  bench
    .command("figure6")
    .description(
      "node-crash impact (the paper's Figure 6): closed-loop clients against the key-value " +
        "service on a fresh 3-container cluster per scenario, one replica or container " +
        "SIGKILLed at the midpoint of the run; requests completed per 100 ms, downtime, time " +
        "to the replica's return, throughput after recovery",
    )
    .addOption(
      new Option(
        "--scenarios <list>",
        `comma-separated, of ${SCENARIO_IDS.join(", ")}: a committer crash under LPC-CS, ` +
          "LPC-CM (instance checkpoints) and GPC, a crash of the leader proposer, and one of a " +
          "whole container",
      )
        .argParser(scenarioList)
        .default([...SCENARIO_IDS], "all"),
    )
    .option(
      "--clients <n>",
      "closed-loop clients, one 128-byte put outstanding each",
      integer(1, 4096),
      16,
    )
    .option(
      "--duration <s>",
      "measured run per scenario, kill at its midpoint (default 60, --quick 6)",
      secondsIn(2, 3600),
    )
    .option(
      "--warmup <s>",
      "load before the measured run, for the JIT (default 10, --quick 2)",
      secondsIn(0, 600),
    )
    .option(
      "--client-timeout-ms <ms>",
      "a client resends a request unanswered this long to the next gateway",
      integer(50, 60_000),
      1000,
    )
    .option("--gpc-interval-ms <ms>", "GPC: global checkpoint period", integer(50, 3_600_000), 100)
    .addOption(
      new Option(
        "--crash-mechanism <name>",
        "checkpoint mechanism of the leader and container scenarios (with instance checkpoints)",
      )
        .choices(CRASH_MECHANISMS)
        .default("lpc-cs"),
    )
    .option(
      "--container <n>",
      "container killed in the container scenario (default: one without the leader proposer)",
      integer(0, 2),
    )
    .option("--param <key=value>", "TARA parameter (repeatable), e.g. viewChangeMs=300", param, {})
    .option(
      "--repeat <n>",
      "run the scenarios n times, in rounds (each run's files in run-<k>/); targets judged " +
        "on the medians",
      integer(1, 20),
      1,
    )
    .option("--quick", "2 s warm-up and 6 s per scenario: a smoke test of about a minute", false)
    .option("--json", "one JSON object per scenario, then one with the targets and files", false)
    .action(async (flags: Figure6Flags) => {
      const { dir, startedAt } = createResultsDir("figure6");
      const repeat = flags.repeat;
      const progress = createProgress(
        "figure6",
        repeat * flags.scenarios.length * STEPS_PER_SCENARIO,
      );
      const options = {
        scenarios: flags.scenarios,
        clients: flags.clients,
        durationS: flags.duration ?? (flags.quick ? 6 : 60),
        warmupS: flags.warmup ?? (flags.quick ? 2 : 10),
        valueBytes: 128,
        clientTimeoutMs: flags.clientTimeoutMs,
        gpcIntervalMs: flags.gpcIntervalMs,
        crashMechanism: flags.crashMechanism,
        ...(flags.container === undefined ? {} : { container: flags.container }),
        params: flags.param,
      };
      const machine = machineFacts();
      const runs: { report: Figure6Report; files: Figure6Files }[] = [];
      try {
        for (let k = 1; k <= repeat; k++) {
          const run = await runFigure6({
            ...options,
            log: (line) => progress.log(repeat > 1 ? `run ${k}: ${line}` : line),
            step: (status) =>
              progress.tick(1, repeat > 1 ? `run ${k}/${repeat} ${status}` : status),
          });
          const report: Figure6Report = {
            bench: "figure6",
            startedAt,
            options,
            machine,
            results: run.results,
            failures: run.failures,
            targets: figure6Targets(run.results),
          };
          const runDir = repeat > 1 ? join(dir, `run-${k}`) : dir;
          mkdirSync(runDir, { recursive: true });
          runs.push({ report, files: await writeFigure6Results(runDir, report) });
        }
      } finally {
        progress.stop();
      }
      const reports = runs.map((r) => r.report);
      const targets =
        repeat > 1 ? summarizeTargets(reports.map((r) => r.targets)) : reports[0]!.targets;
      const scenarios = summarizeScenarios(reports.map((r) => r.results));
      const summaryFile =
        repeat > 1
          ? writeJson(dir, "summary", {
              bench: "figure6",
              startedAt,
              options,
              machine,
              repeat,
              runs: reports.map((r, i) => ({
                run: i + 1,
                results: r.results.map(withoutTimeline),
                failures: r.failures,
                targets: r.targets,
              })),
              summary: { targets, scenarios },
            })
          : runs[0]!.files.summary;
      process.stderr.write(`results written to ${dir}\n`);
      if (flags.json) {
        reports.forEach((report, i) => {
          const run = repeat > 1 ? { run: i + 1 } : {};
          for (const result of report.results) {
            console.log(JSON.stringify({ bench: "figure6", ...run, ...withoutTimeline(result) }));
          }
          for (const failure of report.failures) {
            console.log(JSON.stringify({ bench: "figure6", ...run, ...failure }));
          }
        });
        console.log(
          JSON.stringify({
            bench: "figure6",
            kind: "summary",
            repeat,
            targets,
            ...(repeat > 1 ? { scenarios } : {}),
            machine,
            dir,
            files:
              repeat > 1
                ? { summary: summaryFile, runs: runs.map((r) => r.files) }
                : runs[0]!.files,
          }),
        );
      } else {
        reports.forEach((report, i) => {
          if (repeat > 1) console.log(`run ${i + 1} of ${repeat}`);
          console.log(figure6Tables(report));
        });
        if (repeat > 1) console.log(summaryTables(scenarios, targets, repeat));
      }
      // A missed target is a result; a scenario that could not run is a failure.
      const failed = reports.flatMap((r) => r.failures.map((f) => f.scenario));
      if (failed.length > 0) throw new Error(`${[...new Set(failed)].join(", ")} failed`);
    });
}

/** Medians over the runs, min-max below, and the targets judged on them. */
function summaryTables(scenarios: ScenarioSpread[], targets: Target[], repeat: number): string {
  const style = process.stdout.isTTY ? {} : { style: { head: [], border: [] } };
  const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const cell = (spread: Spread | null, show: (x: number) => string) =>
    spread ? `${show(spread.median)}\n(${show(spread.min)}–${show(spread.max)})` : "-";
  const table = new Table({
    head: [
      "scenario",
      "runs",
      "req/s\nbefore",
      "<80%\nafter kill",
      "no reply\nafter kill",
      "service\nback",
      "replica\nback",
      "req/s after\n(of before)",
      "lost",
    ],
    ...style,
  });
  for (const s of scenarios) {
    table.push([
      s.title,
      s.runs,
      cell(s.preCrashPerSec, (x) => x.toFixed(0)),
      cell(s.below80AfterKill, (x) => `${x}`),
      cell(s.longestGapMs, seconds),
      cell(s.serviceBackMs, seconds),
      cell(s.returnMs, seconds),
      cell(s.afterRecoveryShare, (x) => `${Math.round(x * 100)}%`),
      s.lostAcknowledged === null ? "?" : s.lostAcknowledged,
    ]);
  }
  const judged = new Table({ head: ["target", "measured", "goal", "met"], ...style });
  for (const t of targets) {
    judged.push([t.name, t.measured, t.goal, t.met === null ? "n/a" : t.met ? "yes" : "NO"]);
  }
  return [
    `figure6 over ${repeat} runs: medians (min–max)`,
    table.toString(),
    judged.toString(),
  ].join("\n");
}

function figure6Tables(report: Figure6Report): string {
  // No colour codes when the output goes to a file or a pipe.
  const style = process.stdout.isTTY ? {} : { style: { head: [], border: [] } };
  const table = new Table({
    head: [
      "scenario\nvictim",
      "req/s\nbefore",
      "lowest",
      "<80%\nbefore/after",
      "<10% before/after\n(longest run)",
      "no reply\nbefore/after",
      "service\nback",
      "replica\nback",
      "req/s after\n(of before)",
      "timeouts\n/errors",
      "lost",
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
      "right",
    ],
    ...style,
  });
  const seconds = (ms: number | null) => (ms === null ? "-" : `${(ms / 1000).toFixed(2)} s`);
  const percent = (share: number | null) => (share === null ? "-" : `${Math.round(share * 100)}%`);
  for (const r of report.results) {
    table.push([
      `${r.title}\n${r.victim}`,
      r.preCrashPerSec,
      percent(r.lowestShare),
      `${r.preCrashBelow80} / ${r.below80AfterKill}`,
      `${seconds(r.preCrashDowntimeMs)} / ${seconds(r.downtimeMs)}\n(${seconds(r.longestDowntimeMs)})`,
      `${seconds(r.preCrashLongestGapMs)} / ${seconds(r.longestGapMs)}`,
      seconds(r.serviceBackMs),
      seconds(r.returnMs),
      `${r.afterRecoveryPerSec} (${percent(r.afterRecoveryShare)})`,
      `${r.client.timeouts}/${r.client.errors}`,
      r.lostAcknowledged === null ? "?" : `${r.lostAcknowledged}/${r.keysChecked}`,
    ]);
  }
  for (const f of report.failures)
    table.push([`${f.title}\nFAILED: ${f.error}`, "", "", "", "", "", "", "", "", "", ""]);
  const targets = new Table({ head: ["target", "measured", "goal", "met"], ...style });
  for (const t of report.targets) {
    targets.push([t.name, t.measured, t.goal, t.met === null ? "n/a" : t.met ? "yes" : "NO"]);
  }
  const first: ScenarioResult | undefined = report.results[0];
  const o = report.options;
  return [
    `figure6 bench: ${o.clients} clients, ${o.warmupS} s warm-up, ${first ? first.durationMs / 1000 : o.durationS} s ` +
      `measured per scenario, kill at the midpoint; rates per ${first?.intervalMs ?? 100} ms interval ` +
      `(lowest, <80%, <10%: from the kill's interval on; no reply: longest time without one; ` +
      `req/s after: last quarter)`,
    table.toString(),
    targets.toString(),
  ].join("\n");
}
