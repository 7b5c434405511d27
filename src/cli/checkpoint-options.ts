/**
 * The checkpointing options shared by `tara start` and `tara bench`: the mechanism for every
 * stage, per-stage overrides and the rest from a JSON file, flags winning over the file.
 */
import { Option, type Command } from "commander";
import { readFileSync } from "node:fs";
import { mechanisms } from "../platform/api/stage.js";
import { checkpointConfigSchema, type CheckpointConfig } from "../platform/runtime/config.js";
import { integer } from "./parsers.js";

export function addCheckpointOptions(command: Command): Command {
  return command
    .addOption(
      new Option("--mechanism <name>", "checkpoint mechanism of every stage").choices(mechanisms),
    )
    .option(
      "--instance-checkpoints",
      "LPC: instance checkpoints in every stage that needs them (full crash recovery)",
    )
    .option("--checkpoint-store <url>", "fs:<dir> or nats://host:port[/bucket] (default: data dir)")
    .addOption(
      new Option(
        "--batch-factor <n>",
        "instance updates per write (1: adaptive group commit)",
      ).argParser(integer(1, 100_000)),
    )
    .addOption(
      new Option("--batch-delay-ms <ms>", "longest wait for a batch factor to fill").argParser(
        integer(0, 60_000),
      ),
    )
    .addOption(
      new Option("--gpc-interval-ms <ms>", "GPC: global checkpoint period").argParser(
        integer(50, 3_600_000),
      ),
    )
    .option(
      "--checkpoint-config <file>",
      'JSON with the same settings and per-stage mechanisms: {"stages": {"executor": "lpc-cm"}}',
    );
}

export interface CheckpointFlags {
  mechanism?: string;
  instanceCheckpoints?: boolean;
  checkpointStore?: string;
  batchFactor?: number;
  batchDelayMs?: number;
  gpcIntervalMs?: number;
  checkpointConfig?: string;
}

/** The validated checkpoint configuration the flags (and the file they name) describe. */
export function checkpointConfigOf(flags: CheckpointFlags): CheckpointConfig {
  const file = flags.checkpointConfig
    ? (JSON.parse(readFileSync(flags.checkpointConfig, "utf8")) as Record<string, unknown>)
    : {};
  const fromFlags = {
    mechanism: flags.mechanism,
    instance: flags.instanceCheckpoints,
    store: flags.checkpointStore,
    batchFactor: flags.batchFactor,
    batchDelayMs: flags.batchDelayMs,
    gpcIntervalMs: flags.gpcIntervalMs,
  };
  const defined = Object.fromEntries(Object.entries(fromFlags).filter(([, v]) => v !== undefined));
  const result = checkpointConfigSchema.safeParse({ ...file, ...defined });
  if (!result.success) {
    const issues = result.error.issues.map((i) => `${i.path.join(".") || "config"}: ${i.message}`);
    throw new Error(`bad checkpoint configuration: ${issues.join("; ")}`);
  }
  return result.data;
}
