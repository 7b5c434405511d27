/**
 * Group checkpoints persisted by the platform (LPC): any replica of the stage saves under the
 * stage's shared owner, keyed by sequence number, and any replica loads the latest. Results
 * reach the stage as checkpoint events. Writes and loads are retried until the store answers:
 * a replica whose store is away stalls in that respect and says so, it never loses a save.
 * Callbacks and `setTimer` only, no promises: the simulator runs this on its virtual clock.
 */
import type { CheckpointEvent, GroupCheckpoints } from "../api/stage.js";
import type { CheckpointSink } from "./channel.js";
import { CheckpointChainBroken, type RecoveredChain } from "./store/recovery.js";
import type { CheckpointOwner } from "./store/store.js";

const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2000;

export interface GroupCheckpointStats {
  saves: number;
  bytes: number;
  lastSaveMs: number;
  last: { seq: number; bytes: number; at: number } | null;
  loaded: number | null;
  stalled: string | null;
}

export class PersistedGroupCheckpoints implements GroupCheckpoints {
  readonly stats: GroupCheckpointStats = {
    saves: 0,
    bytes: 0,
    lastSaveMs: 0,
    last: null,
    loaded: null,
    stalled: null,
  };
  private newestSaved = 0;
  private closed = false;
  /** Pending retries, cancelled on close. */
  private readonly timers = new Set<{ cancel(): void }>();

  constructor(
    private readonly owner: CheckpointOwner,
    private readonly channel: CheckpointSink,
    private readonly options: {
      readonly now: () => number;
      readonly setTimer: (delayMs: number, fire: () => void) => { cancel(): void };
      readonly deliver: (event: CheckpointEvent) => void;
      readonly log: {
        warn(obj: object, msg?: string): void;
        info(obj: object, msg?: string): void;
      };
    },
  ) {}

  save(seq: number, snapshot: Uint8Array): void {
    const started = this.options.now();
    this.retry(
      (done) => this.channel.put({ owner: this.owner, id: seq, kind: "base" }, snapshot, done),
      () => {
        const now = this.options.now();
        this.stats.saves++;
        this.stats.bytes += snapshot.length;
        this.stats.lastSaveMs = now - started;
        this.stats.last = { seq, bytes: snapshot.length, at: now };
        // Keep the previous checkpoint too: a reader may be loading it right now.
        const keepFrom = this.newestSaved;
        this.newestSaved = Math.max(this.newestSaved, seq);
        if (keepFrom > 0 && keepFrom < seq) {
          this.channel.prune(this.owner, keepFrom, (error) => {
            if (!error) return;
            this.options.log.warn({ event: "prune-failed", reason: error.message }, "prune failed");
          });
        }
        this.options.deliver({ t: "group-saved", seq });
      },
    );
  }

  loadLatest(): void {
    let chain: RecoveredChain | undefined;
    this.retry(
      (done) =>
        this.channel.loadLatest(this.owner, (result) => {
          if (result instanceof CheckpointChainBroken) {
            // Every stored checkpoint is unreadable (a writer died mid-save): no retry brings
            // one back, and the stage gets the rest from its peers.
            this.options.log.warn(
              { event: "group-checkpoints-unreadable", reason: result.message },
              "no valid group checkpoint",
            );
            chain = { deltas: [] };
            done();
          } else if (result instanceof Error) done(result);
          else {
            chain = result;
            done();
          }
        }),
      () => {
        if (!chain?.base) {
          this.options.deliver({ t: "group-none" });
          return;
        }
        this.stats.loaded = chain.base.id;
        this.options.deliver({ t: "group-loaded", seq: chain.base.id, snapshot: chain.base.data });
      },
    );
  }

  close(): void {
    this.closed = true;
    for (const timer of this.timers) timer.cancel();
    this.timers.clear();
  }

  /** Runs `attempt` until it succeeds (backing off between tries), then `then`. */
  private retry(attempt: (done: (error?: Error) => void) => void, then: () => void): void {
    let delay = RETRY_MIN_MS;
    const tryOnce = (): void => {
      if (this.closed) return;
      attempt((error) => {
        if (this.closed) return;
        if (!error) {
          if (this.stats.stalled !== null) {
            this.options.log.info({ event: "checkpoint-resumed" }, "group checkpoints work again");
            this.stats.stalled = null;
          }
          then();
          return;
        }
        if (this.stats.stalled === null) {
          this.options.log.warn(
            { event: "checkpoint-stalled", reason: error.message },
            "group checkpoint failed: retrying",
          );
        }
        this.stats.stalled = error.message;
        const timer = this.options.setTimer(delay, () => {
          this.timers.delete(timer);
          tryOnce();
        });
        this.timers.add(timer);
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      });
    };
    tryOnce();
  }
}
