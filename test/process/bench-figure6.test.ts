/**
 * `tara bench figure6 --quick --json`: five fresh clusters, each with a real SIGKILL at the
 * midpoint of its run. Checks the CLI's JSON lines and that every output file exists and
 * parses; performance figures are recorded, never asserted. The timeline analysis is checked
 * on its own first, on made-up timelines.
 */
import { parse as parseCsv } from "csv-parse/sync";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { basename, dirname } from "node:path";
import { describe, it } from "node:test";
import { analyzeTimeline, gapStats, SCENARIO_IDS } from "../../src/bench/figure6.js";
import { runTara } from "./harness.js";

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

describe("figure6 timeline analysis", () => {
  it("measures the dip after the kill against the mean before it", () => {
    // 10 intervals at 10, the kill at 1,000 ms, 3 empty intervals, a dip to 5, then 10 again.
    const counts = [...Array<number>(10).fill(10), 0, 0, 0, 5, ...Array<number>(6).fill(10)];
    const a = analyzeTimeline(counts, 100, 1000);
    assert.equal(a.preCrashMean, 10);
    assert.equal(a.preCrashBelow80, 0);
    assert.equal(a.below80AfterKill, 4);
    assert.equal(a.lowestShare, 0);
    assert.equal(a.downtimeMs, 300);
    assert.equal(a.longestDowntimeMs, 300);
    assert.equal(a.preCrashDowntimeMs, 0);
    // 5 at 50% counts as back: from interval 13 on (1,300 ms), 300 ms after the kill.
    assert.equal(a.serviceBackMs, 300);
    assert.equal(a.afterRecoveryMean, 10);
    assert.equal(a.afterRecoveryShare, 1);
  });

  it("reports no downtime when the rate holds, and no return when it never recovers", () => {
    const steady = analyzeTimeline(Array<number>(40).fill(20), 100, 2050);
    assert.equal(steady.downtimeMs, 0);
    assert.equal(steady.serviceBackMs, 0);
    assert.equal(steady.lowestShare, 1);
    const dead = analyzeTimeline(
      [...Array<number>(20).fill(20), ...Array<number>(20).fill(0)],
      100,
      2000,
    );
    assert.equal(dead.serviceBackMs, null);
    assert.equal(dead.downtimeMs, 2000);
    assert.equal(dead.afterRecoveryShare, 0);
  });

  it("sees through GPC's bursts of replies", () => {
    const bursts = (n: number) => Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 15 : 0));
    // A burst every 300 ms, the kill at 3 s, 1 s without replies, bursts again.
    const a = analyzeTimeline(
      [...bursts(30), ...Array<number>(10).fill(0), ...bursts(30)],
      100,
      3000,
    );
    assert.equal(a.preCrashMean, 5);
    assert.equal(a.preCrashDowntimeMs, 2000);
    assert.equal(a.serviceBackMs, 1000);
    const gaps = gapStats(
      [
        { fromMs: 0, toMs: 200 },
        { fromMs: 2900, toMs: 3400 },
        { fromMs: 5000, toMs: 5200 },
      ],
      3000,
    );
    assert.deepEqual(gaps, { longestGapMs: 400, preCrashLongestGapMs: 200 });
  });
});

