/**
 * GPC's platform side in the simulator: the topology manager's GpcCoordinator and one
 * GpcStmgr per container, the production classes, wired to the simulator's clock and to
 * control channels with seeded delays (FIFO per channel, as a TCP connection is). The replicas'
 * GpcReplica lives in the simulator itself (simulator.ts), as it lives in the real executor.
 *
 * What the model leaves out: fences travel in-band. A tuple carries the attempt its sender's
 * stream manager was at when the tuple left; it reaches its replica only if that is no older
 * than the attempt of the receiver's stream manager at arrival, which is what a fence on a FIFO
 * link decides in the real stream manager (and, for a local tuple, what the order of the
 * stream manager's writes to its instance decides).
 */
import type { Log } from "../platform/api/stage.js";
import type { PhysicalPlan } from "../platform/plan/physical-plan.js";
import { GpcStmgr } from "../platform/stmgr/gpc.js";
import { GpcCoordinator } from "../platform/tmaster/gpc-coordinator.js";
import type { GpcCommand, GpcReport, PlanUpdate } from "../platform/wire/messages.js";

export interface SimGpcHost {
  readonly plan: PhysicalPlan;
  now(): number;
  /** Runs `action` after a control message's delay; FIFO per `channel`. */
  control(channel: string, action: () => void): void;
  /** A command from a stream manager to the incarnation of `task` alive now. */
  toInstance(task: number, command: GpcCommand): void;
  /** Routes records as if the source task had just emitted them. */
  replay(task: number, records: Buffer): void;
  /** Every replica's state and incarnation now, as the topology manager's plan shows them. */
  instances(): PlanUpdate["instances"];
  /** The coordinator starts rollback `attempt` to global checkpoint `checkpoint`. */
  onRollback(attempt: number, checkpoint: number): void;
  readonly log: Log;
}

export class SimGpc {
  readonly coordinator: GpcCoordinator;
  private readonly stmgrs: GpcStmgr[];
  private readonly containerOf: number[];
  private planVersion = 0;

  constructor(
    private readonly host: SimGpcHost,
    readonly intervalMs: number,
  ) {
    const { plan, log } = host;
    this.containerOf = plan.tasks.map((t) => t.container);
    this.coordinator = new GpcCoordinator(
      plan.tasks.length,
      undefined,
      () => undefined,
      (command) => {
        if (command.t === "gpc-restore") host.onRollback(command.r, command.g);
        for (let c = 0; c < plan.containers; c++) {
          host.control(`tmaster>${c}`, () => this.stmgrs[c]!.command(command));
        }
      },
      log,
      () => host.now(),
      2 * Math.max(2000, 20 * intervalMs),
    );
    this.stmgrs = Array.from(
      { length: plan.containers },
      (_, c) =>
        new GpcStmgr(plan, c, {
          toInstance: (task, command) => host.toInstance(task, command),
          toTmaster: (report) =>
            host.control(`${c}>tmaster`, () => {
              if (report.t === "gpc-saved") this.coordinator.onSaved(report.i, report.tasks);
              else this.coordinator.onRestored(report.r, report.tasks);
            }),
          fencePeers: () => undefined, // in-band: see the module comment
          replay: (task, records) => host.replay(task, records),
          log,
        }),
    );
  }

  /** Every replica is up: the coordinator's baseline, and its ticks from now on. */
  start(schedule: (delayMs: number, action: () => void) => void): void {
    this.observe();
    const tick = () => {
      this.coordinator.tick();
      schedule(this.intervalMs, tick);
    };
    schedule(this.intervalMs, tick);
  }

  /** A replica crashed or (re)started: the topology manager learns it from its plan. */
  replicaChanged(task: number): void {
    this.host.control(`${this.containerOf[task]}>tmaster`, () => this.observe());
  }

  /** A replica (re)connected to its stream manager. */
  instanceStarted(task: number): void {
    const c = this.containerOf[task]!;
    this.host.control(`${task}>${c}`, () => this.stmgrs[c]!.instanceStarted(task));
  }

  /** A report of a replica to its stream manager. */
  report(task: number, report: GpcReport): void {
    const c = this.containerOf[task]!;
    this.host.control(`${task}>${c}`, () => this.stmgrs[c]!.fromInstance(task, report));
  }

  /** The stream manager of `task`'s container takes an emit of it (false: dropped). */
  acceptEmit(task: number, records: Buffer): boolean {
    return this.stmgrs[this.containerOf[task]!]!.acceptEmit(task, records);
  }

  /** The attempt a tuple leaving `task` now belongs to. */
  attemptAt(task: number): number {
    return this.stmgrs[this.containerOf[task]!]!.fenceForNewLink()?.r ?? -1;
  }

  /** Whether a tuple of attempt `attempt` arriving for `task` now goes on to it. */
  accepts(task: number, attempt: number): boolean {
    return attempt >= this.attemptAt(task);
  }

  /** A stream manager's links failed and came back (its in-flight tuples are lost). */
  containerRejoined(task: number): void {
    const c = this.containerOf[task]!;
    this.host.control(`${c}>tmaster`, () => {
      this.coordinator.containerRejoined(c);
      // Its registration comes with a plan update, as heartbeats do.
      this.observe();
    });
  }

  private observe(): void {
    this.coordinator.observe({
      t: "plan",
      version: ++this.planVersion,
      started: true,
      stmgrs: [],
      instances: this.host.instances(),
    });
  }
}
