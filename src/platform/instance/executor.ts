/**
 * Runs one stage replica: builds its context, turns emits into routed tuple frames, runs its
 * timers, and holds a source's handlers while the platform throttles it. It knows nothing of
 * sockets: frames leave through `send`, which the process shell connects to the stream manager,
 * and external I/O goes through the stage's port (if it has one), created here from the
 * environment the shell passes.
 */
import { C1, pack, unpack } from "msgpackr";
import type { Logger } from "pino";
import type {
  CheckpointEvent,
  Checkpoints,
  InstanceCheckpoints,
  InstanceState,
  Mechanism,
  ReplicaId,
  Stage,
  StageContext,
  Tuple,
  Source,
} from "../api/stage.js";
import { sinkOf, type CheckpointChannel } from "../checkpoint/channel.js";
import { PersistedGroupCheckpoints } from "../checkpoint/group-checkpoints.js";
import { GpcReplica } from "../checkpoint/gpc-replica.js";
import { InstanceLog } from "../checkpoint/instance-log.js";
import { downstreamTasks, markerStream, upstreamTasks } from "../plan/markers.js";
import type { GpcCommand, GpcReport } from "../wire/messages.js";
import { CheckpointChainBroken } from "../checkpoint/store/recovery.js";
import type { CheckpointConfig } from "../runtime/config.js";
import {
  TopologyError,
  type ExternalPort,
  type PortEnvironment,
  type StageSpec,
} from "../api/topology.js";
import type { PhysicalPlan } from "../plan/physical-plan.js";
import { RoutingTable } from "../plan/routing.js";
import { WireError } from "../wire/errors.js";

export interface ExecutorOptions {
  readonly plan: PhysicalPlan;
  readonly self: ReplicaId;
  readonly incarnation: number;
  readonly log: Logger;
  /** Hands a tuple to the stream manager; false if it could not (disconnected): dropped. */
  readonly send: (streamIndex: number, dests: number | number[], payload: Uint8Array) => boolean;
  readonly now?: () => number;
  /**
   * Where the stage's port runs; without it (or without a port in the stage's spec) the stage
   * has no external I/O: `ctx.external.send` drops its output.
   */
  readonly portEnvironment?: Omit<PortEnvironment, "stage" | "parallelism">;
  /** How this replica is checkpointed; without it, not at all. */
  readonly checkpointing?: ExecutorCheckpointing;
  /** GPC: reports to the stream manager (saved, restored). */
  readonly gpcReport?: (report: GpcReport) => void;
}

export interface ExecutorCheckpointing {
  readonly mechanism: Mechanism;
  readonly config: CheckpointConfig;
  /** Where LPC writes (shim or checkpoint manager); unused by PDC. */
  readonly channel: CheckpointChannel | undefined;
  /** Names this run's checkpoints in the store (topology and run id). */
  readonly namespace: string;
}

/** An output held by the durability gate until the update recorded before it is durable. */
interface HeldOutput {
  readonly after: number;
  readonly release: () => void;
}

export class Executor {
  readonly spec: StageSpec;
  tuplesIn = 0;
  tuplesOut = 0;
  dropped = 0;
  status: Record<string, unknown> = {};
  private stage: Stage | Source;
  /** GPC at this replica; undefined under the other mechanisms. */
  private gpc: GpcReplica | undefined;
  private readonly routing: RoutingTable;
  private readonly context: StageContext;
  private readonly timers = new Map<string, { cancel(): void }>();
  private readonly heldTimers = new Set<string>();
  private throttledBy = new Set<string>();
  private started = false;
  private readonly port: ExternalPort | undefined;
  /** External inputs that arrived while the source was throttled (in flight as it paused). */
  private heldExternal: Tuple[] = [];
  private portPaused = false;
  /** Output streams of every stage, by index: tuples name their stream by index. */
  private readonly outputsOf: Map<string, readonly string[]>;
  private instanceLog: InstanceLog | undefined;
  private instanceApi: InstanceCheckpoints | undefined;
  /** What recovery found, for the status. */
  private recovery: {
    base: number | null;
    deltas: number;
    updates: number;
    broken?: string;
  } | null = null;
  private groupCheckpoints: PersistedGroupCheckpoints | undefined;
  private held: HeldOutput[] = [];
  private heldHead = 0;
  /** Deliveries that arrived while the replica was still recovering its state. */
  private early: (() => void)[] | undefined = [];

