/**
 * Executor: a Paxos learner and a replica of the service. A sequence number is committed
 * when f+1 committers accepted the same value in the same view; committed batches are
 * executed strictly in sequence order, each request at most once per client thanks to the
 * client table (a retry of the last request gets the cached reply again).
 *
 * Group checkpoints: after every K-th sequence number the executor snapshots the service and
 * the client table, keeps the latest in memory, and reports its digest; f+1 matching reports
 * make it stable. Under PDC that is all; when the platform persists group checkpoints (LPC)
 * the report waits until the save is durable, and a restarted executor first loads the latest
 * persisted checkpoint (any executor's). A trailing or restarted executor then asks a peer for
 * what it still misses: the peer's latest checkpoint if it is newer, then the peer's log.
 */
import { pack, unpack } from "msgpackr";
import type {
  CheckpointEvent,
  Incoming,
  InstanceState,
  Stage,
  StageContext,
} from "../../platform/api/stage.js";
import { decodeBatch, digestOf, encodeReplies } from "../batch.js";
import type { TaraConfig } from "../config.js";
import {
  streams,
  type Accept,
  type Checkpointed,
  type Gap,
  type ClientReply,
  type LogEntry,
  type Replies,
  type StateReply,
  type StateRequest,
  type Value,
} from "../messages.js";
import type { StateMachine } from "../state-machine.js";
import { StableCheckpoints } from "./quorum.js";

export interface GroupCheckpoint {
  readonly s: number;
  readonly d: string;
  readonly bytes: Uint8Array;
}

/** Sees every execution: executor index, sequence number, digest of the value (checkers). */
export type ExecutionObserver = (executor: number, s: number, d: string) => void;

type ClientEntry = { r: number; res: Uint8Array };

/** State-timeout periods a restarted executor waits for the store before asking peers. */
const STORE_LOAD_PATIENCE = 10;

/** What an executor does not record change by change: the votes and values in flight. */
interface InFlight {
  reported: { s: number; d: string };
  lw: number;
  committed: [number, Value][];
  votes: [number, [string, number[], Value][]][];
}

/** An executor's whole state in a GPC snapshot (the group checkpoint is only part of it). */
interface ExecutorSnapshot extends InFlight {
  body: Uint8Array;
  checkpoint: GroupCheckpoint | null;
  log: LogEntry[];
}

/**
 * The changes an executor records (GPC deltas): an execution, which `restore` repeats without
 * emitting anything; a group checkpoint installed from a peer or the store; and, last in
 * every delta, its unrecorded state.
 */
type ExecutorUpdate = { x: LogEntry } | { k: GroupCheckpoint } | { u: InFlight };

/** A group checkpoint: the service, the client table and how many requests were applied. */
type SnapshotBody = {
  s: number;
  state: Uint8Array;
  clients: [number, number, Uint8Array][];
  applied: number;
  /** The time of the latest batch executed (see `execute`). */
  time: number;
};

export class Executor implements Stage {
  readonly recordsEveryUpdate = true;
  readonly rollbackOnly = true;
  /** The highest sequence number executed in an executor's GPC checkpoint (as `restore` gets it). */
  static executedIn({ snapshot, updates }: InstanceState): number {
    if (snapshot === undefined) return 0;
    let executed = (unpack((snapshot as ExecutorSnapshot).body) as SnapshotBody).s;
    for (const update of updates as ExecutorUpdate[]) {
      if ("x" in update) executed = update.x.s;
      else if ("k" in update) executed = update.k.s; // installed only when ahead
    }
    return executed;
  }

