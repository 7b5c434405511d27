/**
 * Proposer: the leader of the current view batches clients' requests and proposes them at
 * consecutive sequence numbers, never beyond the stable checkpoint + W. The other proposers
 * keep recent requests so that, elected after a view change, they can propose them.
 *
 * Election: committers that miss their leader send view-change messages naming the view they
 * want; once f+1 committers want a view this proposer leads, it runs Paxos phase 1 for it and,
 * with f+1 promises, re-proposes for every sequence number above the stable checkpoint the
 * value with the highest view any promise reports (a no-op where none does).
 *
 * A restarted proposer starts as a follower: it forgot which views it led, and committers
 * promise a view only once, so it can only ever lead a view it prepares anew.
 */
import type { Incoming, InstanceState, Stage, StageContext } from "../../platform/api/stage.js";
import { NOOP, encodeBatch } from "../batch.js";
import { leaderOf, type TaraConfig } from "../config.js";
import {
  streams,
  type AcceptedEntry,
  type Checkpointed,
  type ClientRequest,
  type CommitterVote,
  type Gap,
  type Heartbeat,
  type Prepare,
  type Promise as PromiseMessage,
  type Propose,
  type RequestBatch,
  type Value,
} from "../messages.js";
import { StableCheckpoints } from "./quorum.js";

type Role = "follower" | "candidate" | "leader";

/** What a proposer does not record change by change: a few numbers. */
interface Position {
  role: Role;
  view: number;
  ownView: number;
  nextSeq: number;
  lw: number;
  proposed: number;
}

/** A proposer's state in a GPC snapshot. */
interface ProposerSnapshot extends Position {
  proposals: [number, Value][];
  waiting: [string, { req: ClientRequest; at: number }][];
}

/**
 * The changes a proposer records (GPC deltas): requests that start waiting (`w`, arrived at
 * `at`), waiting ones dropped as older than `o`, a proposal of value `v` at `p` that took the
 * `n` oldest waiting requests, a stable checkpoint `l` (older proposals dropped), proposals
 * cleared (`c`: a new candidacy, or stepping down); last in every delta, the unrecorded state.
 */
type ProposerUpdate =
  | { w: ClientRequest[]; at: number }
  | { o: number }
  | { p: number; v: Value; n: number }
  | { l: number }
  | { c: true }
  | { u: Position };

export class Proposer implements Stage {
  readonly recordsEveryUpdate = true;
  readonly rollbackOnly = true;
  role: Role = "follower";
  /** Highest view this proposer knows of. */
  view = 0;
  /** The view this proposer leads or prepares. */
  ownView = -1;
  /** Next sequence number to propose (as leader). */
  nextSeq = 1;
  /** Requests not yet proposed by this proposer, oldest first, with their arrival time. */
  readonly waiting = new Map<string, { req: ClientRequest; at: number }>();
  proposed = 0;
  private lw = 0;
  private readonly stable: StableCheckpoints;
  private readonly wants = new Map<number, number>();
  /** Promises for our candidacy, per committer, as their parts arrive. */
  private readonly promises = new Map<number, PromiseParts>();
  private lastSent = 0;
  private batchPending = false;
  /** What this leader proposed above the stable checkpoint, to fill gaps executors report. */
  private readonly proposals = new Map<number, Value>();
  private self = 0;
  private proposers = 1;
  /** Restored from a snapshot (GPC): its role and view are the snapshot's, not a fresh start's. */
  private restored = false;

  constructor(private readonly config: TaraConfig) {
    this.stable = new StableCheckpoints(config.f + 1);
  }

  /** The stable checkpoint this proposer knows. */
  get stableCheckpoint(): number {
    return this.lw;
  }

  /** GPC: the whole topology is rolled back together, so the snapshot's role is still valid. */
  snapshot(): ProposerSnapshot {
    return {
      ...this.position(),
      proposals: [...this.proposals],
      waiting: [...this.waiting],
    };
  }

  unrecordedState(): ProposerUpdate {
    return { u: this.position() };
  }

  private position(): Position {
    const { role, view, ownView, nextSeq, lw, proposed } = this;
    return { role, view, ownView, nextSeq, lw, proposed };
  }

  restore({ snapshot, updates }: InstanceState): void {
    const state = snapshot as ProposerSnapshot | undefined;
    if (!state) return; // the initial state: a fresh start
    this.restored = true;
    for (const [s, value] of state.proposals) this.proposals.set(s, value);
    for (const [key, entry] of state.waiting) this.waiting.set(key, entry);
    this.setUnrecorded(state);
    for (const update of updates as ProposerUpdate[]) {
      if ("w" in update) this.addWaiting(update.w, update.at);
      else if ("o" in update) this.dropWaitingBefore(update.o);
      else if ("p" in update) {
        this.dropOldestWaiting(update.n);
        this.proposals.set(update.p, update.v);
      } else if ("l" in update) this.setStable(update.l);
      else if ("c" in update) this.proposals.clear();
      else this.setUnrecorded(update.u);
    }
  }

