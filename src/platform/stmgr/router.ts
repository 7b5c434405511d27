/**
 * The stream manager's routing core: tuples from local instances and from peer stream managers
 * go to local instances or, batched per peer container, to peers. Per (source task,
 * destination task) the path is one instance link and at most one peer link, so it is FIFO
 * while both ends live. Tuples for a replica that is down, or for a peer that is not connected,
 * are dropped and counted: the protocols above never rely on delivery across a crash.
 * Payloads are copied, never decoded.
 */
import { downstreamTasks } from "../plan/markers.js";
import type { PhysicalPlan } from "../plan/physical-plan.js";
import { WireError } from "../wire/errors.js";
import {
  DELIVER,
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
  /** Where each task runs now; -1: nowhere (it moves). */
  private readonly containerOf: number[];
  private readonly touched = new Set<Outlet>();
  /** Scratch: destinations of the current tuple per remote container. */
  private readonly remote = new Map<number, number[]>();
  private run: Outlet | undefined;
  private runType: TupleFrameType = DELIVER;
  private runStart = 0;
  private runEnd = 0;
  private runRecords = 0;

  /** @param markers GPC: every task may also send on its marker stream (plan/markers.ts) */
  constructor(
    plan: PhysicalPlan,
    private readonly container: number,
    markers = false,
  ) {
    this.containerOf = plan.tasks.map((t) => t.container);
    const tasksOf = (stage: string) =>
      plan.tasks.filter((t) => t.stage === stage).map((t) => t.task);
    this.allowed = plan.tasks.map((t) => {
      const spec = plan.topology.stages.find((s) => s.name === t.stage)!;
      const declared = spec.outputs.map((stream) => {
        const consumers = new Set<number>();
        for (const consumer of plan.topology.stages) {
          if (consumer.inputs.some((i) => i.stage === t.stage && i.stream === stream)) {
            for (const task of tasksOf(consumer.name)) consumers.add(task);
          }
        }
        return consumers;
      });
      // The marker stream (GPC) reaches every downstream task.
      return markers ? [...declared, new Set(downstreamTasks(plan, t.stage))] : declared;
    });
  }

  /** Takes the placements of a plan. */
  place(instances: readonly { task: number; container: number | null }[]): void {
    for (const i of instances) this.containerOf[i.task] = i.container ?? -1;
  }

  /**
   * The records of an EMIT frame from local instance `srcTask`. Throws WireError at the first
   * record that breaks the topology (records before it are routed: the link closes anyway).
   */
  fromInstance(srcTask: number, records: Buffer): void {
    const streams = this.allowed[srcTask];
    if (!streams) throw new WireError("FRAME_INVALID", `no task ${srcTask} in the plan`);
    const reader = new TupleReader(records);
    try {
      while (reader.next()) {
        if (reader.srcTask !== srcTask) {
          throw new WireError("FRAME_INVALID", `task ${srcTask} sent a tuple as ${reader.srcTask}`);
        }
        const allowed = streams[reader.stream];
        if (!allowed) {
          throw new WireError("FRAME_INVALID", `task ${srcTask} has no stream ${reader.stream}`);
        }
        for (let i = 0; i < reader.destCount; i++) {
          if (!allowed.has(reader.dest(i))) {
            throw new WireError(
              "FRAME_INVALID",
              `task ${reader.dest(i)} does not consume stream ${reader.stream}`,
            );
          }
        }
        if (reader.destCount === 1) this.routeOne(reader);
        else this.routeMany(reader);
      }
    } finally {
      this.endRun(records);
      this.flushTouched();
    }
  }

  /**
   * The records of a FORWARD frame from a peer, for our local tasks. One for a task that is not
   * here (it just moved away, and the peer routed by an older plan) is dropped like one for a
   * task that is down.
   */
  fromPeer(records: Buffer): void {
    const reader = new TupleReader(records);
    try {
      while (reader.next()) {
        const allowed = this.allowed[reader.srcTask]?.[reader.stream];
        for (let i = 0; i < reader.destCount; i++) {
          const dest = reader.dest(i);
          if (!allowed?.has(dest)) {
            throw new WireError(
              "FRAME_INVALID",
              `task ${dest} does not consume stream ${reader.stream} of task ${reader.srcTask}`,
            );
          }
        }
        if (reader.destCount === 1) {
          this.extendRun(reader, this.local.get(reader.dest(0)), DELIVER);
          continue;
        }
        this.endRun(records);
        for (let i = 0; i < reader.destCount; i++) this.deliverLocal(reader, reader.dest(i));
      }
    } finally {
      this.endRun(records);
      this.flushTouched();
    }
  }

  /** One destination: the record goes on unchanged, as a DELIVER or a FORWARD. */
  private routeOne(reader: TupleReader): void {
    const dest = reader.dest(0);
    const container = this.containerOf[dest]!;
    if (container === this.container) {
      this.extendRun(reader, this.local.get(dest), DELIVER);
    } else {
      const peer = this.remoteRunning.has(dest) ? this.peers.get(container) : undefined;
      this.extendRun(reader, peer, FORWARD);
    }
  }

  /** Several destinations: a DELIVER per local one, a FORWARD per peer container. */
  private routeMany(reader: TupleReader): void {
    this.endRun(reader.bytes);
    for (let i = 0; i < reader.destCount; i++) {
      const dest = reader.dest(i);
      const container = this.containerOf[dest]!;
      if (container === this.container) {
        this.deliverLocal(reader, dest);
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
        .append(
          reader.srcTask,
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

  private deliverLocal(reader: TupleReader, dest: number): void {
    const outlet = this.local.get(dest);
    if (!outlet) {
      this.dropped++;
      return;
    }
    outlet
      .tuples(DELIVER)
      .append(
        reader.srcTask,
        reader.stream,
        dest,
        reader.bytes,
        reader.payloadStart,
        reader.payloadEnd,
      );
    this.touched.add(outlet);
    this.routed++;
  }

  /*
   * Runs: consecutive records that go unchanged to the same outlet are copied with one call.
   * Anything else appended to an outlet ends the current run first, so order is kept.
   */
  private extendRun(reader: TupleReader, outlet: Outlet | undefined, type: TupleFrameType): void {
    if (!outlet) {
      this.dropped++;
      return;
    }
    this.routed++;
    if (this.run === outlet && this.runType === type && this.runEnd === reader.recordStart) {
      this.runEnd = reader.payloadEnd;
      this.runRecords++;
      return;
    }
    this.endRun(reader.bytes);
    this.run = outlet;
    this.runType = type;
    this.runStart = reader.recordStart;
    this.runEnd = reader.payloadEnd;
    this.runRecords = 1;
  }

  private endRun(bytes: Buffer): void {
    if (!this.run) return;
    this.run.tuples(this.runType).appendRecords(bytes, this.runStart, this.runEnd, this.runRecords);
    this.touched.add(this.run);
    this.run = undefined;
  }

  private flushTouched(): void {
    for (const outlet of this.touched) outlet.queued();
    this.touched.clear();
  }
}
