/**
 * Every message of the platform's links, and their validation. A frame body is either a tuple
 * frame (a positional array, the hot path, checked by hand) or a control message (an object
 * with a `t` tag, checked with zod). Anything else is FRAME_INVALID.
 *
 * Links and what flows on them (after the handshake of handshake.ts):
 *   instance -> stmgr   register, report, emit
 *   stmgr -> instance   start, throttle, deliver
 *   stmgr -> stmgr      forward, backpressure        (one connection per direction)
 *   stmgr -> tmaster    stmgr, heartbeat
 *   tmaster -> stmgr    plan
 *   instance -> stmgr -> ckptmgr   ckpt-put, ckpt-part, ckpt-load, ckpt-prune  (LPC-CM)
 *   ckptmgr -> stmgr -> instance   ckpt-ok, ckpt-part, ckpt-error
 */
import { z } from "zod";
import { WireError } from "./errors.js";
import type { TupleFrameType } from "./tuples.js";

export { DELIVER, EMIT, FORWARD } from "./tuples.js";

/** A tuple frame: its type and its binary records (tuples.ts). */
export type TupleFrame<T extends TupleFrameType = TupleFrameType> = [type: T, records: Buffer];

const MAX_TASK = 1 << 20;
const bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, "expected bytes");
const task = z.number().int().min(0).max(MAX_TASK);
const count = z.number().int().min(0);

/** port: a stage's external port, connecting to its container's gateway (src/tara/gateway). */
export const roles = ["instance", "stmgr", "peer", "port"] as const;
export type Role = (typeof roles)[number];

export const challengeSchema = z.object({ t: z.literal("challenge"), nonce: bytes });
export const helloSchema = z.object({
  t: z.literal("hello"),
  role: z.enum(roles),
  id: z.string().max(200),
  nonce: bytes,
  proof: bytes,
});
export const welcomeSchema = z.object({ t: z.literal("welcome"), proof: bytes });

export const registerSchema = z.object({
  t: z.literal("register"),
  task,
  incarnation: z.number().int().min(1),
  pid: z.number().int().min(1),
});

export const processStatsSchema = z.object({
  rssBytes: count,
  cpuUserUs: count,
  cpuSystemUs: count,
});

export const reportSchema = z.object({
  t: z.literal("report"),
  tuplesIn: count,
  tuplesOut: count,
  dropped: count,
  throttled: z.boolean(),
  status: z.record(z.string(), z.unknown()),
  stats: processStatsSchema,
});

/** Stream manager to instance: begin processing (the topology is up, routes are connected). */
export const startSchema = z.object({ t: z.literal("start") });
export const throttleSchema = z.object({ t: z.literal("throttle"), on: z.boolean() });
export const backpressureSchema = z.object({
  t: z.literal("backpressure"),
  container: z.number().int().min(0),
  on: z.boolean(),
});

/** silent: connected, but no report for the instance timeout: hung, about to be killed. */
export const instanceStates = ["starting", "running", "silent", "dead"] as const;
export type InstanceState = (typeof instanceStates)[number];

export const instanceReportSchema = z.object({
  task,
  state: z.enum(instanceStates),
  pid: z.number().int().min(0),
  incarnation: z.number().int().min(0),
  tuplesIn: count,
  tuplesOut: count,
  dropped: count,
  throttled: z.boolean(),
  queueBytes: count,
  status: z.record(z.string(), z.unknown()),
  stats: processStatsSchema.nullable(),
});
export type InstanceReport = z.infer<typeof instanceReportSchema>;

export const stmgrSchema = z.object({
  t: z.literal("stmgr"),
  container: z.number().int().min(0),
  host: z.string().max(255),
  port: z.number().int().min(1).max(65535),
  pid: z.number().int().min(1),
  supervisorPid: z.number().int().min(1),
});

export const heartbeatSchema = z.object({
  t: z.literal("heartbeat"),
  instances: z.array(instanceReportSchema).max(MAX_TASK),
  peers: z.array(
    z.object({ container: z.number().int().min(0), connected: z.boolean(), queueBytes: count }),
  ),
  backpressure: z.boolean(),
  routed: count,
  dropped: count,
  stats: processStatsSchema,
  /**
   * The tasks whose processes the container's supervisor runs, as it last said after acting on
   * plan `version` (a task moved away is listed until its process exited). Null until it said.
   */
  hosting: z.object({ version: count, tasks: z.array(task).max(MAX_TASK) }).nullable(),
});

