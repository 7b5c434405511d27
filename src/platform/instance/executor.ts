/**
 * Runs one stage replica: builds its context, turns emits into routed tuple frames, runs its
 * timers, and holds a source's handlers while the platform throttles it. It knows nothing of
 * sockets: frames leave through `send`, which the process shell connects to the stream manager.
 */
import { pack, unpack } from "msgpackr";
import type { Logger } from "pino";
import type { Incoming, ReplicaId, Stage, StageContext, Tuple, Source } from "../api/stage.js";
import { TopologyError, type StageSpec } from "../api/topology.js";
import type { PhysicalPlan } from "../plan/physical-plan.js";
import { RoutingTable } from "../plan/routing.js";
import { EMIT, type Emit } from "../wire/messages.js";

export interface ExecutorOptions {
  readonly plan: PhysicalPlan;
  readonly self: ReplicaId;
  readonly incarnation: number;
  readonly log: Logger;
  /** Hands a frame to the stream manager; false if it could not (disconnected): dropped. */
  readonly send: (frame: Emit) => boolean;
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

  constructor(private readonly options: ExecutorOptions) {
    const { plan, self } = options;
    const spec = plan.topology.stages.find((s) => s.name === self.stage);
    if (!spec) throw new TopologyError(`no stage ${self.stage} in topology ${plan.topology.name}`);
    this.spec = spec;
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

  deliver(srcTask: number, stream: string, payload: Uint8Array): void {
    const placement = this.options.plan.tasks[srcTask];
    if (!placement) throw new TopologyError(`tuple from unknown task ${srcTask}`);
    this.tuplesIn++;
    const input: Incoming = {
      stream,
      source: { stage: placement.stage, index: placement.index },
      tuple: unpack(payload),
    };
    if (!this.stage.onTuple) {
      throw new TopologyError(`source ${this.spec.name} received a tuple on ${stream}`);
    }
    this.stage.onTuple(input, this.context);
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

  private emitTo(stream: string, dests: number[], tuple: Tuple): void {
    if (dests.length === 0) return;
    this.tuplesOut++;
    if (!this.options.send([EMIT, stream, dests, pack(tuple)])) this.dropped++;
  }

  private checkStream(stream: string): void {
    if (!this.spec.outputs.includes(stream)) {
      throw new TopologyError(`${this.spec.name} emits on undeclared stream ${stream}`);
    }
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
        this.checkStream(stream);
        this.emitTo(stream, this.routing.destinations(stream, tuple), tuple);
      },
      emitDirect: (stream, index, tuple) => {
        this.checkStream(stream);
        this.emitTo(stream, this.routing.directDestinations(stream, index), tuple);
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
