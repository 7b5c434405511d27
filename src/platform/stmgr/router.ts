/**
 * The stream manager's routing core: tuples from local instances and from peer stream managers
 * go to local instances or, batched per peer container, to peers. Per (source task,
 * destination task) the path is one instance link and at most one peer link, so it is FIFO
 * while both ends live. Tuples for a replica that is down, or for a peer that is not connected,
 * are dropped and counted: the protocols above never rely on delivery across a crash.
 * Payloads are copied, never decoded.
 */
import type { PhysicalPlan } from "../plan/physical-plan.js";
import { WireError } from "../wire/errors.js";
import {
  DELIVER,
  EMIT,
  FORWARD,
  TupleReader,
  type TupleFrameType,
  type TupleWriter,
} from "../wire/tuples.js";

/** Where tuples go: an instance or a peer connection (see Connection.tuples). */
export interface Outlet {
  tuples(type: TupleFrameType): TupleWriter;
  /** Called once after a batch of appends. */
  queued(): void;
}

export class Router {
  readonly local = new Map<number, Outlet>();
  readonly peers = new Map<number, Outlet>();
  /** Remote tasks the topology manager last reported running. */
  remoteRunning = new Set<number>();
  dropped = 0;
  routed = 0;
  /** allowed[task][stream index]: the tasks that consume that stream of that task. */
  private readonly allowed: Set<number>[][];
  private readonly containerOf: number[];
  private readonly touched = new Set<Outlet>();
  /** Scratch: destinations of the current tuple per remote container. */
  private readonly remote = new Map<number, number[]>();

  constructor(
    plan: PhysicalPlan,
    private readonly container: number,
  ) {
    this.containerOf = plan.tasks.map((t) => t.container);
    const tasksOf = (stage: string) =>
      plan.tasks.filter((t) => t.stage === stage).map((t) => t.task);
    this.allowed = plan.tasks.map((t) => {
      const spec = plan.topology.stages.find((s) => s.name === t.stage)!;
      return spec.outputs.map((stream) => {
        const consumers = new Set<number>();
        for (const consumer of plan.topology.stages) {
          if (consumer.inputs.some((i) => i.stage === t.stage && i.stream === stream)) {
            for (const task of tasksOf(consumer.name)) consumers.add(task);
          }
        }
        return consumers;
      });
    });
  }

  /**
   * The records of an EMIT frame from local instance `srcTask`. Throws WireError at the first
   * record that breaks the topology (tuples before it are routed: the link closes anyway).
   */
  fromInstance(srcTask: number, records: Buffer): void {
    const reader = new TupleReader(EMIT, records);
    const streams = this.allowed[srcTask];
    if (!streams) throw new WireError("FRAME_INVALID", `no task ${srcTask} in the plan`);
    try {
      while (reader.next()) {
        const allowed = streams[reader.stream];
        if (!allowed) {
          throw new WireError("FRAME_INVALID", `task ${srcTask} has no stream ${reader.stream}`);
        }
        for (let i = 0; i < reader.destCount; i++) {
          const dest = reader.dest(i);
          if (!allowed.has(dest)) {
            throw new WireError(
              "FRAME_INVALID",
              `task ${dest} does not consume stream ${reader.stream}`,
            );
          }
        }
        this.route(srcTask, reader);
      }
    } finally {
      this.flushTouched();
    }
  }

  /** The records of a FORWARD frame from a peer, for our local tasks. */
  fromPeer(records: Buffer): void {
    const reader = new TupleReader(FORWARD, records);
    try {
      while (reader.next()) {
        const allowed = this.allowed[reader.srcTask]?.[reader.stream];
        for (let i = 0; i < reader.destCount; i++) {
          const dest = reader.dest(i);
          if (!allowed?.has(dest) || this.containerOf[dest] !== this.container) {
            throw new WireError(
              "FRAME_INVALID",
              `forward of ${reader.srcTask}/${reader.stream} to task ${dest}, not here`,
            );
          }
        }
        for (let i = 0; i < reader.destCount; i++) {
          this.deliverLocal(reader.srcTask, reader.stream, reader.dest(i), reader);
        }
      }
    } finally {
      this.flushTouched();
    }
  }

  /** Local destinations get the tuple; remote ones one FORWARD record per peer container. */
  private route(srcTask: number, reader: TupleReader): void {
    if (reader.destCount === 1) return this.routeOne(srcTask, reader, reader.dest(0));
    for (let i = 0; i < reader.destCount; i++) {
      const dest = reader.dest(i);
      const container = this.containerOf[dest]!;
      if (container === this.container) {
        this.deliverLocal(srcTask, reader.stream, dest, reader);
      } else if (this.remoteRunning.has(dest) && this.peers.has(container)) {
        const list = this.remote.get(container);
        if (list) list.push(dest);
        else this.remote.set(container, [dest]);
      } else {
        this.dropped++;
      }
    }
    if (this.remote.size === 0) return;
    for (const [container, dests] of this.remote) {
      const peer = this.peers.get(container)!;
      peer
        .tuples(FORWARD)
        .forward(
          srcTask,
          reader.stream,
          dests,
          reader.bytes,
          reader.payloadStart,
          reader.payloadEnd,
        );
      this.touched.add(peer);
      this.routed += dests.length;
    }
    this.remote.clear();
  }

  private routeOne(srcTask: number, reader: TupleReader, dest: number): void {
    const container = this.containerOf[dest]!;
    if (container === this.container)
      return this.deliverLocal(srcTask, reader.stream, dest, reader);
    const peer = this.peers.get(container);
    if (!peer || !this.remoteRunning.has(dest)) {
      this.dropped++;
      return;
    }
    peer
      .tuples(FORWARD)
      .forward(srcTask, reader.stream, dest, reader.bytes, reader.payloadStart, reader.payloadEnd);
    this.touched.add(peer);
    this.routed++;
  }

  private deliverLocal(srcTask: number, stream: number, dest: number, reader: TupleReader): void {
    const outlet = this.local.get(dest);
    if (!outlet) {
      this.dropped++;
      return;
    }
    outlet
      .tuples(DELIVER)
      .deliver(srcTask, stream, reader.bytes, reader.payloadStart, reader.payloadEnd);
    this.touched.add(outlet);
    this.routed++;
  }

  private flushTouched(): void {
    for (const outlet of this.touched) outlet.queued();
    this.touched.clear();
  }
}
