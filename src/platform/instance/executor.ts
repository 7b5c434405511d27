/**
 * Runs one stage replica: builds its context, turns emits into routed tuple frames, runs its
 * timers, and holds a source's handlers while the platform throttles it. It knows nothing of
 * sockets: frames leave through `send`, which the process shell connects to the stream manager.
 */
import { C1, pack, unpack } from "msgpackr";
import type { Logger } from "pino";
import type { ReplicaId, Stage, StageContext, Tuple, Source } from "../api/stage.js";
import { TopologyError, type StageSpec } from "../api/topology.js";
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
}

export class Executor {
  readonly spec: StageSpec;
  tuplesIn = 0;
  tuplesOut = 0;
  dropped = 0;
  status: Record<string, unknown> = {};
  private readonly stage: Stage | Source;
  private readonly routing: RoutingTable;
  private readonly context: StageContext;
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly heldTimers = new Set<string>();
  private throttledBy = new Set<string>();
  private started = false;
  /** Output streams of every stage, by index: tuples name their stream by index. */
  private readonly outputsOf: Map<string, readonly string[]>;

  constructor(private readonly options: ExecutorOptions) {
    const { plan, self } = options;
    const spec = plan.topology.stages.find((s) => s.name === self.stage);
    if (!spec) throw new TopologyError(`no stage ${self.stage} in topology ${plan.topology.name}`);
    this.spec = spec;
    this.outputsOf = new Map(plan.topology.stages.map((s) => [s.name, s.outputs]));
    this.stage = spec.create(self.index);
    this.routing = new RoutingTable(plan, self.stage, self.index);
    this.context = this.createContext();
  }

  get throttled(): boolean {
    return this.throttledBy.size > 0;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.stage.onStart?.(this.context);
  }

  /**
   * One delivered tuple. A tuple this replica cannot have been sent (unknown source or stream,
   * undecodable payload) is a WireError: bad input, not a bug of the stage.
   */
  deliver(srcTask: number, streamIndex: number, bytes: Buffer, start: number, end: number): void {
    const placement = this.options.plan.tasks[srcTask];
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
    this.tuplesIn++;
    const source = { stage: placement.stage, index: placement.index };
    this.stage.onTuple({ stream, source, tuple }, this.context);
  }

  /** Throttling has named causes (stream manager's backpressure, our own full link). */
  setThrottle(cause: string, on: boolean): void {
    const was = this.throttled;
    if (on) this.throttledBy.add(cause);
    else this.throttledBy.delete(cause);
    if (was && !this.throttled) {
      const held = [...this.heldTimers];
      this.heldTimers.clear();
      for (const name of held) this.fireTimer(name);
    }
  }

  stop(): void {
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
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
    const sent = this.options.send(streamIndex, dests.length === 1 ? dests[0]! : dests, payload);
    if (!sent) this.dropped++;
  }

  private streamIndex(stream: string): number {
    const index = this.spec.outputs.indexOf(stream);
    if (index < 0)
      throw new TopologyError(`${this.spec.name} emits on undeclared stream ${stream}`);
    return index;
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
          clearTimeout(this.timers.get(name));
          this.heldTimers.delete(name);
          const timer = setTimeout(
            () => {
              this.timers.delete(name);
              this.fireTimer(name);
            },
            Math.max(0, delayMs),
          );
          this.timers.set(name, timer);
        },
        cancel: (name) => {
          clearTimeout(this.timers.get(name));
          this.timers.delete(name);
          this.heldTimers.delete(name);
        },
      },
      clock: { now },
      log,
      checkpoints: { mechanism: "none" },
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
