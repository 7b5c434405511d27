/**
 * GPC in a stream manager (docs/CHECKPOINTING.md): it passes the topology manager's commands
 * to its instances and their reports back, logs what its source instances emit since the last
 * global checkpoint (replayed after a rollback), and during a rollback keeps the old run's
 * tuples out: an instance's until it restored, a peer's until that peer's fence.
 */
import { unpack } from "msgpackr";
import type { PhysicalPlan } from "../plan/physical-plan.js";
import { tasksIn } from "../plan/physical-plan.js";
import { markerStream } from "../plan/markers.js";
import { TupleReader } from "../wire/tuples.js";
import type { GpcCommand, GpcFence, GpcReport } from "../wire/messages.js";

interface SourceLog {
  /** Data records emitted since the marker of the last global checkpoint, raw. */
  records: { after: number; bytes: Buffer }[];
  /** The last marker this source emitted. */
  marker: number;
}

export interface GpcStmgrHooks {
  toInstance(task: number, command: GpcCommand): void;
  toTmaster(report: GpcReport): void;
  fencePeers(fence: GpcFence): void;
  /** Routes records as if the source task had just emitted them. */
  replay(task: number, records: Buffer): void;
  log: { info(obj: object, msg?: string): void };
}

export class GpcStmgr {
  private readonly sources = new Map<number, SourceLog>();
  private readonly markerOf = new Map<number, number>();
  /** The rollback in progress: its attempt and checkpoint, and the local tasks not restored. */
  private restore: { r: number; g: number; pending: Set<number> } | undefined;
  private attempt = -1;
  private readonly fenced = new Map<number, number>();
  private readonly local: number[];

  constructor(
    private readonly plan: PhysicalPlan,
    container: number,
    private readonly hooks: GpcStmgrHooks,
  ) {
    this.local = tasksIn(plan, container).map((t) => t.task);
    for (const t of tasksIn(plan, container)) {
      const spec = plan.topology.stages.find((s) => s.name === t.stage)!;
      this.markerOf.set(t.task, markerStream(spec));
      if (spec.isSource) this.sources.set(t.task, { records: [], marker: 0 });
    }
  }

  command(command: GpcCommand): void {
    switch (command.t) {
      case "gpc-checkpoint":
        for (const task of this.sources.keys()) this.hooks.toInstance(task, command);
        return;
      case "gpc-global":
        for (const log of this.sources.values()) {
          log.records = log.records.filter((record) => record.after >= command.i);
        }
        for (const task of this.local) this.hooks.toInstance(task, command);
        return;
      case "gpc-restore": {
        if (command.r <= this.attempt) return;
        this.attempt = command.r;
        this.restore = { r: command.r, g: command.g, pending: new Set(this.local) };
        this.hooks.fencePeers({ t: "gpc-fence", r: command.r });
        for (const task of this.local) this.hooks.toInstance(task, command);
        this.hooks.log.info({ event: "gpc-restore", attempt: command.r, checkpoint: command.g });
        return;
      }
      case "gpc-resume": {
        if (command.r !== this.attempt || !this.restore) return;
        const { g } = this.restore;
        this.restore = undefined;
        for (const task of this.local) this.hooks.toInstance(task, command);
        // The sources' tuples since the global checkpoint, in their order, markers left out.
        for (const [task, log] of this.sources) {
          log.records = log.records.filter((record) => record.after >= g);
          for (const record of log.records) record.after = g;
          log.marker = g;
          if (log.records.length > 0) {
            this.hooks.replay(task, Buffer.concat(log.records.map((record) => record.bytes)));
          }
        }
        return;
      }
    }
  }

  /** A report of a local instance. */
  fromInstance(task: number, report: GpcReport): void {
    if (report.t === "gpc-saved") {
      this.hooks.toTmaster({ t: "gpc-saved", i: report.i, tasks: [task] });
      return;
    }
    if (!this.restore || report.r !== this.restore.r) return;
    this.restore.pending.delete(task);
    this.hooks.toTmaster({ t: "gpc-restored", r: report.r, tasks: [task] });
  }

  /** A local instance (re)connected: during a rollback it is told to restore at once. */
  instanceStarted(task: number): void {
    if (this.restore) {
      this.hooks.toInstance(task, { t: "gpc-restore", r: this.restore.r, g: this.restore.g });
    }
  }

  /**
   * Whether an EMIT frame of a local instance goes on: not before the instance restored (it
   * is the old run's). A source's records are logged.
   */
  acceptEmit(task: number, records: Buffer): boolean {
    if (this.restore?.pending.has(task)) return false;
    const log = this.sources.get(task);
    if (!log) return true;
    const marker = this.markerOf.get(task)!;
    const reader = new TupleReader(records);
    while (reader.next()) {
      if (reader.stream === marker) {
        log.marker = unpack(reader.payload()) as number;
        continue;
      }
      log.records.push({
        after: log.marker,
        bytes: Buffer.from(records.subarray(reader.recordStart, reader.payloadEnd)),
      });
    }
    return true;
  }

  /**
   * The fence for a new peer connection: what this stream manager forwards on it is of the
   * current attempt (during a rollback it forwards nothing of the old run: its instances'
   * tuples are dropped until they restored).
   */
  fenceForNewLink(): GpcFence | undefined {
    return this.attempt < 0 ? undefined : { t: "gpc-fence", r: this.attempt };
  }

  /** Whether a peer's FORWARD goes on: not before its fence of the current attempt. */
  acceptForward(peer: number): boolean {
    return this.attempt < 0 || (this.fenced.get(peer) ?? -1) >= this.attempt;
  }

  fence(peer: number, fence: GpcFence): void {
    this.fenced.set(peer, Math.max(this.fenced.get(peer) ?? -1, fence.r));
  }
}
