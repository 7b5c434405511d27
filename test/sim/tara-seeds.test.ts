/**
 * TARA in the deterministic simulator: hundreds of seeded runs with crashes, restarts and
 * pauses of every stage (the leader included), each checked for agreement, linearizability and
 * liveness, under PDC, under LPC (instance checkpoints on a simulated store: committers are
 * restored and vote again, writes are torn by crashes, the store goes away for a while) and
 * under GPC (every crash rolls the whole topology back to the last global checkpoint). A
 * failing seed prints the command that replays it; keep it below as a regression.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  runScenario,
  type ScenarioMechanism,
  type ScenarioReport,
} from "../../src/sim/tara-scenario.js";

const SEEDS_PER_F = Number(process.env.TARA_SIM_SEEDS ?? 250);
/** LPC runs: fewer, the PDC ones cover the protocol; these cover restores and the store. */
const LPC_SEEDS = process.env.TARA_SIM_LPC_SEEDS
  ? Number(process.env.TARA_SIM_LPC_SEEDS)
  : undefined;
const LPC_SEEDS_PER_F: Record<number, number> = { 1: LPC_SEEDS ?? 150, 2: LPC_SEEDS ?? 100 };
const GPC_SEEDS_PER_F: Record<number, number> = { 1: LPC_SEEDS ?? 150, 2: LPC_SEEDS ?? 100 };

/** Seeds that once failed, with what they found. */
const REGRESSIONS: { seed: number; f: number; mechanism: ScenarioMechanism; found: string }[] = [
  {
    seed: 156,
    f: 2,
    mechanism: "pdc",
    found: "a restarted leader never learnt the stable checkpoint: window stalled",
  },
  {
    seed: 225,
    f: 2,
    mechanism: "pdc",
    found: "a restarted leader never learnt the stable checkpoint: window stalled",
  },
  {
    seed: 2,
    f: 1,
    mechanism: "lpc",
    found: "InstanceLog's batch-delay timer re-armed for a rounding hair: endless at one instant",
  },
  {
    // (Found as seeds 746 and 512 while replicas still aligned; these fail the same way now.)
    seed: 949,
    f: 1,
    mechanism: "gpc",
    found:
      "a GPC snapshot held the executor's live log: values executed after the cut were saved " +
      "with it and, after a rollback, served to a trailing peer",
  },
  {
    seed: 1328,
    f: 1,
    mechanism: "gpc",
    found: "the same (an executor executed a rolled-back value)",
  },
];

function explain(failures: ScenarioReport[]): string {
  return failures
    .slice(0, 5)
    .map((r) => `seed ${r.seed} (${r.replay}):\n  ${r.violations.join("\n  ")}`)
    .join("\n");
}

/** Runs seeds 1..count; asserts none failed; returns the reports. */
function runSeeds(count: number, f: number, mechanism: ScenarioMechanism): ScenarioReport[] {
  const reports = Array.from({ length: count }, (_, i) =>
    runScenario({ seed: i + 1, f, mechanism }),
  );
  const failures = reports.filter((r) => !r.ok);
  assert.deepEqual(
    failures.map((r) => r.seed),
    [],
    explain(failures),
  );
  return reports;
}

const total = (
  reports: ScenarioReport[],
  field: "views" | "completed" | "restored" | "rollbacks" | "deltasChecked",
) => reports.reduce((sum, r) => sum + r[field], 0);

for (const f of [1, 2]) {
  test(`${SEEDS_PER_F} seeds with f=${f}: no violation, every request completes`, () => {
    const reports = runSeeds(SEEDS_PER_F, f, "pdc");
    // The runs must exercise what they claim to: view changes and real load.
    const views = total(reports, "views");
    assert.ok(views > SEEDS_PER_F, `only ${views} view changes in ${SEEDS_PER_F} runs`);
    const completed = total(reports, "completed");
    assert.ok(completed > 50 * SEEDS_PER_F, `only ${completed} requests completed`);
  });
}

for (const f of [1, 2]) {
  const seeds = LPC_SEEDS_PER_F[f]!;
  test(`${seeds} LPC seeds with f=${f}: restored committers vote again, nothing lost`, () => {
    const reports = runSeeds(seeds, f, "lpc");
    // Committers must really come back (the restore checker ran) under real load.
    const restored = total(reports, "restored");
    assert.ok(restored > 2 * seeds, `only ${restored} committer restores in ${seeds} runs`);
    const completed = total(reports, "completed");
    assert.ok(completed > 50 * seeds, `only ${completed} requests completed`);
  });
}

for (const f of [1, 2]) {
  const seeds = GPC_SEEDS_PER_F[f]!;
  test(`${seeds} GPC seeds with f=${f}: rollbacks lose nothing acknowledged`, () => {
    const reports = runSeeds(seeds, f, "gpc");
    // Every crash rolls everything back, and replies wait for a global checkpoint: fewer
    // requests complete than under PDC, but the runs must roll back and still serve.
    const rollbacks = total(reports, "rollbacks");
    assert.ok(rollbacks > 2 * seeds, `only ${rollbacks} rollbacks in ${seeds} runs`);
    // Proposers, committers and executors save deltas; each was checked against a snapshot.
    const deltas = total(reports, "deltasChecked");
    assert.ok(deltas > 20 * seeds, `only ${deltas} deltas checked in ${seeds} runs`);
    const completed = total(reports, "completed");
    assert.ok(completed > 8 * seeds, `only ${completed} requests completed`);
  });
}

test("without faults every run completes its load without a view change", () => {
  for (let seed = 1; seed <= 20; seed++) {
    const report = runScenario({ seed, f: 1, faults: false });
    assert.ok(report.ok, explain([report]));
    assert.equal(report.views, 0);
    assert.ok(report.completed > 300, `seed ${seed}: ${report.completed} requests`);
  }
});

test("without faults LPC completes its load without a view change", () => {
  for (let seed = 1; seed <= 5; seed++) {
    const report = runScenario({ seed, f: 1, faults: false, mechanism: "lpc" });
    assert.ok(report.ok, explain([report]));
    assert.equal(report.views, 0);
    assert.ok(report.completed > 300, `seed ${seed}: ${report.completed} requests`);
  }
});

test("without faults GPC completes its load without a rollback", () => {
  for (let seed = 1; seed <= 5; seed++) {
    const report = runScenario({ seed, f: 1, faults: false, mechanism: "gpc" });
    assert.ok(report.ok, explain([report]));
    assert.equal(report.views, 0);
    assert.equal(report.rollbacks, 0);
    // Replies wait for the next global checkpoint (every 20-100 ms): fewer than under PDC
    // (with 100 ms, each of the 5 clients completes about one request per interval).
    assert.ok(report.completed > 100, `seed ${seed}: ${report.completed} requests`);
  }
});

for (const { seed, f, mechanism, found } of REGRESSIONS) {
  test(`regression seed ${seed} (f=${f}, ${mechanism}): ${found}`, () => {
    const report = runScenario({ seed, f, mechanism });
    assert.ok(report.ok, explain([report]));
  });
}

test("the same seed replays the same run", () => {
  for (const mechanism of ["pdc", "lpc", "gpc"] as const) {
    const a = runScenario({ seed: 7, f: 1, mechanism });
    const b = runScenario({ seed: 7, f: 1, mechanism });
    assert.deepEqual(
      { faults: a.faults, completed: a.completed, events: a.events, restored: a.restored },
      { faults: b.faults, completed: b.completed, events: b.events, restored: b.restored },
    );
    assert.equal(a.replay, `npx tara sim --seed 7 --f 1 --mechanism ${mechanism}`);
  }
});
