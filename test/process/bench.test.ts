/**
 * Smoke tests of `tara bench platform`, `tara bench throughput` and `tara bench zk` (which also
 * needs Debian's ZooKeeper package, as the differential tests do): they run real clusters,
 * print JSON lines and write their results files. Performance figures are recorded, never asserted, in tests.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { it } from "node:test";
import { taraBin } from "./harness.js";

it("tara bench platform --quick --json measures throughput and latency across containers", () => {
  const run = spawnSync(
    process.execPath,
    [taraBin, "bench", "platform", "--quick", "--only", "throughput-cross,latency-cross", "--json"],
    { encoding: "utf8", timeout: 120_000 },
  );
  assert.equal(run.status, 0, run.stderr);
  const lines = run.stdout
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as Record<string, unknown>);
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
  const run = spawnSync(
    process.execPath,
    [taraBin, "bench", "throughput", "--clients", "1,4", "--duration", "1", "--json"],
    { encoding: "utf8", timeout: 120_000 },
  );
  assert.equal(run.status, 0, run.stderr);
  const points = run.stdout
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as Record<string, unknown>);
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

it("tara bench zk --json drives Tara's ZooKeeper service and a real ZooKeeper ensemble", () => {
  const run = spawnSync(
    process.execPath,
    [
      taraBin,
      "bench",
      "zk",
      "--targets",
      "tara,zookeeper",
      "--clients",
      "2",
      "--duration",
      "1",
      "--warmup",
      "0.5",
      "--json",
    ],
    { encoding: "utf8", timeout: 240_000 },
  );
  assert.equal(run.status, 0, run.stderr);
  const lines = run.stdout
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  const points = lines.filter((line) => "target" in line);
  assert.deepEqual(points.map((p) => `${p.target} ${p.workload} ${p.clients}`).sort(), [
    "tara read 2",
    "tara write 2",
    "zookeeper read 2",
    "zookeeper write 2",
  ]);
  for (const point of points) {
    assert.ok(Number(point.opsPerSec) > 0 && Number(point.p50Ms) > 0, JSON.stringify(point));
    assert.equal(typeof point.durability, "string");
    assert.ok("load-generator" in (point.processes as object));
  }
  const summary = lines.find((line) => "ratios" in line)!;
  assert.equal((summary.ratios as unknown[]).length, 2);
  const file = String(summary.file);
  assert.ok(existsSync(file), `results file ${file}`);
  const saved = JSON.parse(readFileSync(file, "utf8")) as { points: unknown[] };
  assert.equal(saved.points.length, 4);
  rmSync(file, { force: true });
});