  private setUnrecorded(state: Position): void {
    // A candidacy under way is not resumed: phase 1 starts anew when committers want it.
    this.role = state.role === "candidate" ? "follower" : state.role;
    this.view = state.view;
    this.ownView = state.ownView;
    this.nextSeq = state.nextSeq;
    this.lw = state.lw;
    this.proposed = state.proposed;
  }

  private record(update: ProposerUpdate, ctx: StageContext): void {
    ctx.checkpoints.instance?.record(update);
  }

  onStart(ctx: StageContext): void {
    this.self = ctx.self.index;
    this.proposers = ctx.parallelism(ctx.self.stage);
    // View 0 needs no phase 1: nothing can have been accepted before it. Only the first
    // incarnation of its leader may lead it (or a rollback to a state in which it did).
    if (this.restored) {
      if (this.role === "leader") ctx.timers.set("batch", 0);
    } else if (ctx.incarnation === 1 && leaderOf(0, this.proposers) === this.self) {
      this.role = "leader";
      this.ownView = 0;
    }
    ctx.timers.set("tick", this.config.heartbeatMs);
    this.report(ctx);
  }

  onTuple({ stream, tuple }: Incoming, ctx: StageContext): void {
    if (stream === streams.requests) this.onRequests(tuple as RequestBatch, ctx);
    else if (stream === streams.votes) this.onVote(tuple as CommitterVote, ctx);
    else if (stream === streams.checkpointed) this.onCheckpointed(tuple as Checkpointed, ctx);
    else if (stream === streams.gaps) this.onGap(tuple as Gap, ctx);
  }

  onTimer(name: string, ctx: StageContext): void {
    if (name === "batch") {
      this.proposeWaiting(ctx);
      return;
    }
    ctx.timers.set("tick", this.config.heartbeatMs);
    const now = ctx.clock.now();
    if (this.role === "leader") {
      if (now - this.lastSent >= this.config.heartbeatMs) {
        const heartbeat: Heartbeat = { t: "heartbeat", v: this.ownView, lw: this.lw };
        ctx.emit(streams.proposals, heartbeat);
        this.lastSent = now;
      }
    } else {
      const oldest = now - this.config.requestRetentionMs;
      if (this.dropWaitingBefore(oldest)) this.record({ o: oldest }, ctx);
    }
    this.report(ctx);
  }

  private onRequests({ reqs }: RequestBatch, ctx: StageContext): void {
    const at = ctx.clock.now();
    const added = this.addWaiting(reqs, at);
    if (added.length > 0) this.record({ w: added, at }, ctx);
    if (this.role !== "leader") return;
    if (this.waiting.size >= this.config.batchMax) this.proposeWaiting(ctx);
    else if (!this.batchPending) {
      this.batchPending = true;
      ctx.timers.set("batch", this.config.batchDelayMs);
    }
  }

  /** The requests not waiting yet start waiting: those are returned. */
  private addWaiting(reqs: readonly ClientRequest[], at: number): ClientRequest[] {
    const added: ClientRequest[] = [];
    for (const req of reqs) {
      const key = `${req.c}:${req.r}`;
      if (this.waiting.has(key)) continue;
      this.waiting.set(key, { req, at });
      added.push(req);
    }
    return added;
  }

  /** Insertion order is arrival order: drops from the front what arrived before `oldest`. */
  private dropWaitingBefore(oldest: number): boolean {
    let dropped = false;
    for (const [key, entry] of this.waiting) {
      if (entry.at >= oldest) break;
      this.waiting.delete(key);
      dropped = true;
    }
    return dropped;
  }

  private dropOldestWaiting(n: number): void {
    let left = n;
    for (const key of this.waiting.keys()) {
      if (left-- === 0) return;
      this.waiting.delete(key);
    }
  }

  private onVote(vote: CommitterVote, ctx: StageContext): void {
    if (vote.v > this.view) this.view = vote.v;
    if (this.role !== "follower" && vote.v > this.ownView) this.stepDown(ctx);
    if (vote.t === "promise") {
      if (this.role === "candidate" && vote.v === this.ownView) this.onPromise(vote, ctx);
      return;
    }
    this.wants.set(vote.c, vote.want);
    this.considerCandidacy(ctx);
  }

  /** Stands for the highest view f+1 committers want (or below) that it leads, if newer. */
  private considerCandidacy(ctx: StageContext): void {
    const wants = [...this.wants.values()].sort((a, b) => b - a);
    const wanted = wants[this.config.f];
    if (wanted === undefined) return;
    const view =
      wanted - ((((wanted - this.self) % this.proposers) + this.proposers) % this.proposers);
    if (view <= this.view || view <= this.ownView || view < 0) return;
    this.view = view;
    this.ownView = view;
    this.role = "candidate";
    this.promises.clear();
    this.proposals.clear(); // values of an older view of ours must never be re-sent in this one
    this.record({ c: true }, ctx);
    const prepare: Prepare = { t: "prepare", v: view };
    ctx.emit(streams.proposals, prepare);
    ctx.log.info({ view }, "standing for a new view");
    this.report(ctx);
  }

