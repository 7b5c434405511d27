/**
 * The chain rules every backend shares: which entries make up the state to recover, and which
 * can go once a newer base is durable.
 */
import {
  CheckpointMissing,
  CheckpointRejected,
  describeOwner,
  describeRef,
  type CheckpointOwner,
  type CheckpointStore,
  type EntryRef,
} from "./store.js";

/** The part of a pino logger recovery needs. */
export interface RecoveryLog {
  warn(obj: object, msg?: string): void;
}

export interface LoadedEntry {
  readonly id: number;
  readonly data: Uint8Array;
}

export interface RecoveredChain {
  /** Absent when the owner never wrote a base: the deltas then start from the empty state. */
  readonly base?: LoadedEntry;
  /** To apply on top of the base, in id order. */
  readonly deltas: LoadedEntry[];
}

/** Bases exist but none is valid: the deltas alone cannot be trusted to rebuild the state. */
export class CheckpointChainBroken extends Error {
  constructor(
    readonly owner: CheckpointOwner,
    readonly reasons: readonly string[],
  ) {
    super(
      `no valid checkpoint base for ${describeOwner(owner)} and the deltas may not reach back ` +
        `to the start: ${reasons.join("; ")}`,
    );
    this.name = "CheckpointChainBroken";
  }
}

/**
 * The state to recover: the newest valid base, then every delta with a larger id, in id order.
 *
 * - A rejected base is logged and skipped: the previous base followed by all later deltas
 *   (including those after the rejected base) gives the same state, since a base is by
 *   construction the previous base plus the deltas between them.
 * - A rejected delta is logged and ends the chain: the valid prefix before it is returned, and
 *   the deltas after it are not used (they would apply to a state that misses the bad one).
 * - No base at all (an owner that never compacted): the deltas from the start.
 * - Nothing stored: `{ deltas: [] }`.
 * - An entry listed but gone when read (pruned meanwhile by another writer of the owner): the
 *   chain is read again from a new listing.
 * - Bases stored but every one rejected: throws `CheckpointChainBroken`. Deltas older than the
 *   oldest base may have been pruned, so rebuilding from deltas alone could silently produce a
 *   state that misses a prefix.
 *
 * Store errors other than a rejection (an unreachable server, a permission error) propagate:
 * an outage is not a reason to fall back to older state.
 *
 * `upTo`: the chain as it stood at entry `upTo`, later entries unlisted (GPC loads its last
 * global checkpoint, whatever was saved after it).
 */
export async function loadLatest(
  store: CheckpointStore,
  owner: CheckpointOwner,
  log: RecoveryLog,
  upTo?: number,
): Promise<RecoveredChain> {
  for (let listing = 1; ; listing++) {
    const listed = upToEntry(await store.list(owner), upTo);
    const steps = chainSteps(owner, listed, store.description, log);
    try {
      let step = steps.next();
      while (!step.done) {
        const ref = step.value;
        step = steps.next(await getOrReject(() => store.get(ref)));
      }
      return step.value;
    } catch (error) {
      if (!(error instanceof StaleListing) || listing === MAX_LISTINGS) throw error;
    }
  }
}

/**
 * An entry of the listing vanished before it was read: another writer of the owner (an
 * executor saving the shared group checkpoints) pruned it because newer ones exist. The chain
 * is walked again on a new listing. A store that keeps pruning under the reader for
 * `MAX_LISTINGS` listings fails the load like an outage (the caller retries later); it is no
 * reason to fall back to older state.
 */
class StaleListing extends Error {
  constructor(owner: CheckpointOwner, ref: EntryRef) {
    super(
      `the checkpoints of ${describeOwner(owner)} changed during every one of ${MAX_LISTINGS} ` +
        `reads (${describeRef(ref)} was listed, then gone)`,
    );
    this.name = "StaleListing";
  }
}

const MAX_LISTINGS = 5;

function upToEntry(refs: EntryRef[], upTo: number | undefined): EntryRef[] {
  return upTo === undefined ? refs : refs.filter((ref) => ref.id <= upTo);
}

