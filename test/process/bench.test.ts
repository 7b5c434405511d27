/**
 * Smoke tests of `tara bench platform`, `tara bench throughput` and `tara bench compare` (which
 * also needs Debian's ZooKeeper package, as the differential tests do): they run real clusters,
 * print JSON lines and write their results files. Performance figures are recorded, never asserted, in tests.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { it } from "node:test";
import { runTara } from "./harness.js";

it("tara bench platform --quick --json measures throughput and latency across containers", () => {
  const run = runTara(
    ["bench", "platform", "--quick", "--only", "throughput-cross,latency-cross", "--json"],
    { timeoutMs: 120_000 },
  );
  const lines = run.lines;
  const byCase = new Map(lines.map((line) => [line.case, line]));
  const throughput = byCase.get("throughput-cross")!;
  assert.ok(Number(throughput.tuplesPerSec) > 0);
  assert.deepEqual(throughput.health, { dropped: 0, reregistrations: 0 });
  const latency = byCase.get("latency-cross")!;
  assert.ok(Number(latency.count) > 0 && Number(latency.p50Ms) > 0);
  const summary = byCase.get("summary")!;
  const file = String(summary.file);
  assert.ok(existsSync(file), `results file ${file}`);
  const saved = JSON.parse(readFileSync(file, "utf8")) as { results: unknown[] };
  assert.equal(saved.results.length, 2);
  rmSync(dirname(file), { recursive: true, force: true });
});

it("tara bench throughput --json runs closed-loop clients against the replicated service", () => {
  const run = runTara(
    [
      "bench",
      "throughput",
      "--clients",
      "1,4",
      "--duration",
      "1",
      "--cluster-warmup",
      "0",
      "--json",
    ],
    { timeoutMs: 120_000 },
  );
  const points = run.lines;
  assert.deepEqual(
    points.map((p) => p.clients),
    [1, 4],
  );
  for (const point of points) {
    assert.ok(Number(point.requestsPerSec) > 0 && Number(point.p50Ms) > 0);
    assert.ok("executor:0" in (point.processes as object));
  }
  const file = /results written to (\S+)/.exec(run.stderr)?.[1];
  assert.ok(file && existsSync(file), `results file in: ${run.stderr}`);
  const saved = JSON.parse(readFileSync(file, "utf8")) as { points: unknown[] };
  assert.equal(saved.points.length, 2);
  rmSync(dirname(file), { recursive: true, force: true });
});

it("tara bench compare --json drives Tara's ZooKeeper service, ZooKeeper and etcd alike", () => {
  // Its own working directory: the results directory is created under ./bench-results.
  const cwd = mkdtempSync(join(tmpdir(), "tara-compare-"));
  try {
    const run = runTara(
      [
        "bench",
        "compare",
        "--clients",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--target-warmup",
        "0",
        "--json",
      ],
      { cwd, timeoutMs: 240_000 },
    );
    const lines = run.lines;
    const summary = lines.find((line) => "ratios" in line) as {
      ratios: { against: string }[];
      skipped: { target: string; reason: string }[];
      durability: Record<string, string>;
      dir: string;
      files: string[];
    };
    // etcd is optional (Debian's etcd-server): measured where installed, else skipped, saying so.
    const skipped = summary.skipped.map((s) => s.target);
    assert.deepEqual(
      skipped.filter((t) => t !== "etcd"),
      [],
    );
    for (const s of summary.skipped) assert.match(s.reason, /etcd-server not installed: skipped/);
    const systems = ["tara", "zookeeper", "etcd"].filter((t) => !skipped.includes(t));
    const points = lines.filter((line) => "target" in line);
    assert.deepEqual(
      points.map((p) => `${p.target} ${p.workload} ${p.clients}`).sort(),
      systems.flatMap((t) => [`${t} read 2`, `${t} write 2`]).sort(),
    );
    for (const point of points) {
      assert.ok(Number(point.opsPerSec) > 0 && Number(point.p50Ms) > 0, JSON.stringify(point));
      assert.ok("load-generator" in (point.processes as object));
    }
    assert.deepEqual(Object.keys(summary.durability).sort(), [...systems].sort());
    assert.match(summary.durability.zookeeper!, /fsync/);
    assert.equal(summary.ratios.length, 2 * (systems.length - 1));
    const saved = JSON.parse(readFileSync(join(summary.dir, "compare.json"), "utf8")) as {
      runs: { points: unknown[] }[];
    };
    assert.equal(saved.runs.length, 1);
    assert.equal(saved.runs[0]!.points.length, points.length);
    for (const file of summary.files) assert.ok(existsSync(file), file);
    assert.deepEqual(summary.files.map((f) => basename(f)).sort(), [
      "compare-read.png",
      "compare-read.svg",
      "compare-write.png",
      "compare-write.svg",
      "compare.json",
      "points.csv",
      "ratios.csv",
    ]);
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});
