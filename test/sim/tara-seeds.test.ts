/**
 * TARA in the deterministic simulator: hundreds of seeded runs with crashes, restarts and
 * pauses of every stage (the leader included), each checked for agreement, linearizability and
 * liveness, under PDC and under LPC (instance checkpoints on a simulated store: committers are
 * restored and vote again, writes are torn by crashes, the store goes away for a while). A
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
];

function explain(failures: ScenarioReport[]): string {
  return failures
    .slice(0, 5)
    .map((r) => `seed ${r.seed} (${r.replay}):\n  ${r.violations.join("\n  ")}`)
    .join("\n");
}

for (const f of [1, 2]) {
  test(`${SEEDS_PER_F} seeds with f=${f}: no violation, every request completes`, () => {
    const failures: ScenarioReport[] = [];
    let views = 0;
    let completed = 0;
    for (let seed = 1; seed <= SEEDS_PER_F; seed++) {
      const report = runScenario({ seed, f, mechanism: "pdc" });
      if (!report.ok) failures.push(report);
      views += report.views;
      completed += report.completed;
    }
    assert.deepEqual(
      failures.map((r) => r.seed),
      [],
      explain(failures),
    );
    // The runs must exercise what they claim to: view changes and real load.
    assert.ok(views > SEEDS_PER_F, `only ${views} view changes in ${SEEDS_PER_F} runs`);
    assert.ok(completed > 50 * SEEDS_PER_F, `only ${completed} requests completed`);
  });
}

for (const f of [1, 2]) {
  const seeds = LPC_SEEDS_PER_F[f]!;
  test(`${seeds} LPC seeds with f=${f}: restored committers vote again, nothing lost`, () => {
    const failures: ScenarioReport[] = [];
    let restored = 0;
    let completed = 0;
    for (let seed = 1; seed <= seeds; seed++) {
      const report = runScenario({ seed, f, mechanism: "lpc" });
      if (!report.ok) failures.push(report);
      restored += report.restored;
      completed += report.completed;
    }
    assert.deepEqual(
      failures.map((r) => r.seed),
      [],
      explain(failures),
    );
    // Committers must really come back (the restore checker ran) under real load.
    assert.ok(restored > 2 * seeds, `only ${restored} committer restores in ${seeds} runs`);
    assert.ok(completed > 50 * seeds, `only ${completed} requests completed`);
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

for (const { seed, f, mechanism, found } of REGRESSIONS) {
  test(`regression seed ${seed} (f=${f}, ${mechanism}): ${found}`, () => {
    const report = runScenario({ seed, f, mechanism });
    assert.ok(report.ok, explain([report]));
  });
}

test("the same seed replays the same run", () => {
  for (const mechanism of ["pdc", "lpc"] as const) {
    const a = runScenario({ seed: 7, f: 1, mechanism });
    const b = runScenario({ seed: 7, f: 1, mechanism });
    assert.deepEqual(
      { faults: a.faults, completed: a.completed, events: a.events, restored: a.restored },
      { faults: b.faults, completed: b.completed, events: b.events, restored: b.restored },
    );
    assert.equal(a.replay, `npx tara sim --seed 7 --f 1 --mechanism ${mechanism}`);
  }
});
