/**
 * Smoke test of `tara bench figure4` at a very reduced size (one curve, two client counts,
 * 1 s windows, two runs): real clusters, JSON lines on stdout, and every file of its results directory
 * (CSV, JSON, SVG, PNG) present and parseable. Performance figures are recorded, never asserted.
 */
import { parse as parseCsv } from "csv-parse/sync";
import { XMLValidator } from "fast-xml-parser";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { it } from "node:test";
import { runTara } from "./harness.js";

it("tara bench figure4 --repeat 2 writes points, medians, targets, CSV, JSON and plots", () => {
  // Its own working directory: the results directory is created under ./bench-results.
  const cwd = mkdtempSync(join(tmpdir(), "tara-figure4-"));
  try {
    const run = runTara(
      [
        "bench",
        "figure4",
        "--quick",
        "--mechanisms",
        "lpc-cs",
        "--clients",
        "1,2",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--cluster-warmup",
        "1",
        "--repeat",
        "2",
        "--json",
      ],
      { cwd, timeoutMs: 240_000 },
    );
    const lines = run.lines;
    const points = lines.filter((l) => "clients" in l);
    assert.deepEqual(
      points.map((p) => `${p.run} ${p.curveId} ${p.clients}`),
      ["1 lpc-cs 1", "1 lpc-cs 2", "2 lpc-cs 1", "2 lpc-cs 2"],
    );
    for (const p of points) assert.ok(Number(p.requestsPerSec) > 0 && Number(p.p50Ms) > 0);
    const targets = lines.filter((l) => "target" in l).map((l) => l.target as { met: unknown });
    // Both targets compare with PDC's peak, which this run did not measure.
    assert.deepEqual(
      targets.map((t) => t.met),
      [null, null],
    );
    const peaks = lines
      .filter((l) => "peak" in l)
      .map((l) => l.peak as { curveId: string; perRun: number[]; peak: { median: number } });
    assert.equal(peaks.length, 1);
    assert.equal(peaks[0]!.perRun.length, 2);
    const [a, b] = peaks[0]!.perRun as [number, number];
    assert.equal(peaks[0]!.peak.median, (a + b) / 2);

    const summary = lines.at(-1) as { dir: string; files: string[] };
    assert.equal(dirname(summary.dir), join(cwd, "bench-results"));
    assert.match(basename(summary.dir), /^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z-figure4$/);
    assert.deepEqual(readdirSync(summary.dir).sort(), [
      "figure4-p50.png",
      "figure4-p50.svg",
      "figure4-p99.png",
      "figure4-p99.svg",
      "figure4.json",
      "peaks.csv",
      "points.csv",
    ]);
    const csv = parseCsv(readFileSync(join(summary.dir, "points.csv"), "utf8"), {
      columns: true,
    }) as Record<string, string>[];
    assert.deepEqual(
      csv.map((r) => `${r.run} ${r.curve} ${r.clients}`),
      ["1 LPC-CS 1", "1 LPC-CS 2", "2 LPC-CS 1", "2 LPC-CS 2"],
    );
    const saved = JSON.parse(readFileSync(join(summary.dir, "figure4.json"), "utf8")) as {
      runs: { curves: { points: unknown[]; warmup: { perSecond: number[] } }[] }[];
      summary: { peaks: unknown[]; targets: unknown[] };
      machine: { before: { nproc: number } };
    };
    assert.equal(saved.runs.length, 2);
    for (const run of saved.runs) {
      assert.equal(run.curves.length, 1);
      assert.ok(run.curves.every((c) => c.points.length === 2 && c.warmup.perSecond.length === 1));
    }
    assert.equal(saved.summary.peaks.length, 1);
    assert.equal(saved.summary.targets.length, 2);
    assert.ok(saved.machine.before.nproc >= 1);
    for (const name of ["figure4-p50", "figure4-p99"]) {
      const svg = readFileSync(join(summary.dir, `${name}.svg`), "utf8");
      assert.equal(XMLValidator.validate(svg), true);
      assert.ok(svg.includes("Figure 4") && svg.includes("LPC-CS"));
      assert.ok(svg.includes("median of 2 runs"));
      const png = readFileSync(join(summary.dir, `${name}.png`));
      assert.equal(png.subarray(1, 4).toString("latin1"), "PNG");
      assert.ok(png.length > 10_000);
    }
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});