  lastExecuted = 0;
  checkpoint: GroupCheckpoint | null = null;
  /** The checkpoint this executor reports: the latest one, once durable if persisted. */
  private reported = { s: 0, d: "" };
  /**
   * Requests applied to the state machine up to `lastExecuted` (not counting cached replies):
   * part of the replicated state, so it is the same at every executor, whatever its history.
   */
  applied = 0;
  /** The leader's time of the latest batch executed, never decreasing: replicated state. */
  private time = 0;
  private readonly clients = new Map<number, ClientEntry>();
  /** Votes per sequence number: by "view:digest", the committers and the value. */
  private readonly votes = new Map<number, Map<string, { from: Set<number>; value: Value }>>();
  private readonly committed = new Map<number, Value>();
  /** Executed values after the latest checkpoint, for peers that trail. */
  private log: LogEntry[] = [];
  private readonly stable: StableCheckpoints;
  private catchUp: { nonce: number; peer: number } | null = null;
  private nonce = 0;
  private progressAtTick = 0;
  private peerCursor = -1;
  private askedFurthest = false;
  private digest = { s: -1, at: -Infinity, value: "" };
  /** The stable checkpoint as committers know it: below it, they no longer hold values. */
  private lw = 0;
  /** The peer that has executed the most, as its last report said: catch-up asks it first. */
  private peerExecuted = { e: -1, x: 0 };
  private self = 0;
  private executors = 1;
  private restored = false;
  /** When this incarnation asked the store for the latest group checkpoint, until it answers. */
  private storeLoadSince: number | null = null;

  constructor(
    private readonly config: TaraConfig,
    private readonly machine: StateMachine,
    private readonly observer?: ExecutionObserver,
  ) {
    this.stable = new StableCheckpoints(config.f + 1);
  }

  get stableCheckpoint(): number {
    return this.stable.stable;
  }

  snapshot(): ExecutorSnapshot {
    return {
      body: this.snapshotBytes(),
      checkpoint: this.checkpoint,
      log: this.log,
      ...this.inFlight(),
    };
  }

  unrecordedState(): ExecutorUpdate {
    return { u: this.inFlight() };
  }

  private inFlight(): InFlight {
    return {
      reported: this.reported,
      lw: this.lw,
      committed: [...this.committed],
      votes: [...this.votes].map(([s, bySlot]) => [
        s,
        [...bySlot].map(([key, vote]): [string, number[], Value] => [
          key,
          [...vote.from],
          vote.value,
        ]),
      ]),
    };
  }

  /** GPC rollback: a snapshot, then the executions and installs after it, replayed silently. */
  restore({ snapshot, updates }: InstanceState): void {
    const state = snapshot as ExecutorSnapshot | undefined;
    if (!state) return; // the initial state (a chain always starts with a snapshot)
    this.restored = true;
    this.installBody(state.body);
    this.checkpoint = state.checkpoint;
    this.log = state.log;
    this.setUnrecorded(state);
    for (const update of updates as ExecutorUpdate[]) {
      if ("x" in update) this.apply(update.x);
      else if ("k" in update) this.install(update.k);
      else this.setUnrecorded(update.u);
    }
  }

  private setUnrecorded(state: InFlight): void {
    this.reported = state.reported;
    this.lw = state.lw;
    this.committed.clear();
    for (const [s, value] of state.committed) this.committed.set(s, value);
    this.votes.clear();
    for (const [s, bySlot] of state.votes) {
      const map = new Map<string, { from: Set<number>; value: Value }>();
      for (const [key, from, value] of bySlot) map.set(key, { from: new Set(from), value });
      this.votes.set(s, map);
    }
  }

  onStart(ctx: StageContext): void {
    this.self = ctx.self.index;
    this.executors = ctx.parallelism(ctx.self.stage);
    this.nonce = ctx.incarnation * 1_000_000;
    ctx.timers.set("tick", this.config.stateTimeoutMs);
    if (ctx.incarnation > 1 && !this.restored) {
      if (ctx.checkpoints.group) {
        this.storeLoadSince = ctx.clock.now();
        ctx.checkpoints.group.loadLatest();
      } else this.startCatchUp(ctx);
    }
    this.report(ctx);
  }

