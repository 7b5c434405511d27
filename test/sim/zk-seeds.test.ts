/**
 * The replicated ZooKeeper service in the deterministic simulator (src/sim/zk-scenario.ts):
 * seeded runs with crashes, restarts and pauses of every TARA stage, simulated ZooKeeper
 * clients acting like the gateway's front end, and their history checked against a model of
 * ZooKeeper (replies, Stats, sequential names, watches and the order of notifications and
 * replies), then liveness and the executors' final states, under PDC, LPC and GPC (whose
 * rollbacks the checkers follow). A failing seed prints the command that replays it; keep it
 * below as a regression.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ScenarioMechanism } from "../../src/sim/tara-scenario.js";
import { runZkScenario, type ZkScenarioReport } from "../../src/sim/zk-scenario.js";

const seedsFrom = (name: string, fallback: number) =>
  process.env[name] ? Number(process.env[name]) : fallback;
/** Per run on average, at least: what the runs must exercise to mean something. */
interface Minimum {
  views: number;
  commands: number;
  notifications: number;
  rollbacks: number;
}
const FULL: Minimum = { views: 1, commands: 100, notifications: 20, rollbacks: 0 };
/** Every crash stops the service until its rollback is over: far fewer commands complete. */
const GPC: Minimum = { views: 1, commands: 8, notifications: 0.5, rollbacks: 2 };
const SEEDS: { f: number; mechanism: ScenarioMechanism; seeds: number; min: Minimum }[] = [
  { f: 1, mechanism: "pdc", seeds: seedsFrom("TARA_ZK_SIM_SEEDS", 40), min: FULL },
  { f: 2, mechanism: "pdc", seeds: seedsFrom("TARA_ZK_SIM_SEEDS_F2", 20), min: FULL },
  { f: 1, mechanism: "lpc", seeds: seedsFrom("TARA_ZK_SIM_LPC_SEEDS", 10), min: FULL },
  { f: 1, mechanism: "gpc", seeds: seedsFrom("TARA_ZK_SIM_GPC_SEEDS", 40), min: GPC },
];

/** Seeds that once failed, with what they found. */
const REGRESSIONS: { seed: number; f: number; mechanism: ScenarioMechanism; found: string }[] = [];

function explain(failures: ZkScenarioReport[]): string {
  return failures
    .slice(0, 5)
    .map((r) => `seed ${r.seed} (${r.replay}):\n  ${r.violations.join("\n  ")}`)
    .join("\n");
}

for (const { f, mechanism, seeds, min } of SEEDS) {
  test(`${seeds} ZooKeeper seeds with f=${f} (${mechanism}): the history checks out`, () => {
    const failures: ZkScenarioReport[] = [];
    let commands = 0;
    let notifications = 0;
    let views = 0;
    let rollbacks = 0;
    for (let seed = 1; seed <= seeds; seed++) {
      const report = runZkScenario({ seed, f, mechanism });
      if (!report.ok) failures.push(report);
      commands += report.commands;
      notifications += report.notifications;
      views += report.views;
      rollbacks += report.rollbacks;
    }
    assert.deepEqual(
      failures.map((r) => r.seed),
      [],
      explain(failures),
    );
    // The runs must exercise what they claim to: view changes, load, watches firing and, under
    // GPC, rollbacks.
    assert.ok(views >= min.views * seeds, `only ${views} view changes in ${seeds} runs`);
    assert.ok(commands > min.commands * seeds, `only ${commands} commands completed`);
    assert.ok(notifications > min.notifications * seeds, `only ${notifications} notifications`);
    assert.ok(rollbacks >= min.rollbacks * seeds, `only ${rollbacks} rollbacks`);
  });
}

test("without faults every ZooKeeper run completes its load without a view change", () => {
  for (let seed = 1; seed <= 3; seed++) {
    const report = runZkScenario({ seed, f: 1, faults: false, safetyMs: 1500 });
    assert.ok(report.ok, explain([report]));
    assert.equal(report.views, 0);
    assert.ok(report.commands > 250, `seed ${seed}: ${report.commands} commands`);
  }
});

for (const { seed, f, mechanism, found } of REGRESSIONS) {
  test(`regression seed ${seed} (f=${f}, ${mechanism}): ${found}`, () => {
    const report = runZkScenario({ seed, f, mechanism });
    assert.ok(report.ok, explain([report]));
  });
}

test("the same ZooKeeper seed replays the same run", () => {
  const a = runZkScenario({ seed: 7, f: 1 });
  const b = runZkScenario({ seed: 7, f: 1 });
  assert.deepEqual(
    { faults: a.faults, commands: a.commands, events: a.events, zxids: a.transactions },
    { faults: b.faults, commands: b.commands, events: b.events, zxids: b.transactions },
  );
  assert.equal(a.replay, "npx tara sim --service zk --seed 7 --f 1 --mechanism pdc");
});
