/**
 * Runs one stage replica: builds its context, turns emits into routed tuple frames, runs its
 * timers, and holds a source's handlers while the platform throttles it. It knows nothing of
 * sockets: frames leave through `send`, which the process shell connects to the stream manager,
 * and external I/O goes through the stage's port (if it has one), created here from the
 * environment the shell passes.
 */
import { C1, pack, unpack } from "msgpackr";
import type { Logger } from "pino";
import type { ReplicaId, Stage, StageContext, Tuple, Source } from "../api/stage.js";
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

  start(): void {
    if (this.started) return;
    this.started = true;
    this.stage.onStart?.(this.context);
    if (this.port) {
      this.updatePortPause();
      this.port.open((input) => this.external(input));
    }
  }

  /** One input from the port: to the stage, or held while a source is throttled. */
  private external(input: Tuple): void {
    if (this.spec.isSource && this.throttled) {
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
      checkpoints: { mechanism: "none" },
      external: {
        send: this.port ? (output) => this.port!.send(output) : () => undefined,
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
