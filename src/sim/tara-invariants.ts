/**
 * TARA's safety invariants (docs/PROTOCOLS.md), checked on what the replicas of a simulated run
 * emit, execute and restore; every scenario (key-value, ZooKeeper) plugs these hooks into its
 * Simulator and topology:
 * - agreement: no two executions name different values for one sequence number, and no two
 *   accepts different values for one view and sequence number;
 * - a committer incarnation never accepts below a view it promised;
 * - the leader never proposes beyond the stable checkpoint + W;
 * - checkpoints at one sequence number have one digest, and executors end in one state;
 * - under LPC, a restored committer holds every accept it had sent (the latest per sequence
 *   number above its stable checkpoint) and every view it had promised or accepted in.
 *
 * Under GPC a rollback takes every replica back to the last global checkpoint, a consistent
 * cut, and the run goes on from there: what was executed, accepted or promised after the cut is
 * forgotten by everyone and may be decided differently. So when a rollback starts, executions
 * and checkpoints after its cut (the highest sequence number an executor had executed in the
 * checkpoint rolled back to, `rollbackCut`) are forgotten; those up to it were decided before
 * the cut and must be decided alike again. Accepts and promises are checked per run (a
 * rollback's attempt). A stage of an older run still installed until the rollback reaches it
 * is not checked.
 */
import type { ReplicaId, Source, Stage } from "../platform/api/stage.js";
import type { TaraConfig } from "../tara/config.js";
import {
  streams,
  type Accept,
  type Checkpointed,
  type Promise as PromiseMessage,
  type ProposerMessage,
} from "../tara/messages.js";
import type { Committer } from "../tara/stages/committer.js";
import { Executor } from "../tara/stages/executor.js";
import { StableCheckpoints } from "../tara/stages/quorum.js";
import { stages } from "../tara/topology.js";
import type { Simulator } from "./simulator.js";

/** What the checks need to know of a replica now. */
export interface ReplicaRuns {
  /** Its incarnation (1 for the first start). */
  incarnation(id: ReplicaId): number;
  /** GPC: the rollback attempt its stage was restored in (0: the first run; always 0 otherwise). */
  run(id: ReplicaId): number;
}

/**
 * GPC: the cut of a rollback to global checkpoint `checkpoint`: the highest sequence number
 * any executor had executed in it (read from the simulated store).
 */
export function rollbackCut(sim: Simulator, checkpoint: number): number {
  const executed = sim.replicasOf(stages.executor).map((id) => {
    const state = sim.gpcState(id, checkpoint);
    return state === undefined ? 0 : Executor.executedIn(state);
  });
  return Math.max(0, ...executed);
}

export class TaraInvariants {
  /** View changes started (prepares sent). */
  views = 0;
  /** LPC: committer restarts whose restored state was checked. */
  restored = 0;
  /** The highest sequence number any executor executed. */
  maxExecuted = 0;
  private readonly executedValue = new Map<number, string>();
  private readonly acceptedValue = new Map<string, string>();
  private readonly checkpointDigest = new Map<number, string>();
  /** GPC: the rollback under way or last done: stages of older runs are not checked. */
  private currentRun = 0;
  private readonly promisedBy = new Map<string, number>();
  /** Per committer (by index, over its incarnations): the latest accept sent per s. */
  private readonly sentAccepts = new Map<number, Map<number, { v: number; d: string }>>();
  /** Per committer: the highest view it promised or accepted in. */
  private readonly sentView = new Map<number, number>();
  private readonly trueStable: StableCheckpoints;

  /**
   * @param mechanism under PDC a committer's promises bind only its incarnation, under LPC
   *   (restored) every one, under GPC its run
   */
  constructor(
    private readonly config: TaraConfig,
    private readonly mechanism: "pdc" | "lpc" | "gpc",
    private readonly violation: (text: string) => void,
    private readonly replicas: ReplicaRuns,
  ) {
    this.trueStable = new StableCheckpoints(config.f + 1);
  }

  /** The topology's execution observer. */
  readonly onExecuted = (executor: number, s: number, d: string): void => {
    if (this.replicas.run({ stage: stages.executor, index: executor }) < this.currentRun) return;
    const known = this.executedValue.get(s);
    if (known === undefined) this.executedValue.set(s, d);
    else if (known !== d)
      this.violation(`executor ${executor} executed ${d} at ${s}, another ${known}`);
    this.maxExecuted = Math.max(this.maxExecuted, s);
  };

  /**
   * GPC: the topology manager starts rollback `run`, whose cut is `cut` (`rollbackCut`): the
   * executions and checkpoints after it are forgotten.
   */
  readonly onRollback = (run: number, cut: number): void => {
    this.currentRun = run;
    for (const values of [this.executedValue, this.checkpointDigest]) {
      for (const s of values.keys()) if (s > cut) values.delete(s);
    }
    this.maxExecuted = cut;
  };

