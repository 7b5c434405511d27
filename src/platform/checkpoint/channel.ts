/**
 * How a replica reaches stable storage. LPC-CS goes straight to the store from the replica's
 * process (the checkpointing shim); LPC-CM goes through the stream manager to the container's
 * checkpoint manager, which owns the store. Both offer the same three operations.
 */
import type { CheckpointOwner, CheckpointStore, EntryRef } from "./store/store.js";
import { loadLatest, pruneBefore, type RecoveredChain } from "./store/recovery.js";

export interface CheckpointChannel {
  readonly description: string;
  /** Durable when it resolves; rejects if the store is unreachable (the caller retries). */
  put(ref: EntryRef, data: Uint8Array): Promise<void>;
  /**
   * The latest valid base and the deltas after it (rejected entries logged and skipped);
   * `upTo`: as the chain stood at that entry.
   */
  loadLatest(owner: CheckpointOwner, upTo?: number): Promise<RecoveredChain>;
  /** Deletes the owner's entries below `keepFromId`. */
  prune(owner: CheckpointOwner, keepFromId: number): Promise<void>;
}

/** LPC-CS: the checkpointing shim, in the replica's own process. */
export class ShimChannel implements CheckpointChannel {
  readonly description: string;

  constructor(
    private readonly store: CheckpointStore,
    private readonly log: { warn(obj: object, msg?: string): void },
  ) {
    this.description = `shim → ${store.description}`;
  }

  put(ref: EntryRef, data: Uint8Array): Promise<void> {
    return this.store.put(ref, data);
  }

  loadLatest(owner: CheckpointOwner, upTo?: number): Promise<RecoveredChain> {
    return loadLatest(this.store, owner, this.log, upTo);
  }

  async prune(owner: CheckpointOwner, keepFromId: number): Promise<void> {
    await pruneBefore(this.store, owner, keepFromId);
  }
}

/**
 * What the checkpoint core (InstanceLog, group checkpoints) writes through: callbacks instead
 * of promises, so that a driver without a microtask queue (the simulator's virtual clock) can
 * run it deterministically. A callback may come later or at once; it comes once.
 */
export interface CheckpointSink {
  /**
   * Sets a sink apart from a channel: a channel's promise-returning methods would otherwise
   * type-check as a sink's and never call back.
   */
  readonly style: "callbacks";
  readonly description: string;
  /** `done()` once the entry is durable, `done(error)` if the store is unreachable. */
  put(ref: EntryRef, data: Uint8Array, done: (error?: Error) => void): void;
  /**
   * The latest chain (`loadLatest`'s rules; `upTo`: as it stood at that entry), or the error
   * (`CheckpointChainBroken` included).
   */
  loadLatest(
    owner: CheckpointOwner,
    done: (result: RecoveredChain | Error) => void,
    upTo?: number,
  ): void;
  /** Deletes the owner's entries below `keepFromId`; failures are only worth a log line. */
  prune(owner: CheckpointOwner, keepFromId: number, done: (error?: Error) => void): void;
}

/** The sink over a promise-based channel: what real processes use. */
export function sinkOf(channel: CheckpointChannel): CheckpointSink {
  const asError = (error: unknown) => (error instanceof Error ? error : new Error(String(error)));
  return {
    style: "callbacks",
    description: channel.description,
    put: (ref, data, done) => {
      channel.put(ref, data).then(
        () => done(),
        (error: unknown) => done(asError(error)),
      );
    },
    loadLatest: (owner, done, upTo) => {
      channel.loadLatest(owner, upTo).then(done, (error: unknown) => done(asError(error)));
    },
    prune: (owner, keepFromId, done) => {
      channel.prune(owner, keepFromId).then(
        () => done(),
        (error: unknown) => done(asError(error)),
      );
    },
  };
}