  constructor(private readonly options: ExecutorOptions) {
    const { plan, self } = options;
    const spec = plan.topology.stages.find((s) => s.name === self.stage);
    if (!spec) throw new TopologyError(`no stage ${self.stage} in topology ${plan.topology.name}`);
    this.spec = spec;
    this.outputsOf = new Map(plan.topology.stages.map((s) => [s.name, s.outputs]));
    this.stage = spec.create(self.index);
    this.routing = new RoutingTable(plan, self.stage, self.index);
    const env = options.portEnvironment;
    this.port =
      spec.port && env
        ? spec.port(self.index, { ...env, stage: spec.name, parallelism: spec.parallelism })
        : undefined;
    this.context = this.createContext();
  }

  get throttled(): boolean {
    return this.throttledBy.size > 0;
  }

  /** Whether this replica keeps instance checkpoints (LPC with them on, for a stage that can). */
  get hasInstanceCheckpoints(): boolean {
    const c = this.options.checkpointing;
    return (
      c !== undefined &&
      (c.mechanism === "lpc-cm" || c.mechanism === "lpc-cs") &&
      c.config.instance &&
      this.stage.snapshot !== undefined &&
      this.stage.restore !== undefined &&
      this.stage.rollbackOnly !== true
    );
  }

  /** Starts the replica: recovers its instance state first, if it keeps one. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const c = this.options.checkpointing;
    if (c?.channel && (c.mechanism === "lpc-cm" || c.mechanism === "lpc-cs")) {
      const timers = { now: this.now, setTimer: this.setTimer, log: this.options.log };
      this.groupCheckpoints = new PersistedGroupCheckpoints(
        this.owner("group"),
        sinkOf(c.channel),
        {
          ...timers,
          deliver: (event) => this.checkpointEvent(event),
        },
      );
      if (this.hasInstanceCheckpoints) await this.recover(c.channel, c.config);
    }
    if (c?.channel && c.mechanism === "gpc") {
      const gpc = this.createGpc(c.channel);
      this.gpc = gpc;
      if (this.stage.recordsEveryUpdate) this.instanceApi = { record: (u) => gpc.record(u) };
    }
    const early = this.early ?? [];
    this.early = undefined;
    // Under GPC a restarted replica runs once the rollback its crash causes restores it.
    if (!this.gpc?.waiting) this.stage.onStart?.(this.context);
    for (const deliver of early) deliver();
    if (this.port) {
      this.updatePortPause();
      this.port.open((input) => this.external(input));
    }
  }

  private createGpc(channel: CheckpointChannel): GpcReplica {
    const { plan, self, log } = this.options;
    const { forward, back } = upstreamTasks(plan, self.stage);
    const markerIndex = markerStream(this.spec);
    const downstream = downstreamTasks(plan, self.stage);
    const task = plan.tasks.find((t) => t.stage === self.stage && t.index === self.index)!.task;
    return new GpcReplica(
      {
        self,
        owner: this.owner(self.index),
        channel: sinkOf(channel),
        forward,
        back,
        snapshot: () => this.stage.snapshot?.(),
        unrecorded: () => this.stage.unrecordedState?.(),
        incremental: this.stage.recordsEveryUpdate === true,
        emitMarker: (i) => {
          if (downstream.length > 0) this.options.send(markerIndex, downstream, pack(i));
        },
        deliver: ({ src, stream, tuple }) => {
          const placement = plan.tasks[src]!;
          const name = this.outputsOf.get(placement.stage)![stream]!;
          this.deliverTuple(name, { stage: placement.stage, index: placement.index }, tuple);
        },
        quiesce: () => this.cancelTimers(),
        restart: (state) => this.restartStage(state),
        saved: (i) => this.options.gpcReport?.({ t: "gpc-saved", i, tasks: [task] }),
        restored: (r) => {
          this.options.gpcReport?.({ t: "gpc-restored", r, tasks: [task] });
          const held = this.heldExternal;
          this.heldExternal = [];
          for (const input of held) this.external(input);
        },
        setTimer: (delayMs, fire) => void this.setTimer(delayMs, fire),
        alignTimeoutMs: Math.max(2000, 20 * this.options.checkpointing!.config.gpcIntervalMs),
        log,
      },
      this.now,
      this.options.incarnation > 1,
    );
  }

  /** GPC commands from the stream manager. */
  gpcCommand(command: GpcCommand): void {
    const gpc = this.gpc;
    if (!gpc) return;
    if (command.t === "gpc-checkpoint") gpc.startCheckpoint(command.i);
    else if (command.t === "gpc-global") gpc.onGlobal(command.i);
    else if (command.t === "gpc-restore") gpc.onRestore(command.r, command.g);
    else gpc.onResume(command.r);
  }

