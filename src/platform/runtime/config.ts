/**
 * What every platform process is told at start: the cluster's shape and where things are.
 * The launcher passes it to each child in the TARA_PROCESS environment variable (JSON); the
 * child validates it before doing anything else.
 */
import { z } from "zod";
import { mechanisms, type Mechanism } from "../api/stage.js";

/**
 * How the deployment checkpoints its stages (docs/CHECKPOINTING.md). One mechanism for every
 * stage unless `stages` names another for some.
 */
export const checkpointConfigSchema = z
  .object({
    mechanism: z.enum(mechanisms).default("pdc"),
    stages: z.record(z.string(), z.enum(mechanisms)).default({}),
    /** Instance checkpoints under LPC (full crash recovery); GPC always has them, PDC never. */
    instance: z.boolean().default(false),
    /** Where LPC and GPC write: `fs:<dir>` or `nats://host:port[/bucket]`; default: the data directory. */
    store: z.string().min(1).optional(),
    /** A write of instance updates waits for this many (or `batchDelayMs`); 1: never waits. */
    batchFactor: z.number().int().min(1).max(100_000).default(1),
    batchDelayMs: z.number().int().min(0).max(60_000).default(2),
    /** An instance log is compacted into a full snapshot after this many delta writes. */
    compactEvery: z.number().int().min(1).max(1_000_000).default(1000),
    /** GPC: the topology manager starts a global checkpoint this often. */
    gpcIntervalMs: z.number().int().min(50).max(3_600_000).default(500),
  })
  .strict()
  .refine((c) => !(c.instance && c.mechanism === "pdc"), {
    message: "PDC has no instance checkpoints: choose gpc, lpc-cm or lpc-cs",
  })
  .refine(
    (c) =>
      !Object.values(c.stages).includes("gpc") ||
      (c.mechanism === "gpc" && Object.values(c.stages).every((m) => m === "gpc")),
    { message: "GPC checkpoints the whole topology: every stage or none" },
  )
  .refine((c) => c.mechanism !== "gpc" || Object.values(c.stages).every((m) => m === "gpc"), {
    message: "GPC checkpoints the whole topology: every stage or none",
  });
export type CheckpointConfig = z.infer<typeof checkpointConfigSchema>;

/** GPC checkpoints every stage of the topology together. */
export function isGlobalCheckpointing(config: CheckpointConfig): boolean {
  return config.mechanism === "gpc";
}

/** LPC-CM and GPC write through the container's checkpoint manager. */
export function usesCheckpointManager(mechanism: Mechanism): boolean {
  return mechanism === "lpc-cm" || mechanism === "gpc";
}

/** The mechanism a stage runs with. */
export function mechanismOf(config: CheckpointConfig, stage: string): Mechanism {
  return config.stages[stage] ?? config.mechanism;
}

export const clusterConfigSchema = z.object({
  /** A built-in topology name or a path to a module exporting `createTopology`. */
  topology: z.string().min(1),
  params: z.record(z.string(), z.string()),
  /** Distinguishes this run's checkpoints from an earlier run's in a shared store. */
  run: z.string().regex(/^[0-9a-f]{8,32}$/),
  checkpoints: checkpointConfigSchema,
  containers: z.number().int().min(1).max(256),
  allowColocation: z.boolean(),
  /** Hex-encoded cluster secret for the link handshakes. */
  secret: z.string().regex(/^[0-9a-f]{32,}$/),
  dataDir: z.string().min(1),
  host: z.string().min(1),
  tmasterPort: z.number().int().min(0).max(65535),
  adminPort: z.number().int().min(0).max(65535),
  /** Base client port of the gateways: container c's listens on base + c; 0: any free port. */
  gatewayPort: z.number().int().min(0).max(65535),
  heartbeatMs: z.number().int().min(10).max(60_000),
  /** A container whose stream manager is silent this long is considered dead. */
  heartbeatTimeoutMs: z.number().int().min(50).max(600_000),
  /** A connected instance that sends no report this long is hung: it is killed and restarted. */
  instanceTimeoutMs: z.number().int().min(50).max(600_000),
});
export type ClusterConfig = z.infer<typeof clusterConfigSchema>;

export const processConfigSchema = z.object({
  cluster: clusterConfigSchema,
  container: z.number().int().min(0).optional(),
  task: z.number().int().min(0).optional(),
  incarnation: z.number().int().min(1).optional(),
  stmgrPort: z.number().int().min(1).max(65535).optional(),
});
export type ProcessConfig = z.infer<typeof processConfigSchema>;

export const PROCESS_ENV = "TARA_PROCESS";

export function readProcessConfig(): ProcessConfig {
  const text = process.env[PROCESS_ENV];
  if (!text) throw new Error(`${PROCESS_ENV} is not set: platform processes are started by tara`);
  return processConfigSchema.parse(JSON.parse(text));
}

export function logDirOf(cluster: ClusterConfig): string {
  return `${cluster.dataDir}/logs`;
}

/** The checkpoint store of a deployment: the configured one, or a directory beside the logs. */
export function storeUrlOf(cluster: ClusterConfig): string {
  return cluster.checkpoints.store ?? `fs:${cluster.dataDir}/checkpoints`;
}

/** State of the current run (incarnations, whether the topology started); cleared by `tara start`. */
export function runDirOf(cluster: ClusterConfig): string {
  return `${cluster.dataDir}/run`;
}
