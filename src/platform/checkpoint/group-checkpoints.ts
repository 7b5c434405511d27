/**
 * Group checkpoints persisted by the platform (LPC): any replica of the stage saves under the
 * stage's shared owner, keyed by sequence number, and any replica loads the latest. Results
 * reach the stage as checkpoint events. Writes and loads are retried until the store answers:
 * a replica whose store is away stalls in that respect and says so, it never loses a save.
 */
import type { CheckpointEvent, GroupCheckpoints } from "../api/stage.js";
import type { CheckpointChannel } from "./channel.js";
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

  constructor(
    private readonly owner: CheckpointOwner,
    private readonly channel: CheckpointChannel,
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
    void this.retry(
      () => this.channel.put({ owner: this.owner, id: seq, kind: "base" }, snapshot),
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
          this.channel.prune(this.owner, keepFrom).catch((error: Error) => {
            this.options.log.warn({ event: "prune-failed", reason: error.message }, "prune failed");
          });
        }
        this.options.deliver({ t: "group-saved", seq });
      },
    );
  }

  loadLatest(): void {
    void this.retry(
      () => this.channel.loadLatest(this.owner),
      (chain) => {
        if (!chain.base) {
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
  }

  private async retry<T>(attempt: () => Promise<T>, done: (result: T) => void): Promise<void> {
    for (let delay = RETRY_MIN_MS; !this.closed; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
      try {
        const result = await attempt();
        if (this.closed) return;
        if (this.stats.stalled !== null) {
          this.options.log.info({ event: "checkpoint-resumed" }, "group checkpoints work again");
          this.stats.stalled = null;
        }
        done(result);
        return;
      } catch (error) {
        const reason = (error as Error).message;
        if (this.stats.stalled === null) {
          this.options.log.warn(
            { event: "checkpoint-stalled", reason },
            "group checkpoint failed: retrying",
          );
        }
        this.stats.stalled = reason;
        await new Promise<void>((resolve) => this.options.setTimer(delay, resolve));
      }
    }
  }
}