  /** GPC rollback: a new stage object in the checkpointed state, started afresh. */
  private cancelTimers(): void {
    for (const timer of this.timers.values()) timer.cancel();
    this.timers.clear();
    this.heldTimers.clear();
  }

  private restartStage(state: InstanceState): void {
    this.cancelTimers();
    this.stage = this.spec.create(this.options.self.index);
    // Restored even without a snapshot: the initial state is the checkpointed one then.
    this.stage.restore?.(state, this.context);
    this.stage.onStart?.(this.context);
  }

  private owner(replica: number | "group") {
    const namespace = this.options.checkpointing!.namespace;
    return { topology: namespace, stage: this.options.self.stage, replica };
  }

  /** Loads this replica's own instance log (retrying until the store answers) and restores it. */
  private async recover(channel: CheckpointChannel, config: CheckpointConfig): Promise<void> {
    const owner = this.owner(this.options.self.index);
    const log = this.options.log;
    let chain;
    for (let delay = 50; ; delay = Math.min(delay * 2, 2000)) {
      try {
        chain = await channel.loadLatest(owner);
        break;
      } catch (error) {
        if (error instanceof CheckpointChainBroken) {
          // Its exact state is gone: the replica starts without one, as if it had no instance
          // checkpoints (a TARA committer then stays passive), rather than from a wrong state.
          log.error({ event: "recovery-impossible", reason: error.message }, "no valid state");
          this.recovery = { base: null, deltas: 0, updates: 0, broken: error.message };
          return;
        }
        log.warn({ event: "recovery-stalled", reason: (error as Error).message }, "cannot load");
        await new Promise<void>((resolve) => this.setTimer(delay, resolve));
      }
    }
    const updates: Tuple[] = [];
    for (const delta of chain.deltas) updates.push(...(unpack(delta.data) as Tuple[]));
    const state: InstanceState = {
      snapshot: chain.base ? unpack(chain.base.data) : undefined,
      updates,
    };
    const ids = [chain.base?.id ?? 0, ...chain.deltas.map((delta: { id: number }) => delta.id)];
    this.recovery = {
      base: chain.base?.id ?? null,
      deltas: chain.deltas.length,
      updates: updates.length,
    };
    log.info({ event: "recovered", ...this.recovery }, "instance state recovered");
    this.stage.restore!(state, this.context);
    this.instanceLog = new InstanceLog({
      owner,
      channel: sinkOf(channel),
      snapshot: () => this.stage.snapshot!(),
      batchFactor: config.batchFactor,
      batchDelayMs: config.batchDelayMs,
      compactEvery: config.compactEvery,
      nextId: Math.max(...ids) + 1,
      baseId: chain.base?.id,
      deltasSinceBase: chain.deltas.length,
      now: this.now,
      setTimer: this.setTimer,
      onDurable: () => this.releaseHeld(),
      log,
    });
    const instanceLog = this.instanceLog;
    this.instanceApi = { record: (update) => instanceLog.record(update) };
  }

  /** Checkpoint state for `tara status` and the metrics. */
  checkpointStatus(): Record<string, unknown> | undefined {
    const c = this.options.checkpointing;
    if (!c) return undefined;
    return {
      mechanism: c.mechanism,
      instance: this.instanceLog
        ? { ...this.instanceLog.stats, recorded: this.instanceLog.recorded, held: this.heldCount }
        : null,
      group: this.groupCheckpoints?.stats ?? null,
      gpc: this.gpc?.stats ?? null,
      recovery: this.recovery,
    };
  }

  private get heldCount(): number {
    return this.held.length - this.heldHead;
  }

  private checkpointEvent(event: CheckpointEvent): void {
    this.stage.onCheckpoint?.(event, this.context);
  }

  /** Sends what the durability gate held, in emission order, as far as durability allows. */
  private releaseHeld(): void {
    const durable = this.instanceLog!.durable;
    while (this.heldHead < this.held.length && this.held[this.heldHead]!.after <= durable) {
      this.held[this.heldHead++]!.release();
    }
    if (this.heldHead === this.held.length) {
      this.held = [];
      this.heldHead = 0;
    }
  }

