/**
 * Committer: a Paxos acceptor. It accepts the leader's proposals of its promised view, tells
 * every executor, promises new views to candidates (reporting what it accepted above the
 * stable checkpoint) and asks for a view change when its leader falls silent.
 *
 * With instance checkpoints (LPC, GPC) every promise, accept and collection is recorded before
 * what follows it is sent, so a restarted committer gets back exactly what it told others and
 * votes again.
 * Without them (PDC) a restarted committer has forgotten what it promised and accepted, and
 * there is no safe moment for it to vote again: a promise or accept it gave before the crash
 * may still be in flight, or be counted by a candidate, and combine with later votes into a
 * quorum its new state knows nothing of (docs/PROTOCOLS.md, "Committer restarts"). So under
 * PDC a restarted committer stays passive: it counts as one of the f committers the group can
 * lose.
 */
import type { Incoming, InstanceState, Stage, StageContext } from "../../platform/api/stage.js";
import type { TaraConfig } from "../config.js";
import {
  streams,
  type AcceptedEntry,
  type Accept,
  type Promise as PromiseMessage,
  type ProposerMessage,
  type ViewChange,
} from "../messages.js";

/** View-change timeouts double per failed view up to this factor of the base. */
const BACKOFF_MAX = 16;

/** An instance update: a promise given, an accept sent, or a collection up to a stable checkpoint. */
type CommitterUpdate = { p: number } | { a: AcceptedEntry } | { l: number };

/** The exact state of a committer (instance checkpoint base). */
interface CommitterSnapshot {
  promised: number;
  lw: number;
  accepted: AcceptedEntry[];
}

export class Committer implements Stage {
  readonly recordsEveryUpdate = true;
  /** Highest view promised; proposals of lower views are refused. */
  promised = 0;
  /** Stable checkpoint: every sequence number up to it is decided and checkpointed. */
  lw = 0;
  readonly accepted = new Map<number, AcceptedEntry>();
  /** False for a committer restarted without its state: it never votes. */
  active = true;
  /** Whether this incarnation got its state back from an instance checkpoint. */
  restored = false;
  private lastHeard = 0;
  private want = 0;
  private backoff = 1;
  private self = 0;

  constructor(private readonly config: TaraConfig) {}

  snapshot(): CommitterSnapshot {
    return { promised: this.promised, lw: this.lw, accepted: [...this.accepted.values()] };
  }

  restore({ snapshot, updates }: InstanceState, ctx: StageContext): void {
    const base = snapshot as CommitterSnapshot | undefined;
    if (base) {
      this.promised = base.promised;
      this.lw = base.lw;
      for (const entry of base.accepted) this.accepted.set(entry.s, entry);
    }
    for (const update of updates as CommitterUpdate[]) {
      if ("p" in update) this.promised = Math.max(this.promised, update.p);
      else if ("l" in update) this.collect(update.l);
      else {
        this.promised = Math.max(this.promised, update.a.v);
        if (update.a.s > this.lw) this.accepted.set(update.a.s, update.a);
      }
    }
    this.want = this.promised;
    this.restored = true;
    if (ctx.self.index === this.config.traceCommitter) {
      const accepted = [...this.accepted.values()].map(({ s, v, d }) => [s, v, d]);
      ctx.log.info(
        { event: "restored", lw: this.lw, promised: this.promised, accepted },
        "restored",
      );
    }
  }

  onStart(ctx: StageContext): void {
    this.self = ctx.self.index;
    this.lastHeard = ctx.clock.now();
    if (ctx.incarnation > 1 && !this.restored) {
      this.active = false;
      ctx.log.warn(
        { incarnation: ctx.incarnation },
        "restarted without an instance checkpoint: passive, this committer no longer votes",
      );
    }
    ctx.timers.set("watch", this.config.heartbeatMs);
    this.report(ctx);
  }

  onTuple({ tuple }: Incoming, ctx: StageContext): void {
    if (this.active) this.onProposer(tuple as ProposerMessage, ctx);
  }

