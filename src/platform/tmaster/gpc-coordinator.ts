/**
 * GPC's coordinator in the topology manager (docs/CHECKPOINTING.md): starts checkpoint i every
 * interval, declares it global once every replica saved it, and after any replica failure
 * rolls the whole topology back to the last global checkpoint: once every replica runs again
 * it sends a restore with a new attempt number, and a resume when every replica restored.
 * Messages of an older attempt, and saves of checkpoints a rollback abandoned, are ignored.
 */
import type { GpcCommand, PlanUpdate } from "../wire/messages.js";

/** Checkpoints started and not yet global, beyond which a tick starts none. */
const MAX_PENDING = 4;

export interface GpcPersisted {
  global: number;
  nextId: number;
  attempt: number;
}

export interface GpcCoordinatorStats {
  global: number;
  lastGlobalAt: number | null;
  started: number;
  abandoned: number;
  restores: number;
  /** The rollback in progress or the last one: attempt, checkpoint, how long it took. */
  restore: { attempt: number; checkpoint: number; startedAt: number; ms: number | null } | null;
}

export class GpcCoordinator {
  readonly stats: GpcCoordinatorStats = {
    global: 0,
    lastGlobalAt: null,
    started: 0,
    abandoned: 0,
    restores: 0,
    restore: null,
  };
  private nextId = 1;
  private attempt = 0;
  /** Pending checkpoints: the tasks that saved them, and when each started. */
  private readonly saved = new Map<number, Set<number>>();
  private readonly startedAt = new Map<number, number>();
  private restoring: { r: number; pending: Set<number> } | undefined;
  private failed = false;
  /** Incarnation of every task when the current run (or rollback) began. */
  private baseline: Map<number, number> | undefined;

  /**
   * @param persisted what an earlier incarnation of the topology manager left (see `persist`)
   * @param persist keeps the last global checkpoint and the counters across a restart of the
   *   topology manager: a rollback must never go back further than a global checkpoint
   */
  constructor(
    private readonly tasks: number,
    persisted: GpcPersisted | undefined,
    private readonly persist: (state: GpcPersisted) => void,
    private readonly broadcast: (command: GpcCommand) => void,
    private readonly log: {
      info(obj: object, msg?: string): void;
      warn(obj: object, msg?: string): void;
    },
    private readonly now: () => number,
    /** A checkpoint not global this long after its start is given up. */
    private readonly abandonAfterMs: number,
  ) {
    if (persisted) {
      this.stats.global = persisted.global;
      this.nextId = persisted.nextId;
      this.attempt = persisted.attempt;
    }
  }

  private save(): void {
    this.persist({ global: this.stats.global, nextId: this.nextId, attempt: this.attempt });
  }

  /** Every plan change and heartbeat: is a replica gone or restarted? Then roll back. */
  observe(plan: PlanUpdate): void {
    if (!plan.started) return;
    const running = plan.instances.every((i) => i.state === "running");
    if (!this.baseline) {
      if (running) this.baseline = new Map(plan.instances.map((i) => [i.task, i.incarnation]));
      return;
    }
    const baseline = this.baseline;
    const changed = plan.instances.some(
      (i) => i.state !== "running" || i.incarnation !== baseline.get(i.task),
    );
    if (changed && !this.failed) {
      this.failed = true;
      this.log.warn({ event: "gpc-failure" }, "a replica failed: the topology rolls back");
    }
    if (this.failed && running) this.startRestore(plan);
  }

  /**
   * A stream manager registered again (it restarted, or its link did): it may have missed a
   * restore or a resume, so the topology rolls back once more, with it.
   */
  containerRejoined(container: number): void {
    if (!this.baseline || this.failed) return;
    this.failed = true;
    this.log.warn({ event: "gpc-failure", container }, "a stream manager rejoined: rolling back");
  }

  /** The checkpoint interval elapsed. */
  tick(): void {
    if (!this.baseline || this.failed || this.restoring) return;
    // A checkpoint some replica abandoned (a marker lost with a failed link) never completes.
    for (const [i, at] of this.startedAt) {
      if (this.now() - at < this.abandonAfterMs) break;
      this.saved.delete(i);
      this.startedAt.delete(i);
      this.stats.abandoned++;
    }
    if (this.saved.size >= MAX_PENDING) return;
    const i = this.nextId++;
    if (i % 100 === 1)
      this.persist({ global: this.stats.global, nextId: i + 100, attempt: this.attempt });
    this.saved.set(i, new Set());
    this.startedAt.set(i, this.now());
    this.stats.started++;
    this.broadcast({ t: "gpc-checkpoint", i });
  }

  onSaved(i: number, tasks: readonly number[]): void {
    const saved = this.saved.get(i);
    if (!saved) return; // abandoned by a rollback, or already global
    for (const task of tasks) saved.add(task);
    if (saved.size < this.tasks) return;
    // Global: so is nothing older that is still pending (a later one covers it).
    for (const id of this.saved.keys()) {
      if (id > i) continue;
      this.saved.delete(id);
      this.startedAt.delete(id);
    }
    this.stats.global = i;
    this.stats.lastGlobalAt = this.now();
    this.save();
    this.broadcast({ t: "gpc-global", i });
  }

  onRestored(r: number, tasks: readonly number[]): void {
    if (!this.restoring || r !== this.restoring.r) return;
    for (const task of tasks) this.restoring.pending.delete(task);
    if (this.restoring.pending.size > 0) return;
    this.restoring = undefined;
    const restore = this.stats.restore!;
    restore.ms = this.now() - restore.startedAt;
    this.log.info({ event: "gpc-resumed", attempt: r, ms: restore.ms }, "rollback done: resuming");
    this.broadcast({ t: "gpc-resume", r });
  }

  private startRestore(plan: PlanUpdate): void {
    this.failed = false;
    this.baseline = new Map(plan.instances.map((i) => [i.task, i.incarnation]));
    this.stats.abandoned += this.saved.size;
    this.saved.clear();
    this.startedAt.clear();
    const r = ++this.attempt;
    const g = this.stats.global;
    // Ids of abandoned checkpoints are never reused: stale saves cannot pass for new ones.
    this.save();
    this.restoring = { r, pending: new Set(plan.instances.map((i) => i.task)) };
    this.stats.restores++;
    this.stats.restore = { attempt: r, checkpoint: g, startedAt: this.now(), ms: null };
    this.log.info({ event: "gpc-restore", attempt: r, checkpoint: g }, "rolling back");
    this.broadcast({ t: "gpc-restore", r, g });
  }
}