  /** Runs `send` now, or once every update recorded so far is durable. */
  /** Nothing to wait for: outputs leave at once (always under PDC). */
  private get gateOpen(): boolean {
    const log = this.instanceLog;
    return !this.gpc && (!log || (!log.hasUndurable && this.heldCount === 0));
  }

  private gate(send: () => void): void {
    if (this.gateOpen) send();
    else if (this.gpc) this.gpc.output(send);
    else this.held.push({ after: this.instanceLog!.recorded, release: send });
  }

  private readonly now = (): number =>
    this.options.now ? this.options.now() : performance.timeOrigin + performance.now();

  private readonly setTimer = (delayMs: number, fire: () => void) => {
    const timeout = setTimeout(fire, delayMs);
    return { cancel: () => clearTimeout(timeout) };
  };

  /** One input from the port: to the stage, or held while a source is throttled. */
  private external(input: Tuple): void {
    if ((this.spec.isSource && this.throttled) || this.gpc?.waiting) {
      this.heldExternal.push(input);
      return;
    }
    this.tuplesIn++;
    this.stage.onExternal?.(input, this.context);
  }

  /**
   * One delivered tuple. A tuple this replica cannot have been sent (unknown source or stream,
   * undecodable payload) is a WireError: bad input, not a bug of the stage.
   */
  deliver(srcTask: number, streamIndex: number, bytes: Buffer, start: number, end: number): void {
    const placement = this.options.plan.tasks[srcTask];
    const gpc = this.options.checkpointing?.mechanism === "gpc";
    if (gpc && placement && streamIndex === this.outputsOf.get(placement.stage)?.length) {
      const i: unknown = unpack(bytes.subarray(start, end));
      if (!Number.isSafeInteger(i) || (i as number) < 0) {
        throw new WireError("FRAME_MALFORMED", "a checkpoint marker without a checkpoint id");
      }
      const marker = () =>
        this.gpc!.onDelivery({ src: srcTask, stream: streamIndex, tuple: null }, i as number);
      if (this.early) this.early.push(marker);
      else marker();
      return;
    }
    const stream = placement && this.outputsOf.get(placement.stage)?.[streamIndex];
    if (!placement || stream === undefined || !this.stage.onTuple) {
      throw new WireError("FRAME_INVALID", `no stream ${streamIndex} of task ${srcTask} here`);
    }
    let tuple: Tuple;
    try {
      tuple = unpack(bytes, { start, end });
      if (tuple === C1) throw new Error("the never-used byte 0xc1");
    } catch (error) {
      throw new WireError("FRAME_MALFORMED", `undecodable tuple: ${(error as Error).message}`);
    }
    const source = { stage: placement.stage, index: placement.index };
    if (gpc) {
      const delivery = () =>
        this.gpc!.onDelivery({ src: srcTask, stream: streamIndex, tuple }, undefined);
      if (this.early) this.early.push(delivery);
      else delivery();
      return;
    }
    if (this.early) {
      this.early.push(() => this.deliverTuple(stream, source, tuple));
      return;
    }
    this.deliverTuple(stream, source, tuple);
  }

  private deliverTuple(stream: string, source: ReplicaId, tuple: Tuple): void {
    this.tuplesIn++;
    this.stage.onTuple!({ stream, source, tuple }, this.context);
  }

  /** Throttling has named causes (stream manager's backpressure, our own full link). */
  setThrottle(cause: string, on: boolean): void {
    const was = this.throttled;
    if (on) this.throttledBy.add(cause);
    else this.throttledBy.delete(cause);
    this.updatePortPause();
    if (was && !this.throttled) {
      const held = [...this.heldTimers];
      this.heldTimers.clear();
      for (const name of held) this.fireTimer(name);
      // What the stage does with one may throttle it again: the rest stays held then.
      while (this.heldExternal.length > 0 && !this.throttled) {
        this.external(this.heldExternal.shift());
      }
    }
  }

  /** A throttled source stops reading its port; a started, released one reads again. */
  private updatePortPause(): void {
    if (!this.port || !this.spec.isSource || !this.started) return;
    if (this.throttled && !this.portPaused) {
      this.portPaused = true;
      this.port.pause();
    } else if (!this.throttled && this.portPaused) {
      this.portPaused = false;
      this.port.resume();
    }
  }

