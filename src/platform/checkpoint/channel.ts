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
  /** The latest valid base and the deltas after it (rejected entries logged and skipped). */
  loadLatest(owner: CheckpointOwner): Promise<RecoveredChain>;
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

  loadLatest(owner: CheckpointOwner): Promise<RecoveredChain> {
    return loadLatest(this.store, owner, this.log);
  }

  async prune(owner: CheckpointOwner, keepFromId: number): Promise<void> {
    await pruneBefore(this.store, owner, keepFromId);
  }
}
