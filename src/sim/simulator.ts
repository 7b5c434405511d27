/**
 * Deterministic simulator: runs the production stage code of any topology in one process, on
 * a virtual clock, over a seeded network with seeded faults.
 *
 * Everything a stage can observe goes through its StageContext, so the simulator only has to
 * build contexts whose effects become events on one priority queue ordered by (virtual time,
 * scheduling order). Nothing reads the wall clock or an unseeded random source: a run is a pure
 * function of its seed (and of what the scenario does with `random`), so a failure is replayed
 * by running its seed again.
 *
 * The model, chosen to match what the real platform can do:
 *
 * - Routing is the platform's: the physical plan of `pack` and one RoutingTable per replica.
 * - Every tuple is encoded with msgpack when emitted and decoded for each receiver, as on the
 *   wire: a receiver never shares an object (or a byte) with the sender or another receiver.
 * - A link is a (source replica, destination replica) pair. Each message gets a random delay;
 *   a link is FIFO (a message is never delivered before an earlier one on its link), different
 *   links reorder freely.
 * - A crash (SIGKILL) drops the replica's timers, what was held for it and everything still in
 *   flight to it. Messages in flight from it may still arrive, except that each is lost with
 *   probability `lossOnCrash`, and a lost one loses every later one on its link (a FIFO
 *   stream cut short). Links to and from the replica start afresh: a restarted replica never receives
 *   what was sent to its previous incarnation, and FIFO does not order messages of different
 *   incarnations.
 * - A paused replica (stuck process) runs no handler; its deliveries, timers and external
 *   inputs are held in arrival order and run in that order once it resumes.
 * - An exception in a handler is a bug of the stage code: it propagates out of step/runUntil.
 * - Checkpoints (`checkpoints` option): PDC needs nothing from the platform. LPC runs the
 *   platform's own InstanceLog and group checkpoints against a simulated store (sim-store.ts)
 *   and mirrors the real executor (platform/instance/executor.ts): a replica with instance
 *   checkpoints first recovers its log and `restore`s it (deliveries wait), then `onStart`s;
 *   whatever it emits or sends out after a `record` leaves only once that record is durable
 *   (the durability gate), in emission order. GPC runs the platform's GpcReplica in every
 *   replica, as the real executor does, and its coordinator and stream-manager parts
 *   (sim-gpc.ts): markers travel on the links with the tuples, snapshots go to the simulated
 *   store, outputs leave once a global checkpoint covers them, and a crash rolls the whole
 *   topology back and replays the sources' logged tuples.
 */
import { pack as msgpack, Unpackr } from "msgpackr";
import type {
  CheckpointEvent,
  Checkpoints,
  Incoming,
  InstanceCheckpoints,
  InstanceState,
  Log,
  ReplicaId,
  Source,
  Stage,
  StageContext,
  Tuple,
} from "../platform/api/stage.js";
import { TopologyError, type StageSpec, type Topology } from "../platform/api/topology.js";
import type { CheckpointSink } from "../platform/checkpoint/channel.js";
import {
  PersistedGroupCheckpoints,
  type GroupCheckpointStats,
} from "../platform/checkpoint/group-checkpoints.js";
import {
  InstanceLog,
  recoveredInstance,
  type InstanceLogStats,
} from "../platform/checkpoint/instance-log.js";
import {
  GpcReplica,
  rebuildGpcCheckpoint,
  type GpcStats,
} from "../platform/checkpoint/gpc-replica.js";
import { CheckpointChainBroken, loadLatestSync } from "../platform/checkpoint/store/recovery.js";
import type { CheckpointOwner } from "../platform/checkpoint/store/store.js";
import { pack, replicaName, type PhysicalPlan } from "../platform/plan/physical-plan.js";
import { downstreamTasks, markerStream, upstreamTasks } from "../platform/plan/markers.js";
import { RoutingTable } from "../platform/plan/routing.js";
import type { GpcCommand } from "../platform/wire/messages.js";
import { EMIT, FRAME_HEADER_BYTES, TupleReader, TupleWriter } from "../platform/wire/tuples.js";
import { Random } from "./random.js";
import { SimGpc } from "./sim-gpc.js";
import { SimStore, type SimStoreModel } from "./sim-store.js";

export { Random };

export interface NetworkModel {
  /** Delay of a message on a link, drawn uniformly in [minDelayMs, maxDelayMs]. */
  minDelayMs: number;
  maxDelayMs: number;
  /**
   * Probability that each message still in flight FROM a replica when it crashes is lost (a
   * lost message loses every later one on that link too: FIFO).
   */
  lossOnCrash: number;
  /**
   * Probability that a message is held up for an extra `stallMs` (a stalled link: FIFO holds
   * every later message on it too). Models a slow peer or a congested stream manager.
   */
  stallChance: number;
  stallMs: number;
}

export const defaultNetwork: Readonly<NetworkModel> = Object.freeze({
  minDelayMs: 0.05,
  maxDelayMs: 2,
  lossOnCrash: 0.5,
  stallChance: 0,
  stallMs: 0,
});

/** How replicas are checkpointed; LPC-CS and LPC-CM are the same thing at this level. */
export interface SimCheckpointing {
  readonly mechanism: "none" | "pdc" | "lpc-cs" | "lpc-cm" | "gpc";
  /** GPC: a checkpoint starts every this many virtual milliseconds (default 100). */
  readonly gpcIntervalMs?: number;
  /** LPC: instance checkpoints for the stages that have `snapshot` and `restore` (default on). */
  readonly instance?: boolean;
  /** The InstanceLog's parameters (CheckpointConfig); defaults 1, 2 ms, 1000. */
  readonly batchFactor?: number;
  readonly batchDelayMs?: number;
  readonly compactEvery?: number;
  readonly store?: Partial<SimStoreModel>;
}

/** A live replica's checkpoints (LPC), as `tara status` shows a real one's. */
export interface SimCheckpointStatus {
  readonly recovering: boolean;
  readonly instance:
    (InstanceLogStats & { recorded: number; durable: number; held: number }) | null;
  readonly group: GroupCheckpointStats | null;
  readonly gpc: GpcStats | null;
}