export const planSchema = z.object({
  t: z.literal("plan"),
  version: count,
  /** The topology once ran with every replica up: instances may start without waiting. */
  started: z.boolean(),
  stmgrs: z.array(
    z.object({ container: z.number().int().min(0), host: z.string(), port: z.number().int() }),
  ),
  /**
   * `container`: where the task runs now; null while it moves, until the container it leaves
   * has stopped it. `incarnation`: the highest the task had anywhere, so that its next process,
   * wherever it starts, gets a higher one.
   */
  instances: z.array(
    z.object({
      task,
      container: z.number().int().min(0).nullable(),
      state: z.enum(instanceStates),
      incarnation: count,
    }),
  ),
});

/**
 * LPC-CM: an instance's checkpoint requests, relayed by its stream manager to the container's
 * checkpoint manager, which answers along the same path. `req` names a request on one link
 * (the stream manager renumbers them towards the manager). Checkpoint bytes travel in parts of
 * at most CHECKPOINT_PART_BYTES, one frame each: the first in the request (or the `ckpt-ok`
 * reply), the rest in `ckpt-part` frames right behind it, until `size` bytes have come. So a
 * checkpoint of any size fits the frame limit, and tuples are never stuck behind one huge frame.
 */
export const CHECKPOINT_PART_BYTES = 256 * 1024;
/** Bound on one checkpoint (or one recovered chain), far above any sane instance state. */
export const CHECKPOINT_MAX_BYTES = 1024 * 1024 * 1024;
const requestId = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const entryId = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const checkpointSize = z.number().int().min(0).max(CHECKPOINT_MAX_BYTES);
const part = z.custom<Uint8Array>(
  (v) => v instanceof Uint8Array && v.length <= CHECKPOINT_PART_BYTES,
  `expected at most ${CHECKPOINT_PART_BYTES} bytes`,
);
const ownerName = z.string().min(1).max(255);
export const checkpointOwnerSchema = z.object({
  topology: ownerName,
  stage: ownerName,
  replica: z.union([z.number().int().min(0).max(0xfffffffe), z.literal("group")]),
});

export const ckptPutSchema = z.object({
  t: z.literal("ckpt-put"),
  req: requestId,
  ref: z.object({
    owner: checkpointOwnerSchema,
    id: entryId,
    kind: z.enum(["base", "delta"]),
  }),
  size: checkpointSize,
  data: part,
});
export const ckptLoadSchema = z.object({
  t: z.literal("ckpt-load"),
  req: requestId,
  owner: checkpointOwnerSchema,
  /** Only entries up to this id (GPC: the last global checkpoint, not a later partial one). */
  upTo: entryId.optional(),
});
export const ckptPruneSchema = z.object({
  t: z.literal("ckpt-prune"),
  req: requestId,
  owner: checkpointOwnerSchema,
  keepFromId: entryId,
});
/** More bytes of the request or reply `req` (either direction). */
export const ckptPartSchema = z.object({ t: z.literal("ckpt-part"), req: requestId, data: part });
/** Done. `size` bytes of result follow (a load's recovered chain), 0 for a put or a prune. */
export const ckptOkSchema = z.object({
  t: z.literal("ckpt-ok"),
  req: requestId,
  size: checkpointSize,
  data: part,
});
export const ckptErrorSchema = z.object({
  t: z.literal("ckpt-error"),
  req: requestId,
  reason: z.string().max(2000),
  /** A load found bases but none valid: the replica cannot be recovered exactly. */
  chainBroken: z.boolean().optional(),
});

export type CkptPut = z.infer<typeof ckptPutSchema>;
export type CkptLoad = z.infer<typeof ckptLoadSchema>;
export type CkptPrune = z.infer<typeof ckptPruneSchema>;
export type CkptPart = z.infer<typeof ckptPartSchema>;
export type CkptOk = z.infer<typeof ckptOkSchema>;
export type CkptError = z.infer<typeof ckptErrorSchema>;
/** What goes towards the checkpoint manager. */
export type CkptRequest = CkptPut | CkptLoad | CkptPrune | CkptPart;
/** What comes back from it. */
export type CkptReply = CkptOk | CkptPart | CkptError;

