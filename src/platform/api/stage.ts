/**
 * The contract between the platform and the code of one stage replica.
 *
 * A stage is a pure message handler: it reacts to tuples, timers and its own start, and every
 * effect it has goes through its context. Nothing here touches a socket, a file or the wall
 * clock, so the same stage code runs in real processes and in a deterministic simulator.
 */

/** A tuple is any value msgpack can encode: plain objects, arrays, strings, numbers, buffers. */
export type Tuple = unknown;

/** Identity of a replica: its stage and its index among that stage's replicas. */
export interface ReplicaId {
  readonly stage: string;
  readonly index: number;
}

/** One delivered tuple. */
export interface Incoming {
  readonly stream: string;
  readonly source: ReplicaId;
  readonly tuple: Tuple;
}

/**
 * Named one-shot timers; setting a name that is pending replaces it. A delay of 0 fires once
 * the input already received in this turn has been handled (a natural batching point).
 */
export interface Timers {
  set(name: string, delayMs: number): void;
  cancel(name: string): void;
}

/** Milliseconds; monotonic within one incarnation, virtual in the simulator. */
export interface Clock {
  now(): number;
}

/** The subset of a pino logger a stage may use. */
export interface Log {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** How a deployment checkpoints a stage (docs/CHECKPOINTING.md). */
export const mechanisms = ["pdc", "gpc", "lpc-cm", "lpc-cs"] as const;
export type Mechanism = (typeof mechanisms)[number];

/**
 * Checkpoint support, filled in per deployment by the stage's mechanism. A stage uses only
 * this API: switching mechanism changes no stage code. What is undefined is not provided by
 * the mechanism, and the protocol does without (or keeps its own, as PDC's in-memory group
 * checkpoints).
 */
export interface Checkpoints {
  readonly mechanism: Mechanism | "none";
  /** Group checkpoints persisted by the platform (LPC); results arrive as `onCheckpoint`. */
  readonly group: GroupCheckpoints | undefined;
  /** Instance checkpoints (GPC, and LPC with instance checkpoints on). */
  readonly instance: InstanceCheckpoints | undefined;
}

export interface GroupCheckpoints {
  /** Persists the checkpoint taken after sequence number `seq`; "group-saved" follows. */
  save(seq: number, snapshot: Uint8Array): void;
  /** Asks for the latest persisted checkpoint of the stage (any replica's); "group-loaded" follows. */
  loadLatest(): void;
}

export interface InstanceCheckpoints {
  /**
   * Records an update of this replica's exact state. Every tuple and external output emitted
   * after this call leaves the replica only once the update is durable (LPC) or covered by a
   * complete global checkpoint (GPC). Updates are written in batches (group commit).
   */
  record(update: Tuple): void;
}

/** What the platform reports back to a stage about its checkpoints. */
export type CheckpointEvent =
  | { readonly t: "group-saved"; readonly seq: number }
  | { readonly t: "group-loaded"; readonly seq: number; readonly snapshot: Uint8Array }
  | { readonly t: "group-none" };

/** A replica's instance state as the platform recovered it: a snapshot and the updates after it. */
export interface InstanceState {
  readonly snapshot: Tuple | undefined;
  readonly updates: readonly Tuple[];
}

/**
 * External I/O of a replica: what clients send enters a source through `onExternal`, and what
 * a stage hands to `external.send` leaves the topology (e.g. replies to clients). The
 * deployment supplies the other end: gateway connections in real processes, simulated clients
 * in the simulator.
 */
export interface External {
  send(output: Tuple): void;
}

export interface StageContext {
  readonly self: ReplicaId;
  /** 1 for the first run of this replica, +1 on every restart. */
  readonly incarnation: number;
  parallelism(stage: string): number;
  /** Sends the tuple on a stream to every consumer, routed by each consumer's grouping. */
  emit(stream: string, tuple: Tuple): void;
  /** Sends the tuple to replica `index` of every consumer subscribed with `direct` grouping. */
  emitDirect(stream: string, index: number, tuple: Tuple): void;
  readonly timers: Timers;
  readonly clock: Clock;
  readonly log: Log;
  readonly checkpoints: Checkpoints;
  /** Output to the outside world; a no-op sink for a stage without a port. */
  readonly external: External;
  /** A small JSON object shown for this replica in `tara status` (last one set wins). */
  setStatus(status: Record<string, unknown>): void;
}

export interface Stage {
  /** Called once per incarnation before any tuple or timer. */
  onStart?(ctx: StageContext): void;
  onTuple(input: Incoming, ctx: StageContext): void;
  onTimer?(name: string, ctx: StageContext): void;
  /** Input from the outside world through this stage's port (see `StageOptions.port`). */
  onExternal?(input: Tuple, ctx: StageContext): void;
  onCheckpoint?(event: CheckpointEvent, ctx: StageContext): void;
  /**
   * The replica's exact state, for instance checkpoints: GPC snapshots and LPC compaction.
   * `restore(snapshot, updates)` must rebuild the same state. The platform encodes it before
   * the stage runs again, so it may share structures with the live state.
   */
  snapshot?(): Tuple;
  /**
   * The stage records every change of its state with `checkpoints.instance.record`, so that
   * `restore` rebuilds it from an older snapshot and the updates after it. GPC then saves a
   * replica's checkpoint as the updates since its previous one (a full snapshot only once
   * they add up to one); without it, every GPC checkpoint is a full snapshot.
   */
  readonly recordsEveryUpdate?: boolean;
  /**
   * A recording stage's small, fast-changing state that it does not record change by change
   * (votes on values in flight, say): GPC stores it after the updates of each incremental
   * checkpoint, so `restore` gets it as the last update of the checkpoint's own delta.
   */
  unrecordedState?(): Tuple;
  /**
   * The state is valid only together with the rest of the topology's at the same global
   * checkpoint (GPC rollbacks): under LPC the replica keeps no instance checkpoints and
   * restarts fresh (a proposer must not resume a leadership; an executor catches up).
   */
  readonly rollbackOnly?: boolean;
  /**
   * Called before `onStart` when the replica has instance checkpoints: the state it had
   * externalised (and possibly a little more) before it crashed; empty on a first start.
   */
  restore?(state: InstanceState, ctx: StageContext): void;
}

/**
 * A source has no input streams of the topology (external input reaches it through the
 * platform's input queues). The platform throttles sources under backpressure: while a source
 * is throttled none of its handlers is invoked (its timers fire late), so what it emits is
 * bounded by what the topology drains.
 */
export type Source = Omit<Stage, "onTuple"> & Partial<Pick<Stage, "onTuple">>;
