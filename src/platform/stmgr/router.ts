/**
 * The stream manager's routing core: tuples from local instances and from peer stream managers
 * go to local instances or, one frame per peer container, to peers. Per (source task,
 * destination task) the path is one instance link and at most one peer link, so it is FIFO
 * while both ends live. Tuples for a replica that is down, or for a peer that is not connected,
 * are dropped and counted: the protocols above never rely on delivery across a crash.
 */
import type { PhysicalPlan } from "../plan/physical-plan.js";
import { WireError } from "../wire/errors.js";
import { encodeFrame } from "../wire/frames.js";
import { DELIVER, FORWARD, type Emit, type Forward } from "../wire/messages.js";

/** Where frames go: an instance or a peer connection. */
export interface Outlet {
  sendFrame(frame: Buffer): void;
}

export class Router {
  readonly local = new Map<number, Outlet>();
  readonly peers = new Map<number, Outlet>();
  /** Remote tasks the topology manager last reported running. */
  remoteRunning = new Set<number>();
  dropped = 0;
  routed = 0;
  /** For each (task, stream): the tasks it may send to. */
  private readonly allowed: Map<string, Set<number>>[];
  private readonly containerOf: number[];

  constructor(
    private readonly plan: PhysicalPlan,
    private readonly container: number,
  ) {
    this.containerOf = plan.tasks.map((t) => t.container);
    const consumersOf = new Map<string, Set<number>>();
    for (const spec of plan.topology.stages) {
      for (const input of spec.inputs) {
        const key = `${input.stage}/${input.stream}`;
        const set = consumersOf.get(key) ?? new Set<number>();
        for (const t of plan.tasks) if (t.stage === spec.name) set.add(t.task);
        consumersOf.set(key, set);
      }
    }
    this.allowed = plan.tasks.map((t) => {
      const streams = new Map<string, Set<number>>();
      const spec = plan.topology.stages.find((s) => s.name === t.stage)!;
      for (const stream of spec.outputs) {
        streams.set(stream, consumersOf.get(`${t.stage}/${stream}`) ?? new Set());
      }
      return streams;
    });
  }

  /** A tuple from local instance `srcTask`. Throws WireError if it breaks the topology. */
  fromInstance(srcTask: number, [, stream, dests, payload]: Emit): void {
    const allowed = this.allowed[srcTask]?.get(stream);
    if (!allowed) throw new WireError("FRAME_INVALID", `task ${srcTask} has no stream ${stream}`);
    for (const dest of dests) {
      if (!allowed.has(dest)) {
        throw new WireError("FRAME_INVALID", `task ${dest} does not consume ${stream}`);
      }
    }
    let localDests: number[] | undefined;
    let remote: Map<number, number[]> | undefined;
    for (const dest of dests) {
      const container = this.containerOf[dest]!;
      if (container === this.container) {
        (localDests ??= []).push(dest);
      } else {
        remote ??= new Map();
        const list = remote.get(container);
        if (list) list.push(dest);
        else remote.set(container, [dest]);
      }
    }
    if (localDests) this.deliverLocal(srcTask, stream, localDests, payload);
    if (remote) {
      for (const [container, list] of remote) {
        const peer = this.peers.get(container);
        const live = list.filter((task) => this.remoteRunning.has(task));
        this.dropped += list.length - live.length;
        if (live.length === 0) continue;
        if (!peer) {
          this.dropped += live.length;
          continue;
        }
        const frame: Forward = [FORWARD, srcTask, stream, live, payload];
        peer.sendFrame(encodeFrame(frame));
        this.routed += live.length;
      }
    }
  }

  /** A tuple forwarded by a peer for our local tasks. */
  fromPeer([, srcTask, stream, dests, payload]: Forward): void {
    if (this.plan.tasks[srcTask] === undefined) {
      throw new WireError("FRAME_INVALID", `forward from unknown task ${srcTask}`);
    }
    const allowed = this.allowed[srcTask]!.get(stream);
    for (const dest of dests) {
      if (this.containerOf[dest] !== this.container || !allowed?.has(dest)) {
        throw new WireError("FRAME_INVALID", `forward of ${stream} to task ${dest} not here`);
      }
    }
    this.deliverLocal(srcTask, stream, dests, payload);
  }

  private deliverLocal(
    srcTask: number,
    stream: string,
    dests: number[],
    payload: Uint8Array,
  ): void {
    let frame: Buffer | undefined;
    for (const dest of dests) {
      const outlet = this.local.get(dest);
      if (!outlet) {
        this.dropped++;
        continue;
      }
      frame ??= encodeFrame([DELIVER, srcTask, stream, payload]);
      outlet.sendFrame(frame);
      this.routed++;
    }
  }
}