  onCheckpoint(event: CheckpointEvent, ctx: StageContext): void {
    if (event.t === "group-saved") {
      // Durable now: it may count towards stability.
      if (this.checkpoint?.s === event.seq) {
        this.reported = { s: event.seq, d: this.checkpoint.d };
        this.announce(ctx);
      }
      return;
    }
    this.storeLoadSince = null;
    if (event.t === "group-loaded" && event.seq > this.lastExecuted) {
      const bytes = event.snapshot;
      this.install({ s: event.seq, d: digestOf(bytes), bytes }, ctx);
      this.reported = { s: event.seq, d: this.checkpoint!.d };
      ctx.log.info({ s: event.seq }, "installed the latest persisted group checkpoint");
      this.announce(ctx);
      this.executeReady(ctx);
    }
    // Whatever the store had, peers have the rest.
    if (this.trailing() || event.t === "group-none") this.startCatchUp(ctx);
    this.report(ctx);
  }

  onTuple({ stream, source, tuple }: Incoming, ctx: StageContext): void {
    if (stream === streams.accepts) this.onAccept(tuple as Accept, source.index, ctx);
    else if (stream === streams.checkpointed) this.onCheckpointed(tuple as Checkpointed, ctx);
    else if (stream === streams.state) {
      const message = tuple as StateRequest | StateReply;
      if (message.t === "state-request") this.onStateRequest(message, ctx);
      else this.onStateReply(message, ctx);
    }
  }

  onTimer(name: string, ctx: StageContext): void {
    if (name === "catch-up") {
      // No useful answer in time: ask the next peer, if we still trail.
      this.catchUp = null;
      if (this.trailing()) this.startCatchUp(ctx);
      return;
    }
    ctx.timers.set("tick", this.config.stateTimeoutMs);
    if (this.hasHole() && this.progressAtTick === this.lastExecuted) {
      // A hole that persists for a whole tick: the value may never have reached enough
      // committers (the leader proposes it again) or we missed what peers executed.
      const gap: Gap = { t: "gap", e: this.self, s: this.lastExecuted + 1 };
      ctx.emit(streams.gaps, gap);
      this.startCatchUp(ctx);
    } else if (this.trailing() && this.progressAtTick === this.lastExecuted) {
      this.startCatchUp(ctx);
    }
    this.progressAtTick = this.lastExecuted;
    // Reports are lost with crashed or restarted receivers, and a leader that does not learn of
    // a stable checkpoint stops at the window's end: repeat ours (a small message per tick).
    this.announce(ctx);
    this.report(ctx);
  }

  /** Later sequence numbers are committed while the next one is not. */
  private hasHole(): boolean {
    return this.committed.size > 0;
  }

  private trailing(): boolean {
    const ahead = Math.max(this.stable.stable, this.lw, this.peerExecuted.x);
    return this.hasHole() || ahead > this.lastExecuted;
  }

  /** A digest of the service state and client table at `lastExecuted`. */
  stateDigest(): string {
    return digestOf(this.snapshotBytes());
  }

  private onAccept(accept: Accept, committer: number, ctx: StageContext): void {
    const { s, v, d } = accept;
    if (committer === this.config.traceCommitter) {
      ctx.log.info({ event: "traced-accept", s, v, d }, "accept from the traced committer");
    }
    if (accept.lw > this.lw) this.lw = accept.lw;
    if (s <= this.lastExecuted) return;
    if (s > this.lastExecuted + this.config.window || this.committed.has(s)) return;
    let bySlot = this.votes.get(s);
    if (!bySlot) this.votes.set(s, (bySlot = new Map()));
    const key = `${v}:${d}`;
    let vote = bySlot.get(key);
    if (!vote) bySlot.set(key, (vote = { from: new Set(), value: { d, b: accept.b } }));
    vote.from.add(committer);
    if (vote.from.size < this.config.f + 1) return;
    this.votes.delete(s);
    this.committed.set(s, vote.value);
    this.executeReady(ctx);
  }

  private executeReady(ctx: StageContext): void {
    for (;;) {
      const next = this.lastExecuted + 1;
      const value = this.committed.get(next);
      if (!value) return;
      this.committed.delete(next);
      this.votes.delete(next);
      this.execute({ s: next, ...value }, ctx);
    }
  }