  stop(): void {
    this.instanceLog?.close();
    this.groupCheckpoints?.close();
    for (const timer of this.timers.values()) timer.cancel();
    this.timers.clear();
    this.port?.close();
  }

  private fireTimer(name: string): void {
    if (this.spec.isSource && this.throttled) {
      this.heldTimers.add(name);
      return;
    }
    this.stage.onTimer?.(name, this.context);
  }

  private emitTo(streamIndex: number, dests: number[], tuple: Tuple): void {
    if (dests.length === 0) return;
    this.tuplesOut++;
    const payload = encodeTuple(tuple);
    const to = dests.length === 1 ? dests[0]! : dests;
    // The open gate (the common case) costs no closure per tuple.
    if (this.gateOpen) {
      if (!this.options.send(streamIndex, to, payload)) this.dropped++;
      return;
    }
    this.gate(() => {
      if (!this.options.send(streamIndex, to, payload)) this.dropped++;
    });
  }

  private streamIndex(stream: string): number {
    const index = this.spec.outputs.indexOf(stream);
    if (index < 0)
      throw new TopologyError(`${this.spec.name} emits on undeclared stream ${stream}`);
    return index;
  }

  private createCheckpoints(): Checkpoints {
    const mechanism = this.options.checkpointing?.mechanism ?? "none";
    // Getters: both exist only once the replica has started (and recovered).
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const executor = this;
    return {
      mechanism,
      get group() {
        return executor.groupCheckpoints;
      },
      get instance() {
        return executor.instanceApi;
      },
    };
  }

  private createContext(): StageContext {
    const { plan, self, incarnation, log } = this.options;
    const now = this.options.now ?? (() => performance.timeOrigin + performance.now());
    const parallelism = new Map(plan.topology.stages.map((s) => [s.name, s.parallelism]));
    return {
      self,
      incarnation,
      parallelism: (stage) => {
        const p = parallelism.get(stage);
        if (p === undefined) throw new TopologyError(`no stage ${stage}`);
        return p;
      },
      emit: (stream, tuple) => {
        const streamIndex = this.streamIndex(stream);
        this.emitTo(streamIndex, this.routing.destinations(stream, tuple), tuple);
      },
      emitDirect: (stream, index, tuple) => {
        const streamIndex = this.streamIndex(stream);
        this.emitTo(streamIndex, this.routing.directDestinations(stream, index), tuple);
      },
      timers: {
        set: (name, delayMs) => {
          this.timers.get(name)?.cancel();
          this.heldTimers.delete(name);
          const fire = () => {
            this.timers.delete(name);
            this.fireTimer(name);
          };
          // 0 ms means "once this turn's input is handled": setImmediate, not setTimeout's 1 ms.
          if (delayMs <= 0) {
            const immediate = setImmediate(fire);
            this.timers.set(name, { cancel: () => clearImmediate(immediate) });
          } else {
            const timeout = setTimeout(fire, delayMs);
            this.timers.set(name, { cancel: () => clearTimeout(timeout) });
          }
        },
        cancel: (name) => {
          this.timers.get(name)?.cancel();
          this.timers.delete(name);
          this.heldTimers.delete(name);
        },
      },
      clock: { now },
      log,
      checkpoints: this.createCheckpoints(),
      external: {
        send: this.port
          ? (output) =>
              this.gpc
                ? this.gpc.external(() => this.port!.send(output))
                : this.gate(() => this.port!.send(output))
          : () => undefined,
      },
      setStatus: (status) => {
        this.status = status;
      },
    };
  }
}

/**
 * msgpack encoding of a tuple. Bytes (e.g. a batch a stage encoded itself) are framed as
 * msgpack bin directly: the general encoder costs more per call than copying them.
 */
function encodeTuple(tuple: Tuple): Uint8Array {
  if (!(tuple instanceof Uint8Array)) return pack(tuple);
  const n = tuple.length;
  const header = n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
  const out = Buffer.allocUnsafe(header + n);
  if (header === 2) {
    out[0] = 0xc4;
    out[1] = n;
  } else if (header === 3) {
    out[0] = 0xc5;
    out.writeUInt16BE(n, 1);
  } else {
    out[0] = 0xc6;
    out.writeUInt32BE(n, 1);
  }
  out.set(tuple, header);
  return out;
}
