/**
 * A replica's instance checkpoints under LPC: the updates it records are written in batches
 * (group commit) as delta entries of its log, and every so often a full snapshot is written
 * instead, after which older entries are pruned. The durability gate lives here: `durable`
 * says how many recorded updates are on stable storage, and the replica releases the outputs
 * it emitted after update n only once `durable >= n`.
 *
 * Batching: while a write is in flight further updates queue and all go in the next write
 * (adaptive, needs no tuning). A fixed batch factor F makes a write wait for F updates, or
 * for `batchDelayMs` after the first one, as in the paper's runs.
 *
 * A failing write (store unreachable) is retried with backoff for as long as it takes: the
 * replica's outputs stay held (it stalls and reports it), nothing is lost.
 *
 * Everything here runs from callbacks and `setTimer`, never from promises: the simulator drives
 * the same code on its virtual clock (real processes pass `sinkOf(channel)`).
 */
import { pack, unpack } from "msgpackr";
import type { InstanceState, Tuple } from "../api/stage.js";
import type { CheckpointSink } from "./channel.js";
import type { RecoveredChain } from "./store/recovery.js";
import type { CheckpointOwner } from "./store/store.js";

export interface InstanceLogOptions {
  readonly owner: CheckpointOwner;
  readonly channel: CheckpointSink;
  /** The replica's exact state now (the stage's `snapshot` hook). */
  readonly snapshot: () => Tuple;
  readonly batchFactor: number;
  readonly batchDelayMs: number;
  readonly compactEvery: number;
  /** Id of the next entry: above every entry of the recovered log. */
  readonly nextId: number;
  /** Id of the newest base of the recovered log, if any (kept until the next base is durable). */
  readonly baseId: number | undefined;
  /** Deltas of the recovered log after its base. */
  readonly deltasSinceBase: number;
  readonly now: () => number;
  readonly setTimer: (delayMs: number, fire: () => void) => { cancel(): void };
  /** More recorded updates became durable. */
  readonly onDurable: () => void;
  readonly log: { warn(obj: object, msg?: string): void; info(obj: object, msg?: string): void };
}

export interface InstanceLogStats {
  writes: number;
  bytes: number;
  /** Updates per write, summed: bytes and batch sizes for the metrics. */
  updatesWritten: number;
  lastWriteMs: number;
  last: { kind: "base" | "delta"; id: number; bytes: number; at: number } | null;
  /** Why the log cannot write now (store unreachable), until a write succeeds again. */
  stalled: string | null;
}

const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2000;

export class InstanceLog {
  /** Updates recorded so far in this incarnation. */
  recorded = 0;
  /** Of those, how many are durable. */
  durable = 0;
  readonly stats: InstanceLogStats = {
    writes: 0,
    bytes: 0,
    updatesWritten: 0,
    lastWriteMs: 0,
    last: null,
    stalled: null,
  };
  private pending: Tuple[] = [];
  private pendingSince = 0;
  private writing = false;
  private waitTimer: { cancel(): void } | undefined;
  private retryTimer: { cancel(): void } | undefined;
  private nextId: number;
  private baseId: number | undefined;
  private deltasSinceBase = 0;
  private closed = false;

  constructor(private readonly options: InstanceLogOptions) {
    this.nextId = options.nextId;
    this.baseId = options.baseId;
    this.deltasSinceBase = options.deltasSinceBase;
  }

  get hasUndurable(): boolean {
    return this.durable < this.recorded;
  }

  record(update: Tuple): void {
    if (this.pending.length === 0) this.pendingSince = this.options.now();
    this.pending.push(update);
    this.recorded++;
    this.maybeWrite();
  }

  close(): void {
    this.closed = true;
    this.waitTimer?.cancel();
    this.retryTimer?.cancel();
  }