export interface SimulatorOptions {
  seed: number;
  topology: Topology;
  network?: Partial<NetworkModel>;
  /** Default: none (no checkpoint support, as a topology run without a mechanism). */
  checkpoints?: SimCheckpointing;
  /**
   * A replica restored its instance state (LPC), just after `restore` and before `onStart`;
   * `incarnation` is the new one's.
   */
  onRestored?: (id: ReplicaId, incarnation: number, stage: Stage | Source) => void;
  /**
   * GPC: a replica was rolled back, its new stage restored to the global checkpoint (just
   * before `onStart`); `run` is the rollback's attempt (see `gpcRun`).
   */
  onRolledBack?: (id: ReplicaId, run: number, stage: Stage | Source) => void;
  /**
   * GPC: the topology manager starts rollback `run` to global checkpoint `checkpoint`, before
   * any replica hears of it (`gpcState` reads what each replica saved in it).
   */
  onRollback?: (run: number, checkpoint: number) => void;
  /** A replica's ctx.external.send(output), synchronously (the output is a decoded copy). */
  onExternalOutput?: (from: ReplicaId, output: Tuple) => void;
  /**
   * Every tuple a replica emits, after routing (for checkers): the destinations as ReplicaIds,
   * dead ones included, possibly none. The tuple is a decoded copy, as a receiver gets it.
   */
  onEmit?: (from: ReplicaId, stream: string, tuple: Tuple, to: readonly ReplicaId[]) => void;
  /** Every tuple handed to a replica's onTuple, just before the call (at `now`). */
  onDeliver?: (from: ReplicaId, to: ReplicaId, stream: string, tuple: Tuple) => void;
  /** The stages' ctx.log; default: silent. */
  log?: Log;
  /** More events than this at one virtual instant is a livelock: step throws (default 1e6). */
  maxEventsPerInstant?: number;
}

export interface SimulatorStats {
  /** Tuples handed to onTuple. */
  delivered: number;
  /**
   * Tuples that were routed to a replica but never reached its onTuple: sent to a dead replica,
   * in flight to (or held by) a replica that crashed, or lost in a crash of their sender.
   */
  dropped: number;
  /** Of `dropped`: the ones lost in a crash of their sender (lossOnCrash). */
  lost: number;
  /** External inputs dropped because their replica was dead or crashed before handling them. */
  externalDropped: number;
  /** Events taken off the queue (including ones that turned out stale). */
  events: number;
  /** Replicas that recovered instance state (first starts included), and that found none valid. */
  restored: number;
  brokenChains: number;
  /**
   * GPC: deltas of recording stages checked (the stage rebuilt from its chain's base and
   * updates has the live stage's snapshot), and the first few that failed.
   */
  deltasChecked: number;
  deltaMismatches: string[];
}

const enum Kind {
  Deliver,
  Timer,
  External,
  Drain,
  Action,
  /** Platform work of one replica incarnation (checkpoint callbacks, their timers). */
  Internal,
}

/**
 * One queued event. A single shape for every kind keeps the queue monomorphic; fields a kind
 * does not use hold neutral values.
 */
interface SimEvent {
  time: number;
  seq: number;
  kind: Kind;
  /** Task of the replica the event is for (-1 for actions). */
  task: number;
  /** The incarnation of that replica the event belongs to: stale once it crashed. */
  incarnation: number;
  /** Stream (Deliver) or timer name (Timer). */
  name: string;
  /** Timer token (Timer); source task (Deliver). */
  n: number;
  /** Encoded tuple (Deliver, External) or the action (Action, Internal). */
  payload: Uint8Array | (() => void) | null;
  /** The link a delivery travels on. */
  link: Link | null;
  /** Lost in a crash of its sender. */
  lost: boolean;
  /** GPC: the attempt of the sender's stream manager when a delivery left (-1: none). */
  attempt: number;
}

/** The messages in flight on one (source, destination) link, oldest first. */
interface Link {
  /** Delivery time of the last message sent on it: a later one is never delivered before. */
  last: number;
  queue: SimEvent[];
  head: number;
}

interface Replica {
  readonly id: ReplicaId;
  readonly task: number;
  readonly spec: StageSpec;
  incarnation: number;
  alive: boolean;
  paused: boolean;
  stage: Stage | Source | undefined;
  ctx: StageContext | undefined;
  routing: RoutingTable | undefined;
  status: Record<string, unknown>;
  /** Pending timers of the current incarnation: name -> token of the event that fires it. */
  readonly timers: Map<string, number>;
  /** Events that arrived while paused (or while earlier held ones wait to run), in order. */
  held: SimEvent[];
  heldHead: number;
  drainScheduled: boolean;
  /** Outgoing links by destination task (current incarnations only). */
  links: (Link | undefined)[];
  /** Loading its instance state: deliveries, timers and external inputs wait in `early`. */
  recovering: boolean;
  early: SimEvent[];
  instanceLog: InstanceLog | undefined;
  instanceApi: InstanceCheckpoints | undefined;
  group: PersistedGroupCheckpoints | undefined;
  /** Outputs held by the durability gate, in emission order. */
  gated: { readonly after: number; readonly release: () => void }[];
  gatedHead: number;
  /** GPC at this replica, and the external inputs held until its stage runs. */
  gpc: GpcReplica | undefined;
  /** GPC, a recording stage: its chain's base and every update since, to check each delta. */
  chain: { base: Uint8Array; updates: Tuple[] } | undefined;
  heldExternal: Uint8Array[];
  /** GPC: the attempt of the last rollback this replica was restored in (0: never). */
  run: number;
  /** GPC: the attempt of the last restore command it got. */
  restoreAttempt: number;
}

const silentLog: Log = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

/** The stream name of GPC's markers on a link (no declared stream has it). */
const MARKER = "\u0000marker";
const EMPTY: Buffer = Buffer.alloc(0);

/** Decodes each receiver's own copy, byte arrays included (no view into shared bytes). */
const unpackr = new Unpackr({ useRecords: false, copyBuffers: true });

export class Simulator {
  readonly random: Random;
  readonly plan: PhysicalPlan;
  readonly network: Readonly<NetworkModel>;
  readonly stats: SimulatorStats = {
    delivered: 0,
    dropped: 0,
    lost: 0,
    externalDropped: 0,
    events: 0,
    restored: 0,
    brokenChains: 0,
    deltasChecked: 0,
    deltaMismatches: [],
  };