  /** GPC: a committer restored in rollback `run` is bound by its restored promise from then on. */
  readonly onRolledBack = (id: ReplicaId, _run: number, stage: Stage | Source): void => {
    if (id.stage !== stages.committer) return;
    const key = this.incarnationKey(id);
    const promised = (stage as Committer).promised;
    this.promisedBy.set(key, Math.max(this.promisedBy.get(key) ?? 0, promised));
  };

  /** The simulator's `onEmit`. */
  readonly onEmit = (from: ReplicaId, stream: string, tuple: unknown): void => {
    const run = this.replicas.run(from);
    if (run < this.currentRun) return;
    if (stream === streams.proposals) {
      const message = tuple as ProposerMessage;
      const stable = this.trueStable.stable;
      if (message.t === "propose" && message.s > stable + this.config.window) {
        this.violation(`proposal at ${message.s} beyond stable ${stable} + W`);
      }
      if (message.t === "prepare") this.views++;
    } else if (stream === streams.accepts) {
      const { v, s, d } = tuple as Accept;
      const key = `${run}:${v}:${s}`;
      const known = this.acceptedValue.get(key);
      if (known === undefined) this.acceptedValue.set(key, d);
      else if (known !== d) this.violation(`two values accepted in view ${v} at ${s}`);
      const promised = this.promisedBy.get(this.incarnationKey(from)) ?? 0;
      if (v < promised) {
        this.violation(`committer ${from.index} accepted view ${v} after promising ${promised}`);
      }
      if (this.mechanism === "lpc") {
        let sent = this.sentAccepts.get(from.index);
        if (!sent) this.sentAccepts.set(from.index, (sent = new Map()));
        const before = sent.get(s);
        if (!before || v >= before.v) sent.set(s, { v, d });
        this.noteView(from.index, v);
      }
    } else if (stream === streams.votes) {
      const vote = tuple as PromiseMessage;
      if (vote.t === "promise") {
        const key = this.incarnationKey(from);
        this.promisedBy.set(key, Math.max(this.promisedBy.get(key) ?? 0, vote.v));
        if (this.mechanism === "lpc") this.noteView(from.index, vote.v);
      }
    } else if (stream === streams.checkpointed) {
      const { e, s, d } = tuple as Checkpointed;
      const known = this.checkpointDigest.get(s);
      if (known === undefined) this.checkpointDigest.set(s, d);
      else if (known !== d) this.violation(`executor ${e} checkpoint at ${s} differs`);
      this.trueStable.report(e, s, d, () => undefined);
    }
  };

  /** The simulator's `onRestored`: instance checkpoints lose nothing externalised. */
  readonly onRestored = (id: ReplicaId, incarnation: number, stage: Stage | Source): void => {
    if (id.stage !== stages.committer || incarnation <= 1) return;
    const committer = stage as Committer;
    this.restored++;
    const view = this.sentView.get(id.index) ?? 0;
    if (committer.promised < view) {
      this.violation(`committer ${id.index} restored view ${committer.promised}, had sent ${view}`);
    }
    const sent = this.sentAccepts.get(id.index);
    if (!sent) return;
    for (const [s, { v, d }] of sent) {
      // At or below its stable checkpoint every s is decided: nothing to keep (nor to check).
      if (s <= committer.lw) {
        sent.delete(s);
        continue;
      }
      const got = committer.accepted.get(s);
      if (!got || got.v < v || (got.v === v && got.d !== d)) {
        const had = got ? `${got.v}:${got.d}` : "nothing";
        this.violation(
          `committer ${id.index} restored ${had} at ${s}, had sent an accept ${v}:${d}`,
        );
      }
    }
  };

  /**
   * After healing: runs until every executor has executed up to the highest sequence number any
   * executor executed (which may still grow meanwhile), within `withinMs`, and checks they hold
   * one state; whether they got there.
   */
  /** GPC: every delta a recording stage saved rebuilt its state exactly (Simulator.checkDelta). */
  checkDeltas(sim: Simulator): void {
    for (const mismatch of sim.stats.deltaMismatches) this.violation(`delta: ${mismatch}`);
  }

  checkConvergence(sim: Simulator, withinMs: number): boolean {
    const executors = sim.replicasOf(stages.executor);
    const at = () => executors.map((id) => sim.stage<Executor>(id).lastExecuted);
    if (!sim.runWhile(() => at().some((s) => s !== this.maxExecuted), sim.now + withinMs)) {
      this.violation(
        `executors did not converge: at ${at().join(", ")}, executed up to ${this.maxExecuted}`,
      );
      return false;
    }
    const digests = new Set(executors.map((id) => sim.stage<Executor>(id).stateDigest()));
    if (digests.size > 1) {
      this.violation(`executors at ${this.maxExecuted} have ${digests.size} states`);
    }
    return true;
  }

  private incarnationKey(id: ReplicaId): string {
    if (this.mechanism === "lpc") return `${id.index}`;
    if (this.mechanism === "gpc") return `${id.index}/run ${this.replicas.run(id)}`;
    return `${id.index}/${this.replicas.incarnation(id)}`;
  }

  private noteView(committer: number, v: number): void {
    this.sentView.set(committer, Math.max(this.sentView.get(committer) ?? 0, v));
  }
}