  /** `waitedEnough`: the batch delay's timer fired. */
  private maybeWrite(waitedEnough = false): void {
    if (this.writing || this.pending.length === 0 || this.closed) return;
    const { batchFactor, batchDelayMs } = this.options;
    const waited = this.options.now() - this.pendingSince;
    if (this.pending.length < batchFactor && waited < batchDelayMs && !waitedEnough) {
      if (!this.waitTimer) {
        this.waitTimer = this.options.setTimer(batchDelayMs - waited, () => {
          this.waitTimer = undefined;
          // Not `waited` again: rounding may leave it a hair short, and a timer of that hair
          // would fire at the same instant forever on a virtual clock.
          this.maybeWrite(true);
        });
      }
      return;
    }
    this.waitTimer?.cancel();
    this.waitTimer = undefined;
    this.write();
  }

  private write(): void {
    this.writing = true;
    const upTo = this.recorded;
    const updates = this.pending;
    this.pending = [];
    // A base covers every update recorded so far, the pending ones included.
    const compact = this.deltasSinceBase >= this.options.compactEvery;
    const kind = compact ? "base" : "delta";
    const data = pack(compact ? this.options.snapshot() : updates);
    const ref = { owner: this.options.owner, id: this.nextId++, kind } as const;
    const started = this.options.now();
    let delay = RETRY_MIN_MS;
    const attempt = (): void => {
      this.retryTimer = undefined;
      if (this.closed) return;
      this.options.channel.put(ref, data, (error) => {
        if (this.closed) return;
        if (!error) {
          this.written(ref, data.length, updates.length, upTo, started);
          return;
        }
        if (this.stats.stalled === null) {
          this.options.log.warn(
            { event: "checkpoint-stalled", reason: error.message },
            "checkpoint write failed: retrying",
          );
        }
        this.stats.stalled = error.message;
        this.retryTimer = this.options.setTimer(delay, attempt);
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      });
    };
    attempt();
  }

  private written(
    ref: { id: number; kind: "base" | "delta" },
    bytes: number,
    updates: number,
    upTo: number,
    started: number,
  ): void {
    if (this.stats.stalled !== null) {
      this.options.log.info({ event: "checkpoint-resumed" }, "checkpoint writes succeed again");
      this.stats.stalled = null;
    }
    const now = this.options.now();
    this.stats.writes++;
    this.stats.bytes += bytes;
    this.stats.updatesWritten += updates;
    this.stats.lastWriteMs = now - started;
    this.stats.last = { kind: ref.kind, id: ref.id, bytes, at: now };
    this.durable = upTo;
    this.writing = false;
    if (ref.kind === "base") {
      // Keep one generation back: if the new base is ever unreadable, the previous one plus
      // every delta after it rebuilds the same state.
      const keepFrom = this.baseId;
      this.baseId = ref.id;
      this.deltasSinceBase = 0;
      if (keepFrom !== undefined) {
        this.options.channel.prune(this.options.owner, keepFrom, (error) => {
          if (!error) return;
          this.options.log.warn({ event: "prune-failed", reason: error.message }, "prune failed");
        });
      }
    } else {
      this.deltasSinceBase++;
    }
    this.options.onDurable();
    this.maybeWrite();
  }
}

/**
 * What a replica restores from its recovered log, and where its InstanceLog carries on: the
 * next id is above every entry of the chain, the base is kept until the next one is durable.
 */
export function recoveredInstance(chain: RecoveredChain): {
  state: InstanceState;
  nextId: number;
  baseId: number | undefined;
  deltasSinceBase: number;
} {
  const updates: Tuple[] = [];
  for (const delta of chain.deltas) updates.push(...(unpack(delta.data) as Tuple[]));
  const ids = [chain.base?.id ?? 0, ...chain.deltas.map((delta) => delta.id)];
  return {
    state: { snapshot: chain.base ? unpack(chain.base.data) : undefined, updates },
    nextId: Math.max(...ids) + 1,
    baseId: chain.base?.id,
    deltasSinceBase: chain.deltas.length,
  };
}
