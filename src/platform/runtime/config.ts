/**
 * What every platform process is told at start: the cluster's shape and where things are.
 * The launcher passes it to each child in the TARA_PROCESS environment variable (JSON); the
 * child validates it before doing anything else.
 */
import { z } from "zod";

export const clusterConfigSchema = z.object({
  /** A built-in topology name or a path to a module exporting `createTopology`. */
  topology: z.string().min(1),
  params: z.record(z.string(), z.string()),
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

/** State of the current run (incarnations, whether the topology started); cleared by `tara start`. */
export function runDirOf(cluster: ClusterConfig): string {
  return `${cluster.dataDir}/run`;
}
