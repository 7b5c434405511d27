import { Option, type Command } from "commander";
import { runScenario, scenarioMechanisms, type ScenarioReport } from "../sim/tara-scenario.js";
import { runZkScenario, type ZkScenarioReport } from "../sim/zk-scenario.js";
import { integer } from "./parsers.js";

export function registerSim(program: Command): void {
  program
    .command("sim")
    .description(
      "run TARA in the deterministic simulator: seeded crashes, restarts and pauses, then " +
        "agreement, linearizability and liveness checks (one seed replays one run exactly)",
    )
    .option("--seed <n>", "first seed", integer(0, 2 ** 32 - 1), 1)
    .option("--seeds <count>", "how many consecutive seeds", integer(1, 1_000_000), 1)
    .option("--f <f>", "crashes tolerated per stage", integer(1, 4), 1)
    .addOption(
      new Option(
        "--mechanism <name>",
        "checkpointing: pdc; lpc (instance checkpoints on a simulated store: restarted " +
          "committers are restored and vote again); or gpc (global checkpoints: a crash rolls " +
          "the whole topology back and replays the sources' tuples)",
      )
        .choices(scenarioMechanisms)
        .default("pdc"),
    )
    .addOption(
      new Option(
        "--service <name>",
        "the replicated service: kv (the key-value store, linearizability checked), or zk " +
          "(ZooKeeper: simulated front-end clients, history checked against a ZooKeeper model)",
      )
        .choices(["kv", "zk"])
        .default("kv"),
    )
    .option("--clients <n>", "closed-loop clients", integer(1, 64), 5)
    .option(
      "--safety-ms <ms>",
      "virtual time with faults before healing",
      integer(1, 600_000),
      3000,
    )
    .option("--no-faults", "no crashes or pauses")
    .option("--json", "one JSON report per seed", false)
    .action((options) => {
      let failed = 0;
      for (let seed = options.seed; seed < options.seed + options.seeds; seed++) {
        const scenario = {
          seed,
          f: options.f,
          mechanism: options.mechanism,
          clients: options.clients,
          safetyMs: options.safetyMs,
          faults: options.faults,
        };
        const report = options.service === "zk" ? runZkScenario(scenario) : runScenario(scenario);
        if (!report.ok) failed++;
        if (options.json) console.log(JSON.stringify(report));
        else if ("linearizable" in report) print(report, options.seeds === 1);
        else printZk(report, options.seeds === 1);
      }
      if (!options.json) {
        console.log(
          `${options.seeds - failed} of ${options.seeds} seeds passed ` +
            `(${options.service}, f=${options.f}, ${options.mechanism})`,
        );
      }
      if (failed > 0) process.exitCode = 1;
    });
}

function print(report: ScenarioReport, verbose: boolean): void {
  const summary =
    `seed ${report.seed} f=${report.f} ${report.mechanism}: ${report.ok ? "ok" : "FAILED"}, ` +
    `${report.completed} requests, executed up to ${report.lastExecuted}, ` +
    `${report.views} view changes, ${report.faults.length} faults` +
    (report.mechanism === "lpc" ? `, ${report.restored} committer restores checked` : "") +
    (report.mechanism === "gpc" ? `, ${report.rollbacks} rollbacks` : "");
  if (report.ok) {
    if (verbose) console.log(summary);
    return;
  }
  console.log(summary);
  for (const violation of report.violations) console.log(`  violation: ${violation}`);
  console.log(`  faults: ${report.faults.join("; ")}`);
  console.log(`  replay: ${report.replay}`);
}

function printZk(report: ZkScenarioReport, verbose: boolean): void {
  const summary =
    `seed ${report.seed} f=${report.f} ${report.mechanism} zk: ${report.ok ? "ok" : "FAILED"}, ` +
    `${report.sessions} sessions, ${report.reconnects} reconnects, ${report.commands} commands (${report.requests} requests), ` +
    `${report.transactions} zxids, ${report.notifications} notifications, ` +
    `${report.held} messages held, executed up to ${report.lastExecuted}, ` +
    `${report.views} view changes, ${report.faults.length} faults`;
  if (report.ok) {
    if (verbose) console.log(summary);
    return;
  }
  console.log(summary);
  for (const violation of report.violations) console.log(`  violation: ${violation}`);
  console.log(`  faults: ${report.faults.join("; ")}`);
  console.log(`  replay: ${report.replay}`);
}