  onTimer(_name: string, ctx: StageContext): void {
    ctx.timers.set("watch", this.config.heartbeatMs);
    this.report(ctx);
    if (!this.active) return;
    const timeout = this.config.viewChangeMs * this.backoff;
    if (ctx.clock.now() - this.lastHeard < timeout) return;
    // The leader of our view (or the candidate we wait for) is silent: ask for the next view.
    this.want = Math.max(this.want, this.promised) + 1;
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
    this.lastHeard = ctx.clock.now();
    const message: ViewChange = {
      t: "view-change",
      c: this.self,
      v: this.promised,
      want: this.want,
    };
    ctx.emit(streams.votes, message);
  }

  private onProposer(message: ProposerMessage, ctx: StageContext): void {
    if (message.t === "prepare") {
      // Strictly greater: a view is promised once, so no candidate can lead it twice.
      if (message.v <= this.promised) return;
      this.promised = message.v;
      this.want = message.v;
      this.lastHeard = ctx.clock.now();
      this.record({ p: message.v }, ctx);
      const parts = splitBySize([...this.accepted.values()], PROMISE_PART_BYTES);
      parts.forEach((accepted, part) => {
        const promise: PromiseMessage = {
          t: "promise",
          c: this.self,
          v: message.v,
          lw: this.lw,
          accepted,
          part,
          parts: parts.length,
        };
        ctx.emit(streams.votes, promise);
      });
      this.report(ctx);
      return;
    }
    if (message.v < this.promised) return; // a deposed leader
    if (message.v > this.promised) this.promised = message.v; // it holds a quorum's promises
    this.lastHeard = ctx.clock.now();
    this.want = this.promised;
    this.backoff = 1;
    if (this.collect(message.lw)) this.record({ l: message.lw }, ctx);
    if (message.t === "heartbeat") return;
    const { s, v, d, b } = message;
    if (s <= this.lw || s > this.lw + this.config.window) return;
    const previous = this.accepted.get(s);
    if (previous && previous.v === v && previous.d !== d) {
      ctx.log.error({ s, v, d, previous: previous.d }, "two values proposed for one view");
      return;
    }
    // A repeated proposal (the leader filling a gap) repeats the accept: it may have been lost.
    if (!previous || previous.v !== v) {
      const entry = { s, v, d, b };
      this.accepted.set(s, entry);
      this.record({ a: entry }, ctx);
    }
    const accept: Accept = { t: "accept", v, s, d, b, lw: this.lw };
    ctx.emit(streams.accepts, accept);
  }

  /** Made durable before anything this committer sends next (the platform's gate). */
  private record(update: CommitterUpdate, ctx: StageContext): void {
    ctx.checkpoints.instance?.record(update);
  }

  /** Garbage collection: everything up to the stable checkpoint is decided for good. */
  private collect(lw: number): boolean {
    if (lw <= this.lw) return false;
    this.lw = lw;
    for (const s of this.accepted.keys()) if (s <= lw) this.accepted.delete(s);
    return true;
  }

  private report(ctx: StageContext): void {
    ctx.setStatus({
      role: "committer",
      active: this.active,
      restored: this.restored,
      view: this.promised,
      stableCheckpoint: this.lw,
      accepted: this.accepted.size,
    });
  }
}

/**
 * Most bytes of values in one promise part: everything accepted above the stable checkpoint
 * (up to a window of batches) can be far more than one tuple should carry.
 */
const PROMISE_PART_BYTES = 4 * 1024 * 1024;

/** Consecutive groups of at most `limit` bytes of values (at least one entry each; one group if none). */
function splitBySize(entries: AcceptedEntry[], limit: number): AcceptedEntry[][] {
  const groups: AcceptedEntry[][] = [[]];
  let bytes = 0;
  for (const entry of entries) {
    const last = groups[groups.length - 1]!;
    if (last.length > 0 && bytes + entry.b.length > limit) {
      groups.push([entry]);
      bytes = entry.b.length;
    } else {
      last.push(entry);
      bytes += entry.b.length;
    }
  }
  return groups;
}