  private execute(entry: LogEntry, ctx: StageContext): void {
    const update: ExecutorUpdate = { x: entry };
    ctx.checkpoints.instance?.record(update);
    const replies = this.apply(entry);
    this.observer?.(this.self, entry.s, entry.d);
    if (replies.length > 0) {
      const message: Replies = {
        t: "replies",
        e: this.self,
        s: entry.s,
        b: encodeReplies(replies),
      };
      ctx.emit(streams.replies, message);
    }
    if (this.checkpoint?.s === entry.s) this.persistOrReport(ctx);
  }

  /** Executes an entry (taking the group checkpoint it may end with): the replies it makes. */
  private apply(entry: LogEntry): ClientReply[] {
    const replies: ClientReply[] = [];
    const batch = decodeBatch(entry.b);
    // A new leader may re-propose an old batch, or its clock may lag: time never goes back.
    this.time = Math.max(this.time, batch.time);
    for (const req of batch.requests) {
      const known = this.clients.get(req.c);
      if (known && req.r < known.r) continue; // superseded: the client has moved on
      if (known && req.r === known.r) {
        replies.push({ c: req.c, r: req.r, g: req.g, res: known.res });
        continue;
      }
      const { reply, pushes } = this.machine.apply(req.op, {
        s: entry.s,
        time: this.time,
        c: req.c,
        g: req.g,
      });
      this.applied++;
      this.clients.set(req.c, { r: req.r, res: reply });
      replies.push({ c: req.c, r: req.r, g: req.g, res: reply });
      if (pushes) for (const push of pushes) replies.push({ ...push, r: 0 });
    }
    this.lastExecuted = entry.s;
    this.log.push(entry);
    if (entry.s % this.config.checkpointInterval === 0) this.takeCheckpoint();
    return replies;
  }

  private snapshotBytes(): Uint8Array {
    const clients = [...this.clients]
      .sort(([a], [b]) => a - b)
      .map(([c, { r, res }]): [number, number, Uint8Array] => [c, r, res]);
    const body: SnapshotBody = {
      s: this.lastExecuted,
      state: this.machine.snapshot(),
      clients,
      applied: this.applied,
      time: this.time,
    };
    return pack(body);
  }

  private takeCheckpoint(): void {
    const bytes = this.snapshotBytes();
    this.checkpoint = { s: this.lastExecuted, d: digestOf(bytes), bytes };
    this.log = [];
  }

  /** A persisted checkpoint is reported once durable ("group-saved"), PDC's at once. */
  private persistOrReport(ctx: StageContext): void {
    const checkpoint = this.checkpoint!;
    if (ctx.checkpoints.group) {
      ctx.checkpoints.group.save(checkpoint.s, checkpoint.bytes);
      return;
    }
    this.reported = { s: checkpoint.s, d: checkpoint.d };
    this.announce(ctx);
  }

  private announce(ctx: StageContext): void {
    const { s, d } = this.reported;
    const report: Checkpointed = { t: "checkpointed", e: this.self, s, d, x: this.lastExecuted };
    ctx.emit(streams.checkpointed, report);
  }

  private onCheckpointed(report: Checkpointed, ctx: StageContext): void {
    if (report.e !== this.self && report.x > this.peerExecuted.x) {
      this.peerExecuted = { e: report.e, x: report.x };
    }
    const stable = this.stable.report(report.e, report.s, report.d, (s) =>
      ctx.log.error({ s }, "executors' checkpoints differ: the state machine is not deterministic"),
    );
    if (stable !== undefined && stable > this.lastExecuted) this.startCatchUp(ctx);
  }