/** A store read synchronously (the simulator's): the same contract as `CheckpointStore`'s. */
export interface SyncCheckpointReader {
  readonly description: string;
  /** The owner's entries, ascending by id (`compareRefs`). */
  list(owner: CheckpointOwner): EntryRef[];
  /** The entry's payload; throws `CheckpointRejected` if it is missing or invalid. */
  get(ref: EntryRef): Uint8Array;
}

/** `loadLatest` on a synchronous store: the same rules, the same result and log lines. */
export function loadLatestSync(
  store: SyncCheckpointReader,
  owner: CheckpointOwner,
  log: RecoveryLog,
  upTo?: number,
): RecoveredChain {
  const steps = chainSteps(owner, upToEntry(store.list(owner), upTo), store.description, log);
  let step = steps.next();
  while (!step.done) {
    const ref = step.value;
    let read: Uint8Array | CheckpointRejected;
    try {
      read = store.get(ref);
    } catch (error) {
      if (!(error instanceof CheckpointRejected)) throw error;
      read = error;
    }
    step = steps.next(read);
  }
  return step.value;
}

/**
 * The rules of `loadLatest`, apart from I/O: yields each entry it needs read, is resumed with
 * its payload or its rejection, and returns the chain (or throws `CheckpointChainBroken`). Both
 * the async and the sync reader drive it, so the rules exist once.
 */
function* chainSteps(
  owner: CheckpointOwner,
  refs: readonly EntryRef[],
  description: string,
  log: RecoveryLog,
): Generator<EntryRef, RecoveredChain, Uint8Array | CheckpointRejected> {
  const rejected = (ref: EntryRef, error: CheckpointRejected, what: string) =>
    log.warn({ ref: describeRef(ref), reason: error.reason, store: description }, what);
  const bases = refs.filter((ref) => ref.kind === "base").reverse();
  let base: LoadedEntry | undefined;
  const rejectedBases: string[] = [];
  for (const ref of bases) {
    const data = yield ref;
    if (data instanceof CheckpointMissing) throw new StaleListing(owner, ref);
    if (data instanceof CheckpointRejected) {
      rejected(ref, data, "checkpoint base rejected; trying the previous one");
      rejectedBases.push(data.message);
      continue;
    }
    base = { id: ref.id, data };
    break;
  }
  if (!base && rejectedBases.length > 0) throw new CheckpointChainBroken(owner, rejectedBases);

  const deltas: LoadedEntry[] = [];
  const after = base?.id ?? -1;
  for (const ref of refs) {
    if (ref.kind !== "delta" || ref.id <= after) continue;
    const data = yield ref;
    if (data instanceof CheckpointMissing) throw new StaleListing(owner, ref);
    if (data instanceof CheckpointRejected) {
      rejected(ref, data, "checkpoint delta rejected; recovering up to the one before it");
      break;
    }
    deltas.push({ id: ref.id, data });
  }
  return base ? { base, deltas } : { deltas };
}

/**
 * Deletes the owner's entries with an id below `keepFromId` and returns how many there were.
 * Call it off the hot path, once the base at `keepFromId` (normally the base one generation
 * before the newest, so that a bad newest base still has a fallback) is durable.
 */
export async function pruneBefore(
  store: CheckpointStore,
  owner: CheckpointOwner,
  keepFromId: number,
): Promise<number> {
  const doomed = prunable(await store.list(owner), keepFromId);
  await store.delete(doomed);
  return doomed.length;
}

/** The entries `pruneBefore` deletes. */
export function prunable(refs: readonly EntryRef[], keepFromId: number): EntryRef[] {
  return refs.filter((ref) => ref.id < keepFromId);
}

/** A read's payload, or its rejection; any other error (the store is away) propagates. */
async function getOrReject(
  read: () => Promise<Uint8Array>,
): Promise<Uint8Array | CheckpointRejected> {
  try {
    return await read();
  } catch (error) {
    if (!(error instanceof CheckpointRejected)) throw error;
    return error;
  }
}
