/**
 * Where checkpoints live. A store keeps, per owner (a replica, or a stage's shared group
 * checkpoints), a sequence of entries with increasing ids: "base" entries hold a full state,
 * "delta" entries an update on top of everything before them. Every entry carries a header
 * (format version, owner, id, kind, length, CRC32C) that is checked on every read, so a torn,
 * truncated or corrupt entry is rejected with a reason instead of being trusted.
 *
 * Backends: `fs` (a directory per topology/stage/replica, fsync'd; works on NFS) and `nats`
 * (JetStream). Both are exercised against the real thing in the tests.
 */

/** A replica's own instance checkpoints, or the group checkpoints a stage's replicas share. */
export interface CheckpointOwner {
  readonly topology: string;
  readonly stage: string;
  readonly replica: number | "group";
}

export type EntryKind = "base" | "delta";

export interface EntryRef {
  readonly owner: CheckpointOwner;
  /** Increasing per owner (a sequence number, a checkpoint id, a write counter). */
  readonly id: number;
  readonly kind: EntryKind;
}

export interface CheckpointStore {
  /** A name for logs and status ("fs:/path", "nats:host:port/bucket"). */
  readonly description: string;
  /**
   * Writes an entry; it is durable (fsync'd, or acknowledged by the server's persistent
   * storage) when the promise resolves. Writing the same ref again replaces it atomically.
   */
  put(ref: EntryRef, data: Uint8Array): Promise<void>;
  /**
   * The owner's entries, ascending by id (at an equal id the delta before the base, which
   * includes it); contents are not read (nor validated) here.
   */
  list(owner: CheckpointOwner): Promise<EntryRef[]>;
  /**
   * Reads and validates an entry. Rejects with `CheckpointRejected` (and its reason) if the
   * entry is missing ("no such entry"), torn, truncated, corrupt or does not match the ref;
   * with another error if the store is unreachable.
   */
  get(ref: EntryRef): Promise<Uint8Array>;
  /** Removes entries; a ref that is already gone is not an error. */
  delete(refs: readonly EntryRef[]): Promise<void>;
  close(): Promise<void>;
}

/** An entry that failed validation: never used, reported with the reason. */
export class CheckpointRejected extends Error {
  constructor(
    readonly ref: EntryRef,
    readonly reason: string,
  ) {
    super(`checkpoint ${describeRef(ref)} rejected: ${reason}`);
    this.name = "CheckpointRejected";
  }
}

/**
 * The entry is not (or no longer) there: a read after a listing that a concurrent prune made
 * stale, or a ref that was never written. Not a sign of damage.
 */
export class CheckpointMissing extends CheckpointRejected {
  constructor(ref: EntryRef) {
    super(ref, "no such entry");
    this.name = "CheckpointMissing";
  }
}

export function describeOwner(owner: CheckpointOwner): string {
  return `${owner.topology}/${owner.stage}/${owner.replica}`;
}

export function describeRef(ref: EntryRef): string {
  return `${describeOwner(ref.owner)}#${ref.id}(${ref.kind})`;
}