describe("tara bench figure6", () => {
  it("--quick --json kills a replica in every scenario and writes parseable results", () => {
    const run = runTara(["bench", "figure6", "--quick", "--json"], { timeoutMs: 300_000 });
    const lines = run.lines;
    assert.ok(
      lines.every((line) => line.bench === "figure6"),
      run.stdout,
    );
    const scenarios = lines.filter((line) => "scenario" in line && line.kind !== "summary");
    assert.deepEqual(
      scenarios.map((s) => s.scenario),
      [...SCENARIO_IDS],
    );
    for (const s of scenarios) {
      const what = `${String(s.scenario)}: ${JSON.stringify(s)}`;
      assert.ok(Number(s.completed) > 0, what);
      assert.ok((s.killedPids as number[]).length >= 1, what);
      assert.ok(Number(s.killAtMs) > 0 && Number(s.killAtMs) < Number(s.durationMs), what);
      assert.equal(typeof s.preCrashMean, "number", what);
      assert.ok(
        Number(s.longestGapMs) >= 0 && Number(s.longestGapMs) <= Number(s.durationMs),
        what,
      );
      // Nothing acknowledged may be lost (null only if the service never answered again).
      if (s.lostAcknowledged !== null) assert.equal(s.lostAcknowledged, 0, what);
    }
    const container = scenarios.find((s) => s.scenario === "container")!;
    assert.ok((container.killedPids as number[]).length > 1, "a whole container's processes");
    const leader = scenarios.find((s) => s.scenario === "leader")!;
    assert.equal(leader.victim, leader.leader);

    const summaryLine = lines.at(-1)!;
    assert.equal(summaryLine.kind, "summary");
    assert.equal((summaryLine.targets as unknown[]).length, 3);
    const dir = String(summaryLine.dir);
    const files = summaryLine.files as { summary: string; timeline: string; plots: string[] };
    try {
      const summary = JSON.parse(readFileSync(files.summary, "utf8")) as {
        results: { scenario: string; timeline?: unknown }[];
        failures: unknown[];
        targets: unknown[];
        machine: { nproc: number };
      };
      assert.deepEqual(
        summary.results.map((r) => r.scenario),
        [...SCENARIO_IDS],
      );
      assert.deepEqual(summary.failures, []);
      assert.ok(summary.machine.nproc >= 1);

      const rows = parseCsv(readFileSync(files.timeline, "utf8"), { columns: true }) as Record<
        string,
        string
      >[];
      assert.deepEqual(Object.keys(rows[0]!), ["scenario", "t_ms", "completed"]);
      for (const id of SCENARIO_IDS) {
        const mine = rows.filter((r) => r.scenario === id);
        // 6 s in 100 ms intervals, in order.
        assert.equal(mine.length, 60, id);
        assert.deepEqual(
          mine.map((r) => Number(r.t_ms)),
          mine.map((_, i) => i * 100),
        );
        assert.ok(mine.every((r) => Number.isInteger(Number(r.completed))));
        const line = scenarios.find((s) => s.scenario === id)!;
        assert.equal(
          mine.reduce((sum, r) => sum + Number(r.completed), 0),
          line.completed,
        );
      }

      // A plot per scenario and one of them all, each as SVG and PNG.
      const names = files.plots.map((p) => basename(p)).sort();
      const expected = [...SCENARIO_IDS.map((id) => `timeline-${id}`), "timeline"];
      assert.deepEqual(names, expected.flatMap((n) => [`${n}.png`, `${n}.svg`]).sort());
      for (const plot of files.plots) {
        assert.ok(existsSync(plot), plot);
        if (plot.endsWith(".svg")) {
          const text = readFileSync(plot, "utf8");
          assert.equal(XMLValidator.validate(text), true, plot);
          const svg = (new XMLParser().parse(text) as { svg?: unknown }).svg;
          assert.ok(svg !== undefined, plot);
          assert.match(text, /SIGKILL/);
        } else {
          const png = readFileSync(plot);
          assert.ok(png.length > 1000, plot);
          assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE, plot);
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("--repeat 2 runs each scenario twice, each run in its own directory, and a median summary", () => {
    const run = runTara(
      ["bench", "figure6", "--quick", "--json", "--repeat", "2", "--scenarios", "leader"],
      { timeoutMs: 300_000 },
    );
    const lines = run.lines;
    const scenarios = lines.filter((line) => line.kind !== "summary");
    assert.deepEqual(
      scenarios.map((s) => [s.run, s.scenario]),
      [
        [1, "leader"],
        [2, "leader"],
      ],
    );
    const summaryLine = lines.at(-1)!;
    assert.equal(summaryLine.repeat, 2);
    const targets = summaryLine.targets as { name: string; measured: string }[];
    const leaderTarget = targets.find((t) => t.name.startsWith("leader crash"))!;
    assert.match(leaderTarget.measured, /^median .* of 2 runs\)$/);
    const dir = String(summaryLine.dir);
    const files = summaryLine.files as { summary: string; runs: { summary: string }[] };
    try {
      assert.deepEqual(
        files.runs.map((r) => basename(dirname(r.summary))),
        ["run-1", "run-2"],
      );
      const summary = JSON.parse(readFileSync(files.summary, "utf8")) as {
        runs: { run: number; results: { scenario: string }[] }[];
        summary: { scenarios: { scenario: string; runs: number }[]; targets: unknown[] };
      };
      assert.deepEqual(
        summary.runs.map((r) => [r.run, r.results.map((x) => x.scenario)]),
        [
          [1, ["leader"]],
          [2, ["leader"]],
        ],
      );
      assert.deepEqual(
        summary.summary.scenarios.map((s) => [s.scenario, s.runs]),
        [["leader", 2]],
      );
      assert.equal(summary.summary.targets.length, 3);
      for (const r of files.runs) assert.ok(existsSync(r.summary), r.summary);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