/**
 * GPC (global platform-based checkpoints), docs/CHECKPOINTING.md. Checkpoint ids and restore
 * attempts increase; a message of an older attempt is stale and ignored.
 * - `gpc-checkpoint` (tmaster → stmgr → source instances): start checkpoint `i`.
 * - `gpc-saved` (instance → stmgr → tmaster): these tasks saved checkpoint `i`.
 * - `gpc-global` (tmaster → stmgr → instances): every replica saved `i`: release what it covers.
 * - `gpc-restore` (tmaster → stmgr → instances): roll back to global checkpoint `g`, attempt `r`.
 * - `gpc-restored` (instance → stmgr → tmaster): restored for attempt `r`.
 * - `gpc-resume` (tmaster → stmgr → instances): every replica restored `r`: go on.
 * - `gpc-fence` (stmgr → peer stmgrs): nothing after this on the link predates attempt `r`.
 */
const attempt = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
export const gpcCheckpointSchema = z.object({ t: z.literal("gpc-checkpoint"), i: entryId });
export const gpcSavedSchema = z.object({
  t: z.literal("gpc-saved"),
  i: entryId,
  tasks: z.array(task).max(100_000),
});
export const gpcGlobalSchema = z.object({ t: z.literal("gpc-global"), i: entryId });
export const gpcRestoreSchema = z.object({ t: z.literal("gpc-restore"), r: attempt, g: entryId });
export const gpcRestoredSchema = z.object({
  t: z.literal("gpc-restored"),
  r: attempt,
  tasks: z.array(task).max(100_000),
});
export const gpcResumeSchema = z.object({ t: z.literal("gpc-resume"), r: attempt });
export const gpcFenceSchema = z.object({ t: z.literal("gpc-fence"), r: attempt });
export type GpcCheckpoint = z.infer<typeof gpcCheckpointSchema>;
export type GpcSaved = z.infer<typeof gpcSavedSchema>;
export type GpcGlobal = z.infer<typeof gpcGlobalSchema>;
export type GpcRestore = z.infer<typeof gpcRestoreSchema>;
export type GpcRestored = z.infer<typeof gpcRestoredSchema>;
export type GpcResume = z.infer<typeof gpcResumeSchema>;
export type GpcFence = z.infer<typeof gpcFenceSchema>;
/** What the topology manager tells stream managers, and they their instances. */
export type GpcCommand = GpcCheckpoint | GpcGlobal | GpcRestore | GpcResume;
/** What instances tell stream managers, and they the topology manager. */
export type GpcReport = GpcSaved | GpcRestored;

export type Challenge = z.infer<typeof challengeSchema>;
export type Hello = z.infer<typeof helloSchema>;
export type Welcome = z.infer<typeof welcomeSchema>;
export type Register = z.infer<typeof registerSchema>;
export type Report = z.infer<typeof reportSchema>;
export type Throttle = z.infer<typeof throttleSchema>;
export type Start = z.infer<typeof startSchema>;
export type Backpressure = z.infer<typeof backpressureSchema>;
export type StmgrRegistration = z.infer<typeof stmgrSchema>;
export type Heartbeat = z.infer<typeof heartbeatSchema>;
export type PlanUpdate = z.infer<typeof planSchema>;
export type ProcessStats = z.infer<typeof processStatsSchema>;

type ControlSchema = z.ZodType<{ t: string }>;

/**
 * Builds the validator of one side of one link: the tuple frame types it accepts and the
 * control messages it accepts. A value that is neither is rejected with FRAME_INVALID.
 */
export function messageParser<M>(
  tupleTypes: readonly number[],
  controls: readonly ControlSchema[],
): (value: unknown) => M {
  const byTag = new Map<string, ControlSchema>();
  for (const schema of controls) {
    const tag = (schema as unknown as { shape: { t: { value: string } } }).shape.t.value;
    byTag.set(tag, schema);
  }
  return (value: unknown): M => {
    if (Array.isArray(value)) {
      const type = value[0];
      if (typeof type === "number" && tupleTypes.includes(type) && isTupleFrame(value)) {
        return value as M;
      }
      throw new WireError(
        "FRAME_INVALID",
        `unexpected or malformed tuple frame type ${String(type)}`,
      );
    }
    const tag =
      typeof value === "object" && value !== null ? (value as { t?: unknown }).t : undefined;
    const schema = typeof tag === "string" ? byTag.get(tag) : undefined;
    if (!schema) {
      const shown = typeof tag === "string" ? JSON.stringify(tag) : typeof tag;
      throw new WireError("FRAME_INVALID", `unexpected message ${shown}`);
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      throw new WireError("FRAME_INVALID", `invalid ${tag}: ${parsed.error.issues[0]?.message}`);
    }
    return parsed.data as M;
  };
}

function isTupleFrame(v: unknown[]): boolean {
  return v.length === 2 && Buffer.isBuffer(v[1]) && v[1].length > 0;
}