  private onPromise(promise: PromiseMessage, ctx: StageContext): void {
    let parts = this.promises.get(promise.c);
    if (!parts) {
      parts = { lw: promise.lw, parts: promise.parts, got: new Set(), accepted: [] };
      this.promises.set(promise.c, parts);
    }
    if (parts.got.has(promise.part)) return;
    parts.got.add(promise.part);
    parts.accepted.push(...promise.accepted);
    const complete = [...this.promises.values()].filter((p) => p.got.size === p.parts);
    if (complete.length < this.config.f + 1) return;
    let low = this.lw;
    for (const p of complete) low = Math.max(low, p.lw);
    const values = new Map<number, AcceptedEntry>();
    let high = low;
    for (const p of complete) {
      for (const entry of p.accepted) {
        if (entry.s <= low) continue;
        const known = values.get(entry.s);
        if (!known || entry.v > known.v) values.set(entry.s, entry);
        high = Math.max(high, entry.s);
      }
    }
    this.promises.clear();
    this.setStable(low, ctx);
    this.role = "leader";
    this.nextSeq = low + 1;
    ctx.log.info({ view: this.ownView, from: low + 1, to: high }, "leading: re-proposing");
    for (let s = low + 1; s <= high; s++) this.propose(values.get(s) ?? NOOP, ctx);
    this.proposeWaiting(ctx);
    this.report(ctx);
  }

  private stepDown(ctx: StageContext): void {
    ctx.log.info({ ownView: this.ownView, view: this.view }, "a newer view exists: stepping down");
    this.role = "follower";
    this.promises.clear();
    ctx.timers.cancel("batch");
    this.batchPending = false;
    this.proposals.clear();
    this.record({ c: true }, ctx);
    this.report(ctx);
  }

  private onCheckpointed(report: Checkpointed, ctx: StageContext): void {
    const stable = this.stable.report(report.e, report.s, report.d, (s) =>
      ctx.log.error({ s }, "executors' checkpoints differ: the state machine is not deterministic"),
    );
    if (stable === undefined || stable <= this.lw) return;
    this.setStable(stable, ctx);
    if (this.role === "leader") this.proposeWaiting(ctx);
  }

  /** Takes a stable checkpoint: recorded unless `restore` replays it (no ctx). */
  private setStable(lw: number, ctx?: StageContext): void {
    if (ctx) this.record({ l: lw }, ctx);
    this.lw = lw;
    for (const s of this.proposals.keys()) if (s <= lw) this.proposals.delete(s);
  }

  /**
   * An executor misses `s` while later ones are committed: our proposal was lost on its way
   * to committers (e.g. a stream manager restarted). Proposing the same value again in the
   * same view is safe: committers accept it or repeat their accept.
   */
  private onGap({ s }: Gap, ctx: StageContext): void {
    if (this.role !== "leader") return;
    const value = this.proposals.get(s);
    if (value) this.send(s, value, ctx);
  }

  /** Proposes every waiting request, in batches, as far as the window allows. */
  private proposeWaiting(ctx: StageContext): void {
    ctx.timers.cancel("batch");
    this.batchPending = false;
    if (this.role !== "leader") return;
    while (this.waiting.size > 0 && this.nextSeq <= this.lw + this.config.window) {
      const batch: ClientRequest[] = [];
      let bytes = 0;
      for (const [key, { req }] of this.waiting) {
        this.waiting.delete(key);
        batch.push(req);
        bytes += req.op.length;
        if (batch.length === this.config.batchMax || bytes >= this.config.batchBytes) break;
      }
      this.proposed += batch.length;
      this.propose(encodeBatch(batch, Math.floor(ctx.clock.now())), ctx, batch.length);
    }
  }

  /** Proposes `value` at the next sequence number; it took the `taken` oldest waiting requests. */
  private propose(value: Value, ctx: StageContext, taken = 0): void {
    const s = this.nextSeq++;
    this.record({ p: s, v: value, n: taken }, ctx);
    this.proposals.set(s, value);
    this.send(s, value, ctx);
  }

  private send(s: number, value: Value, ctx: StageContext): void {
    const message: Propose = {
      t: "propose",
      v: this.ownView,
      s,
      d: value.d,
      b: value.b,
      lw: this.lw,
    };
    ctx.emit(streams.proposals, message);
    this.lastSent = ctx.clock.now();
  }

  private report(ctx: StageContext): void {
    ctx.setStatus({
      role: "proposer",
      leader: this.role === "leader",
      candidate: this.role === "candidate",
      view: this.role === "follower" ? this.view : this.ownView,
      lastProposed: this.role === "leader" ? this.nextSeq - 1 : null,
      stableCheckpoint: this.lw,
      waiting: this.waiting.size,
    });
  }
}

/** A committer's promise, gathered from its parts. */
interface PromiseParts {
  readonly lw: number;
  readonly parts: number;
  readonly got: Set<number>;
  readonly accepted: AcceptedEntry[];
}