  /** The network's own stream: the scenario's draws from `random` do not shift delays. */
  private readonly netRandom: Random;
  private readonly replicaList: Replica[];
  private readonly byStage = new Map<string, Replica[]>();
  private readonly parallelismOf: Map<string, number>;
  private readonly log: Log;
  private readonly heap: SimEvent[] = [];
  private clock = 0;
  private seq = 0;
  private timerTokens = 0;
  private started = false;
  private atInstant = 0;
  private readonly maxEventsPerInstant: number;
  private readonly checkpointing: Required<Omit<SimCheckpointing, "store">>;
  private readonly lpc: boolean;
  /** The simulated checkpoint store (LPC, GPC). */
  readonly store: SimStore | undefined;
  /** GPC's coordinator and stream managers. */
  readonly gpc: SimGpc | undefined;
  /** Each stage's declared outputs: a stream's index is its position. */
  private readonly outputsOf: Map<string, readonly string[]>;
  /** Last delivery time per control channel (FIFO). */
  private readonly controlLast = new Map<string, number>();
  private scratch: Buffer = Buffer.allocUnsafe(1024);

  constructor(private readonly options: SimulatorOptions) {
    const { seed, topology } = options;
    if (!Number.isInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
    this.random = new Random(seed);
    this.netRandom = new Random(Math.imul((seed ^ 0x5bd1e995) >>> 0, 0x9e3779b1) >>> 0);
    const network = { ...defaultNetwork, ...options.network };
    if (
      !(network.minDelayMs >= 0) ||
      !(network.maxDelayMs >= network.minDelayMs) ||
      !(network.lossOnCrash >= 0 && network.lossOnCrash <= 1) ||
      !(network.stallChance >= 0 && network.stallChance <= 1) ||
      !(network.stallMs >= 0)
    ) {
      throw new RangeError(`invalid network model ${JSON.stringify(network)}`);
    }
    this.network = Object.freeze(network);
    this.log = options.log ?? silentLog;
    this.maxEventsPerInstant = options.maxEventsPerInstant ?? 1_000_000;
    const checkpointing = options.checkpoints ?? { mechanism: "none" };
    this.checkpointing = {
      mechanism: checkpointing.mechanism,
      instance: checkpointing.instance ?? true,
      batchFactor: checkpointing.batchFactor ?? 1,
      batchDelayMs: checkpointing.batchDelayMs ?? 2,
      compactEvery: checkpointing.compactEvery ?? 1000,
      gpcIntervalMs: checkpointing.gpcIntervalMs ?? 100,
    };
    this.lpc = checkpointing.mechanism === "lpc-cs" || checkpointing.mechanism === "lpc-cm";
    if (this.lpc || checkpointing.mechanism === "gpc") {
      this.store = new SimStore({
        // Its own stream: the store's draws shift neither the network's nor the scenario's.
        random: new Random(Math.imul((seed ^ 0x27d4eb2f) >>> 0, 0x85ebca6b) >>> 0),
        schedule: (delayMs, action) => this.schedule(delayMs, action),
        now: () => this.clock,
        model: checkpointing.store ?? {},
        log: this.log,
      });
    }

    const maxParallelism = Math.max(1, ...topology.stages.map((s) => s.parallelism));
    this.plan = pack(topology, {
      containers: Math.min(256, maxParallelism),
      allowColocation: true,
    });
    this.parallelismOf = new Map(topology.stages.map((s) => [s.name, s.parallelism]));
    this.outputsOf = new Map(topology.stages.map((s) => [s.name, s.outputs]));
    const specs = new Map(topology.stages.map((s) => [s.name, s]));
    this.replicaList = this.plan.tasks.map((t) => {
      const replica: Replica = {
        id: Object.freeze({ stage: t.stage, index: t.index }),
        task: t.task,
        spec: specs.get(t.stage)!,
        incarnation: 0,
        alive: false,
        paused: false,
        stage: undefined,
        ctx: undefined,
        routing: undefined,
        status: {},
        timers: new Map(),
        held: [],
        heldHead: 0,
        drainScheduled: false,
        links: [],
        recovering: false,
        early: [],
        instanceLog: undefined,
        instanceApi: undefined,
        group: undefined,
        gated: [],
        gatedHead: 0,
        gpc: undefined,
        chain: undefined,
        heldExternal: [],
        run: 0,
        restoreAttempt: 0,
      };
      const list = this.byStage.get(t.stage) ?? [];
      list[t.index] = replica;
      this.byStage.set(t.stage, list);
      return replica;
    });
    if (checkpointing.mechanism === "gpc") {
      this.gpc = new SimGpc(
        {
          plan: this.plan,
          now: () => this.clock,
          control: (channel, action) => {
            const time = this.controlTime(channel);
            this.push(this.event(time, Kind.Action, -1, 0, "", 0, action, null));
          },
          toInstance: (task, command) => this.gpcCommand(task, command),
          onRollback: (run, checkpoint) => this.options.onRollback?.(run, checkpoint),
          replay: (task, records) => this.replay(task, records),
          instances: () =>
            this.replicaList.map((r) => ({
              task: r.task,
              container: this.plan.tasks[r.task]!.container,
              state: r.alive ? ("running" as const) : ("dead" as const),
              incarnation: r.incarnation,
            })),
          log: this.log,
        },
        this.checkpointing.gpcIntervalMs,
      );
    }
  }

  /** Virtual milliseconds since the start of the run. */
  get now(): number {
    return this.clock;
  }

  /** Events waiting in the queue (stale ones included). */
  get pending(): number {
    return this.heap.length;
  }

  /**
   * Creates every replica (incarnation 1), then starts each in task order: onStart, or first
   * the recovery of its instance state (LPC; an empty log on a first start).
   */
  start(): void {
    if (this.started) throw new Error("simulator already started");
    this.started = true;
    for (const replica of this.replicaList) this.create(replica);
    for (const replica of this.replicaList) {
      if (replica.alive && replica.incarnation === 1) this.boot(replica);
    }
    this.gpc?.start((delayMs, action) => this.schedule(delayMs, action));
  }

  replicas(): ReplicaId[] {
    return this.replicaList.map((r) => r.id);
  }

  replicasOf(stage: string): ReplicaId[] {
    const list = this.byStage.get(stage);
    if (!list) throw new TopologyError(`no stage ${stage}`);
    return list.map((r) => r.id);
  }

  isAlive(id: ReplicaId): boolean {
    return this.replica(id).alive;
  }

  isPaused(id: ReplicaId): boolean {
    return this.replica(id).paused;
  }

  /** Alive but still loading its instance state: it has not started yet. */
  isRecovering(id: ReplicaId): boolean {
    const replica = this.replica(id);
    return replica.alive && replica.recovering;
  }

  /** A replica's checkpoint state, as `tara status` shows it (LPC, GPC), or undefined. */
  checkpointStatus(id: ReplicaId): SimCheckpointStatus | undefined {
    const replica = this.replica(id);
    if (!this.store || !replica.alive) return undefined;
    const log = replica.instanceLog;
    return {
      recovering: replica.recovering,
      instance: log
        ? {
            ...log.stats,
            recorded: log.recorded,
            durable: log.durable,
            held: replica.gated.length - replica.gatedHead,
          }
        : null,
      group: replica.group?.stats ?? null,
      gpc: replica.gpc?.stats ?? null,
    };
  }

  /**
   * GPC: the attempt of the last rollback the replica's stage was restored in (0: the first
   * run). A stage still installed after a newer rollback began belongs to its older run.
   */
  gpcRun(id: ReplicaId): number {
    return this.replica(id).run;
  }

  /**
   * GPC: the state a replica saved in checkpoint `checkpoint`, as its restore would get it
   * (undefined: checkpoint 0, the initial state). Throws if the store does not hold it.
   */
  gpcState(id: ReplicaId, checkpoint: number): InstanceState | undefined {
    if (!this.gpc || checkpoint === 0) return undefined;
    const owner = this.owner(this.replica(id), id.index);
    const chain = loadLatestSync(this.store!, owner, this.log, checkpoint);
    const rebuilt = rebuildGpcCheckpoint(chain, checkpoint);
    if (rebuilt instanceof Error) throw rebuilt;
    return rebuilt.state;
  }

  /** 0 before start, 1 for the first run, +1 on every restart. */
  incarnation(id: ReplicaId): number {
    return this.replica(id).incarnation;
  }

  /** The live stage object of a replica. */
  stage<T>(id: ReplicaId): T {
    const replica = this.replica(id);
    if (!replica.alive) throw new Error(`replica ${replicaName(id)} is not alive`);
    return replica.stage as T;
  }

  /** The last status the replica set ({} if none since its last (re)start). */
  status(id: ReplicaId): Record<string, unknown> {
    return this.replica(id).status;
  }

  /** Runs `action` as an event `delayMs` from now (after events already queued for then). */
  schedule(delayMs: number, action: () => void): void {
    if (!(delayMs >= 0)) throw new RangeError(`schedule: invalid delay ${delayMs}`);
    this.push(this.event(this.clock + delayMs, Kind.Action, -1, 0, "", 0, action, null));
  }

  /**
   * Hands `input` to the replica's onExternal as an event at `now` (a copy, through msgpack).
   * Dropped if the replica is dead now or crashes before the event runs; held while paused.
   */
  deliverExternal(id: ReplicaId, input: Tuple): void {
    const replica = this.replica(id);
    if (!replica.alive) {
      this.stats.externalDropped++;
      return;
    }
    const bytes = msgpack(input);
    this.push(
      this.event(this.clock, Kind.External, replica.task, replica.incarnation, "", 0, bytes, null),
    );
  }

  /**
   * SIGKILL: the replica's timers and held events are dropped, tuples in flight to it will be
   * dropped, and of those in flight from it each link loses a suffix: walking the link's queue
   * in order, each message is lost with probability lossOnCrash, and every later one with it
   * (0: all arrive, 1: none does). Throws if it is not alive.
   */
  crash(id: ReplicaId): void {
    const replica = this.replica(id);
    if (!replica.alive) throw new Error(`crash: replica ${replicaName(id)} is not alive`);
    replica.alive = false;
    replica.paused = false;
    // Its checkpoint writes in flight end as the store's model says; what the gate held is gone.
    replica.instanceLog?.close();
    replica.group?.close();
    this.store?.crashWriter(this.writer(replica, replica.incarnation));
    replica.instanceLog = undefined;
    replica.instanceApi = undefined;
    replica.group = undefined;
    replica.gated = [];
    replica.gatedHead = 0;
    replica.gpc = undefined;
    replica.chain = undefined;
    this.stats.externalDropped += replica.heldExternal.length;
    replica.heldExternal = [];
    this.gpc?.replicaChanged(replica.task);
    for (const event of replica.early) {
      if (event.kind === Kind.Deliver) this.stats.dropped++;
      else if (event.kind === Kind.External) this.stats.externalDropped++;
    }
    replica.early = [];
    replica.recovering = false;
    replica.stage = undefined;
    replica.ctx = undefined;
    replica.routing = undefined;
    replica.timers.clear();
    for (let i = replica.heldHead; i < replica.held.length; i++) {
      const kind = replica.held[i]!.kind;
      if (kind === Kind.Deliver) this.stats.dropped++;
      else if (kind === Kind.External) this.stats.externalDropped++;
    }
    replica.held = [];
    replica.heldHead = 0;
    // What it sent that had not arrived yet: walking each link's queue in order, each message
    // is lost with probability lossOnCrash, and with it every later one on that link.
    const { lossOnCrash } = this.network;
    for (const link of replica.links) {
      if (!link) continue;
      let cut = link.head;
      while (cut < link.queue.length && !this.netRandom.chance(lossOnCrash)) cut++;
      for (let i = cut; i < link.queue.length; i++) link.queue[i]!.lost = true;
      link.queue.length = cut;
    }
    replica.links = [];
    // Links into it start afresh; what is in flight to it is dropped when it arrives.
    for (const other of this.replicaList) other.links[replica.task] = undefined;
  }

  /**
   * Every tuple in flight from a live replica is lost, as when its stream manager restarts
   * (the platform drops tuples on a link that is down). The replica itself runs on.
   */
  dropInFlight(id: ReplicaId): void {
    const replica = this.replica(id);
    // Under GPC the topology manager sees the stream manager rejoin and rolls back.
    this.gpc?.containerRejoined(replica.task);
    for (const link of replica.links) {
      if (!link) continue;
      for (let i = link.head; i < link.queue.length; i++) link.queue[i]!.lost = true;
      link.queue.length = link.head;
    }
  }

  /**
   * A new stage object from spec.create(index), incarnation + 1, then onStart (after the
   * recovery of its instance state, with LPC). Throws if alive.
   */
  restart(id: ReplicaId): void {
    const replica = this.replica(id);
    if (!this.started) throw new Error("restart before start");
    if (replica.alive) throw new Error(`restart: replica ${replicaName(id)} is alive`);
    this.create(replica);
    this.boot(replica);
    this.gpc?.replicaChanged(replica.task);
    this.gpc?.instanceStarted(replica.task);
  }

  /** A stuck replica: its deliveries, timers and external inputs are held until resume. */
  pause(id: ReplicaId): void {
    const replica = this.replica(id);
    if (!replica.alive) throw new Error(`pause: replica ${replicaName(id)} is not alive`);
    replica.paused = true;
  }

  /** Runs what was held, in order, as events from `now` on. A no-op if it is not paused. */
  resume(id: ReplicaId): void {
    const replica = this.replica(id);
    if (!replica.paused) return;
    replica.paused = false;
    this.scheduleDrain(replica);
  }

  /** Runs the next event; false if there is none. */
  step(): boolean {
    const event = this.pop();
    if (!event) return false;
    // Events that keep scheduling events at the same instant would spin forever: fail instead.
    if (event.time > this.clock) this.atInstant = 0;
    else if (++this.atInstant > this.maxEventsPerInstant) {
      throw new Error(
        `livelock: more than ${this.maxEventsPerInstant} events at virtual time ${this.clock}`,
      );
    }
    this.clock = event.time;
    this.stats.events++;
    this.run(event, false);
    return true;
  }

  /** Runs every event with time <= timeMs, then sets the clock to timeMs. */
  runUntil(timeMs: number): void {
    const heap = this.heap;
    while (heap.length > 0 && heap[0]!.time <= timeMs) this.step();
    if (timeMs > this.clock) this.clock = timeMs;
  }

  /**
   * Runs events while cond() holds and the next event is at or before `limitMs` (an absolute
   * virtual time). Returns true if cond() became false, false if the clock reached limitMs (or
   * nothing was left to run) with cond() still true; the clock is then at limitMs.
   */
  runWhile(cond: () => boolean, limitMs: number): boolean {
    const heap = this.heap;
    while (cond()) {
      if (heap.length === 0 || heap[0]!.time > limitMs) {
        if (limitMs > this.clock) this.clock = limitMs;
        return false;
      }
      this.step();
    }
    return true;
  }

  // ---- replicas -------------------------------------------------------------------------

  private replica(id: ReplicaId): Replica {
    const replica = this.byStage.get(id.stage)?.[id.index];
    if (!replica) throw new TopologyError(`no replica ${replicaName(id)}`);
    return replica;
  }

  private create(replica: Replica): void {
    replica.incarnation++;
    replica.alive = true;
    replica.paused = false;
    replica.status = {};
    replica.timers.clear();
    replica.held = [];
    replica.heldHead = 0;
    replica.drainScheduled = false;
    replica.links = [];
    replica.recovering = false;
    replica.early = [];
    replica.instanceLog = undefined;
    replica.instanceApi = undefined;
    replica.group = undefined;
    replica.gated = [];
    replica.gatedHead = 0;
    replica.gpc = undefined;
    replica.chain = undefined;
    replica.heldExternal = [];
    replica.run = 0;
    replica.restoreAttempt = 0;
    replica.routing = new RoutingTable(this.plan, replica.id.stage, replica.id.index);
    replica.ctx = this.createContext(replica, replica.incarnation);
    replica.stage = replica.spec.create(replica.id.index);
  }

  // ---- checkpoints (LPC), as platform/instance/executor.ts does them ----------------------

  /** Starts a created replica: recovers its instance state first, if it keeps one. */
  private boot(replica: Replica): void {
    const stage = replica.stage!;
    if (this.gpc) {
      const gpc = this.createGpc(replica, replica.incarnation);
      replica.gpc = gpc;
      if (stage.recordsEveryUpdate) {
        replica.instanceApi = {
          record: (update) => {
            gpc.record(update);
            replica.chain?.updates.push(update);
          },
        };
      }
      // A restarted replica runs once the rollback its crash causes restores it.
      if (!replica.gpc.waiting) stage.onStart?.(replica.ctx!);
      return;
    }
    if (this.lpc) {
      const incarnation = replica.incarnation;
      const ctx = replica.ctx!;
      replica.group = new PersistedGroupCheckpoints(
        this.owner(replica, "group"),
        this.sink(replica, incarnation),
        {
          now: () => this.clock,
          setTimer: (delayMs, fire) => this.internalTimer(replica, incarnation, delayMs, fire),
          deliver: (event: CheckpointEvent) => stage.onCheckpoint?.(event, ctx),
          log: this.log,
        },
      );
      if (this.checkpointing.instance && stage.snapshot && stage.restore && !stage.rollbackOnly) {
        replica.recovering = true;
        this.recover(replica, incarnation, 50);
        return;
      }
    }
    stage.onStart?.(replica.ctx!);
  }

  /** Loads the replica's own log (retrying while the store is away), restores it, starts it. */
  private recover(replica: Replica, incarnation: number, retryMs: number): void {
    const owner = this.owner(replica, replica.id.index);
    const sink = this.sink(replica, incarnation);
    sink.loadLatest(owner, (result) => {
      const stage = replica.stage!;
      const ctx = replica.ctx!;
      if (result instanceof CheckpointChainBroken) {
        // Its exact state is gone: it starts without one (a TARA committer stays passive).
        this.stats.brokenChains++;
        this.log.error({ event: "recovery-impossible", reason: result.message }, "no valid state");
        this.begin(replica);
        return;
      }
      if (result instanceof Error) {
        this.log.warn({ event: "recovery-stalled", reason: result.message }, "cannot load");
        const next = Math.min(retryMs * 2, 2000);
        this.internalTimer(replica, incarnation, retryMs, () =>
          this.recover(replica, incarnation, next),
        );
        return;
      }
      const recovered = recoveredInstance(result);
      this.stats.restored++;
      stage.restore!(recovered.state, ctx);
      this.options.onRestored?.(replica.id, incarnation, stage);
      const { batchFactor, batchDelayMs, compactEvery } = this.checkpointing;
      const log = new InstanceLog({
        owner,
        channel: sink,
        snapshot: () => stage.snapshot!(),
        batchFactor,
        batchDelayMs,
        compactEvery,
        nextId: recovered.nextId,
        baseId: recovered.baseId,
        deltasSinceBase: recovered.deltasSinceBase,
        now: () => this.clock,
        setTimer: (delayMs, fire) => this.internalTimer(replica, incarnation, delayMs, fire),
        onDurable: () => this.releaseGated(replica),
        log: this.log,
      });
      replica.instanceLog = log;
      replica.instanceApi = { record: (update) => log.record(update) };
      this.begin(replica);
    });
  }

  /** Recovery is over: onStart, then what arrived meanwhile, in arrival order. */
  private begin(replica: Replica): void {
    replica.recovering = false;
    replica.stage!.onStart?.(replica.ctx!);
    if (replica.early.length === 0 || !replica.alive) return;
    replica.held = [...replica.early, ...replica.held.slice(replica.heldHead)];
    replica.heldHead = 0;
    replica.early = [];
    this.scheduleDrain(replica);
  }

  /**
   * Runs `send` now, or once every update recorded so far is durable (after what is held);
   * under GPC, as GpcReplica allows (held during a rollback).
   */
  private gate(replica: Replica, send: () => void): void {
    if (replica.gpc) return replica.gpc.output(send);
    const log = replica.instanceLog;
    if (!log || (!log.hasUndurable && replica.gatedHead === replica.gated.length)) send();
    else replica.gated.push({ after: log.recorded, release: send });
  }

  private releaseGated(replica: Replica): void {
    const durable = replica.instanceLog!.durable;
    const gated = replica.gated;
    while (replica.gatedHead < gated.length && gated[replica.gatedHead]!.after <= durable) {
      gated[replica.gatedHead++]!.release();
    }
    if (replica.gatedHead === gated.length) {
      replica.gated = [];
      replica.gatedHead = 0;
    }
  }

  // ---- GPC, as platform/instance/executor.ts wires it ----------------------------------

  private createGpc(replica: Replica, incarnation: number): GpcReplica {
    const { forward, back } = upstreamTasks(this.plan, replica.id.stage);
    const downstream = downstreamTasks(this.plan, replica.id.stage);
    const markerIndex = markerStream(replica.spec);
    const report = (report: Parameters<SimGpc["report"]>[1]) =>
      this.gpc!.report(replica.task, report);
    return new GpcReplica(
      {
        self: replica.id,
        owner: this.owner(replica, replica.id.index),
        channel: this.sink(replica, incarnation),
        forward,
        back,
        snapshot: () => {
          const state = replica.stage!.snapshot?.();
          if (replica.stage!.recordsEveryUpdate) {
            replica.chain = { base: msgpack(state), updates: [] };
          }
          return state;
        },
        unrecorded: () => {
          const unrecorded = replica.stage!.unrecordedState?.();
          if (unrecorded !== undefined) replica.chain?.updates.push(unrecorded);
          this.checkDelta(replica);
          return unrecorded;
        },
        incremental: replica.stage!.recordsEveryUpdate === true,
        emitMarker: (i) => {
          if (downstream.length > 0) this.send(replica, markerIndex, downstream, msgpack(i));
        },
        deliver: ({ src, stream, tuple }) => {
          const name = this.outputsOf.get(this.replicaList[src]!.id.stage)![stream]!;
          this.deliverTuple(replica, src, name, tuple);
        },
        quiesce: () => replica.timers.clear(),
        restart: (state) => {
          replica.timers.clear();
          const stage = replica.spec.create(replica.id.index);
          replica.stage = stage;
          replica.run = replica.restoreAttempt;
          // Restored even without a snapshot: the initial state is the checkpointed one then.
          stage.restore?.(state, replica.ctx!);
          this.options.onRolledBack?.(replica.id, replica.run, stage);
          stage.onStart?.(replica.ctx!);
        },
        saved: (i) => report({ t: "gpc-saved", i, tasks: [replica.task] }),
        restored: (r) => {
          report({ t: "gpc-restored", r, tasks: [replica.task] });
          const held = replica.heldExternal;
          replica.heldExternal = [];
          for (const input of held) this.external(replica, input);
        },
        setTimer: (delayMs, fire) => void this.internalTimer(replica, incarnation, delayMs, fire),
        alignTimeoutMs: Math.max(2000, 20 * this.checkpointing.gpcIntervalMs),
        log: this.log,
      },
      () => this.clock,
      incarnation > 1,
    );
  }

  /**
   * The restore contract of a recording stage, at each of its deltas: a stage restored from
   * the chain's base and every update since equals one restored from a full snapshot now.
   */
  private checkDelta(replica: Replica): void {
    const chain = replica.chain;
    if (!chain) return;
    this.stats.deltasChecked++;
    const restored = (state: InstanceState) => {
      const stage = replica.spec.create(replica.id.index);
      stage.restore!(unpackr.unpack(msgpack(state)) as InstanceState, replica.ctx!);
      return msgpack(stage.snapshot!());
    };
    const rebuilt = restored({ snapshot: unpackr.unpack(chain.base), updates: chain.updates });
    const whole = restored({ snapshot: replica.stage!.snapshot!(), updates: [] });
    if (rebuilt.equals(whole)) return;
    if (this.stats.deltaMismatches.length < 5) {
      this.stats.deltaMismatches.push(
        `t=${this.clock.toFixed(1)} ${replicaName(replica.id)}: rebuilt from its base and ` +
          `${chain.updates.length} updates, it differs from its snapshot`,
      );
    }
  }

  /** A stream manager's command, to the incarnation alive now (FIFO, held while paused). */
  private gpcCommand(task: number, command: GpcCommand): void {
    const replica = this.replicaList[task]!;
    if (!replica.alive) return;
    const incarnation = replica.incarnation;
    const time = this.controlTime(`stmgr>${task}`);
    this.internal(replica, incarnation, time - this.clock, () => {
      const gpc = replica.gpc!;
      if (command.t === "gpc-checkpoint") gpc.startCheckpoint(command.i);
      else if (command.t === "gpc-global") gpc.onGlobal(command.i);
      else if (command.t === "gpc-restore") {
        replica.restoreAttempt = Math.max(replica.restoreAttempt, command.r);
        gpc.onRestore(command.r, command.g);
      } else gpc.onResume(command.r);
    });
  }

  /** The sources' logged records since the global checkpoint, routed again after a rollback. */
  private replay(task: number, records: Buffer): void {
    const from = this.replicaList[task]!;
    const outputs = this.outputsOf.get(from.id.stage)!;
    const reader = new TupleReader(records);
    const attempt = this.gpc!.attemptAt(task);
    while (reader.next()) {
      const dests = Array.from({ length: reader.destCount }, (_, i) => reader.dest(i));
      const name = outputs[reader.stream]!;
      this.route(from, name, dests, Uint8Array.from(reader.payload()), attempt);
    }
  }

  /** Delivery time of the next message on a control channel: seeded delay, FIFO. */
  private controlTime(channel: string): number {
    const { minDelayMs, maxDelayMs } = this.network;
    const delay = minDelayMs + this.netRandom.next() * (maxDelayMs - minDelayMs);
    const time = Math.max(this.clock + delay, this.controlLast.get(channel) ?? 0);
    this.controlLast.set(channel, time);
    return time;
  }

  private owner(replica: Replica, index: number | "group"): CheckpointOwner {
    return { topology: this.options.topology.name, stage: replica.id.stage, replica: index };
  }

  private writer(replica: Replica, incarnation: number): string {
    return `${replica.task}/${incarnation}`;
  }

  /** The store as one incarnation sees it: its callbacks run as that incarnation's events. */
  private sink(replica: Replica, incarnation: number): CheckpointSink {
    const store = this.store!.sink(this.writer(replica, incarnation));
    const post = (action: () => void) => this.internal(replica, incarnation, 0, action);
    return {
      style: "callbacks",
      description: store.description,
      put: (ref, data, done) => store.put(ref, data, (error) => post(() => done(error))),
      loadLatest: (owner, done, upTo) =>
        store.loadLatest(owner, (result) => post(() => done(result)), upTo),
      prune: (owner, keepFromId, done) =>
        store.prune(owner, keepFromId, (error) => post(() => done(error))),
    };
  }

  private internalTimer(
    replica: Replica,
    incarnation: number,
    delayMs: number,
    fire: () => void,
  ): { cancel(): void } {
    let cancelled = false;
    this.internal(replica, incarnation, Math.max(0, delayMs), () => {
      if (!cancelled) fire();
    });
    return {
      cancel: () => {
        cancelled = true;
      },
    };
  }

  private internal(replica: Replica, incarnation: number, delayMs: number, action: () => void) {
    this.push(
      this.event(
        this.clock + delayMs,
        Kind.Internal,
        replica.task,
        incarnation,
        "",
        0,
        action,
        null,
      ),
    );
  }

  private createContext(replica: Replica, incarnation: number): StageContext {
    // Effects of an incarnation that is gone (a scenario callback crashed it in the middle of
    // one of its handlers) are discarded, as the process's would be.
    const live = () => replica.alive && replica.incarnation === incarnation;
    const outputs = new Set(replica.spec.outputs);
    const checkStream = (stream: string) => {
      if (!outputs.has(stream)) {
        throw new TopologyError(`${replica.spec.name} emits on undeclared stream ${stream}`);
      }
    };
    return {
      self: replica.id,
      incarnation,
      parallelism: (stage) => {
        const p = this.parallelismOf.get(stage);
        if (p === undefined) throw new TopologyError(`no stage ${stage}`);
        return p;
      },
      emit: (stream, tuple) => {
        checkStream(stream);
        if (!live()) return;
        this.emit(replica, stream, replica.routing!.destinations(stream, tuple), tuple);
      },
      emitDirect: (stream, index, tuple) => {
        checkStream(stream);
        if (!live()) return;
        this.emit(replica, stream, replica.routing!.directDestinations(stream, index), tuple);
      },
      timers: {
        set: (name, delayMs) => {
          if (!live()) return;
          const token = ++this.timerTokens;
          replica.timers.set(name, token);
          const time = this.clock + Math.max(0, delayMs);
          this.push(
            this.event(time, Kind.Timer, replica.task, incarnation, name, token, null, null),
          );
        },
        cancel: (name) => {
          if (live()) replica.timers.delete(name);
        },
      },
      clock: { now: () => this.clock },
      log: this.log,
      checkpoints: this.createCheckpoints(replica, live),
      external: {
        send: (output) => {
          if (!live()) return;
          const onOutput = this.options.onExternalOutput;
          if (!onOutput) return;
          const bytes = msgpack(output);
          const send = () => onOutput(replica.id, unpackr.unpack(bytes));
          if (replica.gpc) replica.gpc.external(send);
          else this.gate(replica, send);
        },
      },
      setStatus: (status) => {
        if (live()) replica.status = status;
      },
    };
  }

  private createCheckpoints(replica: Replica, live: () => boolean): Checkpoints {
    const mechanism = this.checkpointing.mechanism;
    if (!this.lpc && !this.gpc) return { mechanism, group: undefined, instance: undefined };
    // Getters: both exist only once the replica has started (and recovered), and only for the
    // incarnation alive now (a later one's must not take a dead one's records). Under GPC the
    // instance API records a recording stage's updates for its deltas.
    return {
      mechanism,
      get group() {
        return live() ? replica.group : undefined;
      },
      get instance() {
        return live() ? replica.instanceApi : undefined;
      },
    };
  }

  // ---- network --------------------------------------------------------------------------

  /** Encoded and routed now (as the platform does), sent once the durability gate allows. */
  private emit(from: Replica, stream: string, dests: number[], tuple: Tuple): void {
    const bytes = msgpack(tuple);
    const index = from.spec.outputs.indexOf(stream);
    this.gate(from, () => this.send(from, index, dests, bytes));
  }

  /**
   * Hands an emitted tuple (stream `index` of the sender's outputs, its marker stream under
   * GPC) to the network: under GPC its stream manager takes it first (and logs a source's).
   */
  private send(from: Replica, index: number, dests: number[], bytes: Uint8Array): void {
    let attempt = -1;
    if (this.gpc) {
      let records = EMPTY;
      if (from.spec.isSource && dests.length > 0) {
        const size = FRAME_HEADER_BYTES + 12 + 4 * dests.length + bytes.length;
        if (this.scratch.length < size) this.scratch = Buffer.allocUnsafe(2 * size);
        const writer = new TupleWriter(EMIT, size, this.scratch);
        writer.append(from.task, index, dests, bytes);
        records = writer.finish().subarray(FRAME_HEADER_BYTES);
      }
      if (!this.gpc.acceptEmit(from.task, records)) return;
      attempt = this.gpc.attemptAt(from.task);
    }
    const name = index === from.spec.outputs.length ? MARKER : from.spec.outputs[index]!;
    this.route(from, name, dests, bytes, attempt);
  }

  private route(
    from: Replica,
    stream: string,
    dests: number[],
    bytes: Uint8Array,
    attempt: number,
  ): void {
    const onEmit = stream === MARKER ? undefined : this.options.onEmit;
    if (dests.length === 0) {
      if (onEmit) onEmit(from.id, stream, unpackr.unpack(bytes), []);
      return;
    }
    if (onEmit) {
      const to = dests.map((task) => this.replicaList[task]!.id);
      onEmit(from.id, stream, unpackr.unpack(bytes), to);
    }
    const { minDelayMs, maxDelayMs, stallChance, stallMs } = this.network;
    for (const task of dests) {
      const dest = this.replicaList[task]!;
      if (!dest.alive) {
        this.stats.dropped++;
        continue;
      }
      let link = from.links[task];
      if (!link) from.links[task] = link = { last: 0, queue: [], head: 0 };
      let delay = minDelayMs + this.netRandom.next() * (maxDelayMs - minDelayMs);
      if (stallChance > 0 && this.netRandom.chance(stallChance)) delay += stallMs;
      const time = Math.max(this.clock + delay, link.last);
      link.last = time;
      const event = this.event(
        time,
        Kind.Deliver,
        task,
        dest.incarnation,
        stream,
        from.task,
        bytes,
        link,
      );
      event.attempt = attempt;
      link.queue.push(event);
      this.push(event);
    }
  }

  // ---- events ---------------------------------------------------------------------------

  private event(
    time: number,
    kind: Kind,
    task: number,
    incarnation: number,
    name: string,
    n: number,
    payload: SimEvent["payload"],
    link: Link | null,
  ): SimEvent {
    return {
      time,
      seq: this.seq++,
      kind,
      task,
      incarnation,
      name,
      n,
      payload,
      link,
      lost: false,
      attempt: -1,
    };
  }

  /**
   * Runs one event. `fromHold`: it is being taken from its replica's held queue (so it is not
   * held again).
   */
  private run(event: SimEvent, fromHold: boolean): void {
    if (event.kind === Kind.Action) {
      (event.payload as () => void)();
      return;
    }
    if (event.kind === Kind.Internal) {
      const replica = this.replicaList[event.task]!;
      if (!replica.alive || replica.incarnation !== event.incarnation) return;
      // A stuck process does no platform work either.
      if (!fromHold && (replica.paused || replica.heldHead < replica.held.length)) {
        replica.held.push(event);
        return;
      }
      (event.payload as () => void)();
      return;
    }
    if (event.kind === Kind.Deliver && !fromHold) {
      if (event.lost) {
        this.stats.dropped++;
        this.stats.lost++;
        return;
      }
      const link = event.link!;
      if (link.queue[link.head] !== event) throw new Error("simulator bug: link order violated");
      link.queue[link.head++] = undefined as unknown as SimEvent;
      if (link.head === link.queue.length) {
        link.queue.length = 0;
        link.head = 0;
      } else if (link.head >= 64 && link.head * 2 >= link.queue.length) {
        link.queue.splice(0, link.head);
        link.head = 0;
      }
    }
    const replica = this.replicaList[event.task]!;
    if (!replica.alive || replica.incarnation !== event.incarnation) {
      if (event.kind === Kind.Deliver) this.stats.dropped++;
      else if (event.kind === Kind.External) this.stats.externalDropped++;
      return;
    }
    if (event.kind === Kind.Drain) {
      replica.drainScheduled = false;
      if (replica.paused || replica.heldHead === replica.held.length) return;
      const next = replica.held[replica.heldHead]!;
      replica.held[replica.heldHead++] = undefined as unknown as SimEvent;
      if (replica.heldHead === replica.held.length) {
        replica.held = [];
        replica.heldHead = 0;
      } else {
        this.scheduleDrain(replica);
      }
      this.run(next, true);
      return;
    }
    if (event.kind === Kind.Timer && replica.timers.get(event.name) !== event.n) return; // replaced
    if (replica.recovering) {
      replica.early.push(event);
      return;
    }
    if (!fromHold && (replica.paused || replica.heldHead < replica.held.length)) {
      replica.held.push(event);
      return;
    }
    switch (event.kind) {
      case Kind.Deliver: {
        const gpc = replica.gpc;
        if (!gpc) {
          this.deliverTuple(
            replica,
            event.n,
            event.name,
            unpackr.unpack(event.payload as Uint8Array),
          );
          return;
        }
        // Of an older attempt than the receiver's stream manager: the fence keeps it out.
        if (!this.gpc!.accepts(replica.task, event.attempt)) {
          this.stats.dropped++;
          return;
        }
        const outputs = this.outputsOf.get(this.replicaList[event.n]!.id.stage)!;
        if (event.name === MARKER) {
          const i = unpackr.unpack(event.payload as Uint8Array) as number;
          gpc.onDelivery({ src: event.n, stream: outputs.length, tuple: null }, i);
        } else {
          const tuple: Tuple = unpackr.unpack(event.payload as Uint8Array);
          gpc.onDelivery({ src: event.n, stream: outputs.indexOf(event.name), tuple }, undefined);
        }
        return;
      }
      case Kind.Timer:
        replica.timers.delete(event.name);
        replica.stage!.onTimer?.(event.name, replica.ctx!);
        return;
      case Kind.External:
        this.external(replica, event.payload as Uint8Array);
        return;
    }
  }

  private deliverTuple(replica: Replica, src: number, stream: string, tuple: Tuple): void {
    const stage = replica.stage!;
    const source = this.replicaList[src]!.id;
    this.stats.delivered++;
    this.options.onDeliver?.(source, replica.id, stream, tuple);
    if (!stage.onTuple) throw new Error(`${replicaName(replica.id)} has no onTuple`);
    const input: Incoming = { stream, source, tuple };
    stage.onTuple(input, replica.ctx!);
  }

  /** An external input: to the stage, or held while GPC keeps the stage from running. */
  private external(replica: Replica, input: Uint8Array): void {
    if (replica.gpc?.waiting) {
      replica.heldExternal.push(input);
      return;
    }
    const stage = replica.stage!;
    if (!stage.onExternal) {
      throw new Error(`external input to ${replicaName(replica.id)}, which has no onExternal`);
    }
    stage.onExternal(unpackr.unpack(input), replica.ctx!);
  }

  private scheduleDrain(replica: Replica): void {
    if (replica.drainScheduled || replica.heldHead === replica.held.length) return;
    replica.drainScheduled = true;
    this.push(
      this.event(this.clock, Kind.Drain, replica.task, replica.incarnation, "", 0, null, null),
    );
  }

  // ---- binary heap on (time, seq) -------------------------------------------------------

  private push(event: SimEvent): void {
    const heap = this.heap;
    let i = heap.length;
    heap.push(event);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent]!;
      if (p.time < event.time || (p.time === event.time && p.seq < event.seq)) break;
      heap[i] = p;
      i = parent;
    }
    heap[i] = event;
  }

  private pop(): SimEvent | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    const n = heap.length;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      const right = child + 1;
      if (right < n) {
        const a = heap[child]!;
        const b = heap[right]!;
        if (b.time < a.time || (b.time === a.time && b.seq < a.seq)) child = right;
      }
      const c = heap[child]!;
      if (last.time < c.time || (last.time === c.time && last.seq < c.seq)) break;
      heap[i] = c;
      i = child;
    }
    heap[i] = last;
    return top;
  }
}
