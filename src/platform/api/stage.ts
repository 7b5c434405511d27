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

/**
 * Checkpoint support, filled in per deployment by the checkpoint mechanism (PDC, GPC, LPC-CM,
 * LPC-CS). The platform of today runs stages without a mechanism.
 */
export interface Checkpoints {
  readonly mechanism: "none";
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
}

/**
 * A source has no input streams of the topology (external input reaches it through the
 * platform's input queues). The platform throttles sources under backpressure: while a source
 * is throttled none of its handlers is invoked (its timers fire late), so what it emits is
 * bounded by what the topology drains.
 */
export type Source = Omit<Stage, "onTuple"> & Partial<Pick<Stage, "onTuple">>;
