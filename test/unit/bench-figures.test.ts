import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  figure4Curves,
  figure4Targets,
  figure5Curves,
  figure5Targets,
  plateaued,
  type CurveResult,
} from "../../src/bench/figures.js";
import type { ThroughputPoint } from "../../src/bench/throughput.js";

const rates = (...values: number[]) => values.map((requestsPerSec) => ({ requestsPerSec }));

function point(clients: number, requestsPerSec: number, p50Ms: number): ThroughputPoint {
  return {
    mechanism: "pdc",
    instance: false,
    clients,
    requestsPerSec,
    windowS: 10,
    retries: 0,
    count: requestsPerSec * 10,
    p50Ms,
    p90Ms: p50Ms,
    p99Ms: p50Ms,
    p999Ms: p50Ms,
    maxMs: p50Ms,
    meanMs: p50Ms,
    processes: {},
    machine: null,
  };
}

function result(curve: CurveResult["curve"], points: ThroughputPoint[]): CurveResult {
  const peak = points.reduce<ThroughputPoint | undefined>(
    (best, p) => (!best || p.requestsPerSec > best.requestsPerSec ? p : best),
    undefined,
  );
  return { curve, run: { points, warmup: null, skipped: [] }, peak };
}

describe("plateau rule", () => {
  it("ends a curve after two points in a row gained less than the threshold", () => {
    assert.equal(plateaued(rates(100, 400, 1000), 0.05), false);
    assert.equal(plateaued(rates(100, 1000, 1040), 0.05), false); // one flat point
    assert.equal(plateaued(rates(100, 1000, 1040, 1045), 0.05), true);
    assert.equal(plateaued(rates(100, 1000, 900, 980), 0.05), true); // fell, then below the best
    assert.equal(plateaued(rates(100, 1000, 1040, 1100), 0.05), false); // grew 5.8% over 1040
    assert.equal(plateaued(rates(100, 1000, 1000, 1000), 0), false); // 0: never
  });
});

describe("curves", () => {
  it("figure 5: GPC per interval, LPC per batch factor, PDC last", () => {
    const curves = figure5Curves({
      gpcIntervalsMs: [100, 500],
      lpc: ["lpc-cm", "lpc-cs"],
      batchFactors: [1, 10],
      baseline: true,
    });
    assert.deepEqual(
      curves.map((c) => c.id),
      ["gpc-100ms", "gpc-500ms", "lpc-cm-bf1", "lpc-cm-bf10", "lpc-cs-bf1", "lpc-cs-bf10", "pdc"],
    );
    const gpc500 = curves[1]!;
    assert.equal(gpc500.checkpoints.gpcIntervalMs, 500);
    assert.equal(gpc500.timeoutMs, 5000);
    const lpc = curves.find((c) => c.id === "lpc-cs-bf10")!;
    assert.equal(lpc.checkpoints.instance, true);
    assert.equal(lpc.checkpoints.batchFactor, 10);
    assert.equal(curves.at(-1)!.checkpoints.instance, false);
    assert.equal(
      figure5Curves({ gpcIntervalsMs: [], lpc: [], batchFactors: [1], baseline: false }).length,
      0,
    );
  });

  it("figure 4: group checkpoints only", () => {
    const curves = figure4Curves(["pdc", "lpc-cm", "lpc-cs"]);
    assert.deepEqual(
      curves.map((c) => [c.label, c.checkpoints.mechanism, c.checkpoints.instance]),
      [
        ["PDC", "pdc", false],
        ["LPC-CM", "lpc-cm", false],
        ["LPC-CS", "lpc-cs", false],
      ],
    );
  });
});

describe("targets", () => {
  it("figure 4 compares each LPC peak with PDC's from the same run", () => {
    const [pdc, cm, cs] = figure4Curves(["pdc", "lpc-cm", "lpc-cs"]);
    const targets = figure4Targets([
      result(pdc!, [point(1, 200, 5), point(64, 5000, 12)]),
      result(cm!, [point(1, 190, 5), point(64, 4000, 15)]),
      result(cs!, [point(1, 210, 5), point(64, 4800, 13)]),
    ]);
    assert.deepEqual(
      targets.map((t) => [t.measured, t.met]),
      [
        ["80% (4,000 vs 5,000 req/s)", false],
        ["96% (4,800 vs 5,000 req/s)", true],
      ],
    );
    assert.equal(figure4Targets([result(cs!, [point(1, 10, 5)])])[1]!.met, null);
  });

  it("figure 5: LPC-CS vs PDC, LPC p50 at 16 clients, GPC p50 at its peak", () => {
    const curves = figure5Curves({
      gpcIntervalsMs: [100],
      lpc: ["lpc-cs"],
      batchFactors: [1, 10],
      baseline: true,
    });
    const [gpc, cs1, cs10, pdc] = curves;
    const targets = figure5Targets([
      result(gpc!, [point(1, 9, 110), point(16, 150, 105), point(64, 300, 350)]),
      result(cs1!, [point(1, 100, 4), point(16, 1000, 6)]),
      result(cs10!, [point(1, 90, 5), point(16, 1200, 4.5)]),
      result(pdc!, [point(1, 200, 3), point(16, 2000, 4)]),
    ]);
    assert.deepEqual(
      targets.map((t) => [t.name, t.met]),
      [
        ["LPC-CS peak with instance checkpoints ≥ half the PDC peak", true],
        ["LPC-CS adaptive (bf 1): p50 at 16 clients", false],
        ["LPC-CS bf 10: p50 at 16 clients", true],
        ["GPC 100 ms: p50 at peak throughput", false],
      ],
    );
    assert.match(targets[0]!.measured, /^60% \(LPC-CS bf 10: 1,200 vs 2,000 req\/s\)$/);
  });
});