  private startCatchUp(ctx: StageContext): void {
    if (this.catchUp || this.executors < 2) return;
    // A restarted executor first installs what the store has (a peer's whole state would cross
    // the topology instead); only a store that does not answer for a while sends it to peers.
    const waited = this.storeLoadSince === null ? Infinity : ctx.clock.now() - this.storeLoadSince;
    if (waited < STORE_LOAD_PATIENCE * this.config.stateTimeoutMs) return;
    // The peer known to be furthest first, then round robin over the others.
    let peer: number;
    if (this.peerExecuted.x > this.lastExecuted && !this.askedFurthest) {
      peer = this.peerExecuted.e;
      this.askedFurthest = true;
    } else {
      this.peerCursor = (this.peerCursor + 1) % (this.executors - 1);
      peer = (this.self + 1 + this.peerCursor) % this.executors;
      this.askedFurthest = false;
    }
    this.catchUp = { nonce: ++this.nonce, peer };
    const request: StateRequest = {
      t: "state-request",
      e: this.self,
      have: this.lastExecuted,
      nonce: this.nonce,
    };
    ctx.emitDirect(streams.state, peer, request);
    ctx.timers.set("catch-up", this.config.stateTimeoutMs);
  }

  private onStateRequest(request: StateRequest, ctx: StageContext): void {
    const checkpoint = this.checkpoint && this.checkpoint.s > request.have ? this.checkpoint : null;
    const from = checkpoint ? checkpoint.s : request.have;
    const reply: StateReply = {
      t: "state",
      e: this.self,
      nonce: request.nonce,
      checkpoint,
      log: this.log.filter((entry) => entry.s > from),
    };
    ctx.emitDirect(streams.state, request.e, reply);
  }

  private onStateReply(reply: StateReply, ctx: StageContext): void {
    if (!this.catchUp || reply.nonce !== this.catchUp.nonce) return;
    const before = this.lastExecuted;
    const { checkpoint } = reply;
    if (checkpoint && checkpoint.s > this.lastExecuted) {
      if (digestOf(checkpoint.bytes) !== checkpoint.d) {
        ctx.log.error({ from: reply.e, s: checkpoint.s }, "a peer's checkpoint fails its digest");
        return; // the timer moves on to the next peer
      }
      this.install(checkpoint, ctx);
      // We hold it now: our report counts towards its stability like the executor's that took it.
      this.persistOrReport(ctx);
    }
    for (const entry of reply.log) {
      if (entry.s === this.lastExecuted + 1) this.execute(entry, ctx);
    }
    for (const s of this.committed.keys()) if (s <= this.lastExecuted) this.committed.delete(s);
    for (const s of this.votes.keys()) if (s <= this.lastExecuted) this.votes.delete(s);
    if (this.lastExecuted === before) return; // nothing new there: the timer tries the next peer
    this.catchUp = null;
    ctx.timers.cancel("catch-up");
    this.executeReady(ctx);
    this.report(ctx);
  }

  /** Installs a peer's or the store's checkpoint; recorded unless `restore` replays it (no ctx). */
  private install(checkpoint: GroupCheckpoint, ctx?: StageContext): void {
    const update: ExecutorUpdate = { k: checkpoint };
    ctx?.checkpoints.instance?.record(update);
    this.installBody(checkpoint.bytes);
    this.checkpoint = checkpoint;
    this.log = [];
  }

  private installBody(bytes: Uint8Array): void {
    const body = unpack(bytes) as SnapshotBody;
    this.applied = body.applied;
    this.time = body.time;
    this.machine.restore(body.state);
    this.clients.clear();
    for (const [c, r, res] of body.clients) this.clients.set(c, { r, res });
    this.lastExecuted = body.s;
  }

  private report(ctx: StageContext): void {
    // The digest costs a snapshot: at most one a second, and only when the state changed.
    const now = ctx.clock.now();
    if (this.digest.s !== this.lastExecuted && now - this.digest.at >= 1000) {
      this.digest = { s: this.lastExecuted, at: now, value: this.stateDigest() };
    }
    ctx.setStatus({
      role: "executor",
      lastExecuted: this.lastExecuted,
      applied: this.applied,
      digest: this.digest.value,
      digestAt: this.digest.s,
      stableCheckpoint: this.stable.stable,
      checkpoint: this.checkpoint?.s ?? 0,
      catchingUp: this.catchUp !== null,
    });
  }
}
