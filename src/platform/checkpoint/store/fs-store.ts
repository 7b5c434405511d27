/**
 * Checkpoints in a directory tree: `<root>/<topology>/<stage>/<replica or "group">/`. Each
 * entry is stored in the format of format.ts (header, CRC32C), and a plain `ls` shows the chain
 * in order:
 *
 * - Bases, one file each, `<id padded to 20 digits>.base`. A put writes a temp file in the same
 *   directory, fsyncs it, renames it over the entry's name and fsyncs the directory: after a
 *   crash the name holds the old entry or the new one, never a mix. Several writers may put the
 *   same base at once (a stage's group checkpoints): each renames its own temp file.
 * - Deltas, appended to segment files `<first id>.<seq>.log` (see segment.ts). A replica writes
 *   one small delta per group-commit batch and its outputs wait for it, so a delta put is one
 *   `write` on a file opened with O_APPEND | O_DSYNC: it returns once the data and the size are
 *   on stable storage, one thread-pool round trip (write + fdatasync where O_DSYNC is missing).
 *   A store creates a segment (and fsyncs the directory, once) for its first delta of an owner,
 *   after each base (so that pruning removes whole segments), when the segment reaches
 *   `segmentBytes`, after a failed append, for a delta whose id is not above the last one in
 *   the segment (a rewrite), and once a listing shows that another store wrote to the owner. It
 *   appends only to segments it created itself: no process ever writes after bytes it did not
 *   write. Puts, deletes and listings of one owner run one at a time, in call order, so that a
 *   listing never sees an append in flight (which would look torn). One-file deltas
 *   (`<id>.delta`) of earlier versions are still read and deleted, never written.
 *
 * This needs nothing but append, fsync/O_DSYNC and an atomic rename, so it works on NFS too (no
 * O_DIRECT, no locks). All I/O goes through node:fs/promises: the event loop is never blocked.
 *
 * Reading deltas back (`list` scans segment headers, `get` reads one entry):
 *
 * - An append cut short by a crash leaves a torn tail: the put never resolved, and the
 *   replica's next incarnation writes an entry with the same id into a new segment. A torn or
 *   unreadable entry is listed (under the id it would have had), so `loadLatest` stops the chain
 *   there unless another, valid copy of that id exists: `get` returns the newest valid copy (by
 *   segment sequence number), and rejects with every copy's problem only if none is valid.
 *   Leaving torn bytes where they are (rather than truncating them on the next open) keeps
 *   every segment single-writer and append-only, so a fresh process can never damage a segment
 *   another process is still writing.
 * - Past an entry whose header is corrupt nothing in that segment can be located: the chain
 *   stops at it (logged by `loadLatest`) even if valid entries follow it, as it must.
 * - Deleting entries: a segment all of whose entries go is removed; if only a prefix goes it is
 *   renamed to raise its first live id (the entries below are skipped from then on); otherwise
 *   its remaining entries are copied into a replacement (temp, fsync, rename). Deletes are not
 *   made durable: an unlink or rename undone by a crash only brings back entries that the next
 *   prune removes again, and recovery never prefers an older entry to a newer valid one.
 *
 * Temp files are named `.<name>.tmp-<pid>-<uuid>`; `list` never returns them, and removes those
 * older than `staleTempMs` (default one hour, far beyond any write; long enough that clock skew
 * between an NFS client and server cannot make a live writer's file look stale): they are what a
 * writer that crashed mid-put left behind.
 */
import { randomUUID } from "node:crypto";
import { constants } from "node:fs";
import {
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  stat,
  unlink,
  type FileHandle,
} from "node:fs/promises";
import { basename, dirname, join, relative, resolve } from "node:path";
import {
  compareRefs,
  decodeEntry,
  encodeEntry,
  entryName,
  parseEntryName,
  validateOwner,
  validateRef,
} from "./format.js";
import {
  parseSegmentName,
  scanSegment,
  segmentName,
  type ScannedEntry,
  type SegmentName,
} from "./segment.js";
import {
  CheckpointMissing,
  CheckpointRejected,
  type CheckpointOwner,
  type CheckpointStore,
  type EntryRef,
} from "./store.js";

const TEMP_MARK = ".tmp-";
const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
/** Undefined where the platform has no O_DSYNC: each append is then followed by fdatasync. */
const O_DSYNC = (constants as { O_DSYNC?: number }).O_DSYNC;
const SEGMENT_FLAGS =
  constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_APPEND | (O_DSYNC ?? 0);

export interface FsStoreOptions {
  /** Temp files older than this are a crashed writer's leftovers and are removed by `list`. */
  readonly staleTempMs?: number;
  /** A segment holding this many bytes takes no more deltas (default 64 MiB). */
  readonly segmentBytes?: number;
}

/** Where an entry lies, for tools and tests. */
export interface EntryLocation {
  readonly path: string;
  readonly offset: number;
  readonly length: number;
}

/** The segment a store appends an owner's deltas to. */
interface OpenSegment {
  name: string;
  readonly seq: number;
  readonly handle: FileHandle;
  lastId: number;
  /** Bytes durably appended. */
  size: number;
  /** Another writer touched the owner's segments since: start a new one. */
  superseded: boolean;
}

/** One stored copy of a delta. */
interface Copy {
  readonly file: string;
  /** Write order: the segment's sequence number; -1 for a one-file delta of an older store. */
  readonly seq: number;
  readonly offset: number;
  /** Undefined: the whole file. */
  readonly length: number | undefined;
  readonly problem?: string;
}

interface ScannedSegment {
  readonly name: string;
  readonly seq: number;
  readonly size: number;
  readonly entries: readonly ScannedEntry[];
}

interface Listing {
  readonly refs: EntryRef[];
  /** Copies of each delta id, newest first. */
  readonly deltas: Map<number, Copy[]>;
  readonly segments: readonly ScannedSegment[];
}

interface OwnerState {
  readonly owner: CheckpointOwner;
  readonly dir: string;
  /** Puts and deletes of the owner run one at a time, in call order. */
  tail: Promise<unknown>;
  segment: OpenSegment | undefined;
  /** Highest segment sequence number known to exist, once looked up. */
  highestSeq: number | undefined;
  /** The last scan, for `get`; dropped on every change this store makes. */
  listing: Listing | undefined;
}

export class FsCheckpointStore implements CheckpointStore {
  readonly root: string;
  readonly description: string;
  private readonly staleTempMs: number;
  private readonly segmentBytes: number;
  /** Owner directories created and made durable by this store, so a put does it only once. */
  private readonly readyDirs = new Map<string, Promise<void>>();
  private readonly owners = new Map<string, OwnerState>();
  private readonly closing = new Set<Promise<void>>();

  constructor(rootDir: string, options: FsStoreOptions = {}) {
    this.root = resolve(rootDir);
    this.description = `fs:${this.root}`;
    this.staleTempMs = options.staleTempMs ?? 60 * 60 * 1000;
    this.segmentBytes = options.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
  }

  /** The directory holding an owner's entries. */
  ownerDir(owner: CheckpointOwner): string {
    validateOwner(owner);
    const replica = owner.replica === "group" ? "group" : String(owner.replica);
    return join(this.root, owner.topology, owner.stage, replica);
  }

  /** The file holding a base (deltas live in segments: see `locate`). */
  entryPath(ref: EntryRef): string {
    validateRef(ref);
    if (ref.kind !== "base")
      throw new TypeError("deltas are stored in segments, not one file each");
    return join(this.ownerDir(ref.owner), entryName(ref));
  }

  /** Where an entry is stored (a delta's newest copy: the one `get` tries first). */
  async locate(ref: EntryRef): Promise<EntryLocation | undefined> {
    validateRef(ref);
    let copy: Copy | undefined = { file: entryName(ref), seq: -1, offset: 0, length: undefined };
    const state = this.ownerState(ref.owner);
    if (ref.kind === "delta") copy = (await this.scanQueued(state)).deltas.get(ref.id)?.[0];
    if (!copy) return undefined;
    const path = join(state.dir, copy.file);
    try {
      return { path, offset: copy.offset, length: copy.length ?? (await stat(path)).size };
    } catch (error) {
      if (errorCode(error) === "ENOENT") return undefined;
      throw error;
    }
  }

  async put(ref: EntryRef, data: Uint8Array): Promise<void> {
    const bytes = encodeEntry(ref, data);
    const state = this.ownerState(ref.owner);
    await this.serialize(state, () =>
      ref.kind === "base" ? this.putBase(state, ref, bytes) : this.putDelta(state, ref, bytes),
    );
  }

  async list(owner: CheckpointOwner): Promise<EntryRef[]> {
    const { refs } = await this.scanQueued(this.ownerState(owner));
    return refs.map(({ id, kind }) => ({ owner, id, kind }));
  }

  async get(ref: EntryRef): Promise<Uint8Array> {
    if (ref.kind === "base") {
      let bytes: Buffer;
      try {
        bytes = await readFile(this.entryPath(ref));
      } catch (error) {
        if (errorCode(error) === "ENOENT") throw new CheckpointMissing(ref);
        throw error;
      }
      return decodeEntry(ref, bytes);
    }
    validateRef(ref);
    const state = this.ownerState(ref.owner);
    const cached = state.listing?.deltas.get(ref.id);
    if (cached) {
      try {
        return await this.readDelta(state, ref, cached);
      } catch (error) {
        // The scan may be stale (another store pruned or rewrote the segment): look again.
        if (!(error instanceof CheckpointRejected)) throw error;
      }
    }
    return this.readDelta(state, ref, (await this.scanQueued(state)).deltas.get(ref.id) ?? []);
  }

  async delete(refs: readonly EntryRef[]): Promise<void> {
    const byOwner = new Map<OwnerState, EntryRef[]>();
    for (const ref of refs) {
      validateRef(ref);
      const state = this.ownerState(ref.owner);
      byOwner.set(state, [...(byOwner.get(state) ?? []), ref]);
    }
    for (const [state, doomed] of byOwner) {
      await this.serialize(state, async () => {
        try {
          await this.deleteEntries(state, doomed);
        } finally {
          state.listing = undefined;
        }
      });
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.owners.values()].map((state) => state.tail));
    for (const state of this.owners.values()) void this.retire(state);
    await Promise.all(this.closing);
  }

  private ownerState(owner: CheckpointOwner): OwnerState {
    const dir = this.ownerDir(owner);
    let state = this.owners.get(dir);
    if (!state) {
      state = {
        owner,
        dir,
        tail: Promise.resolve(),
        segment: undefined,
        highestSeq: undefined,
        listing: undefined,
      };
      this.owners.set(dir, state);
    }
    return state;
  }

  private serialize<T>(state: OwnerState, operation: () => Promise<T>): Promise<T> {
    const done = state.tail.then(operation);
    state.tail = done.catch(() => undefined);
    return done;
  }

  private async putBase(state: OwnerState, ref: EntryRef, bytes: Uint8Array): Promise<void> {
    const { dir } = state;
    await this.prepareDir(dir);
    state.listing = undefined;
    const name = entryName(ref);
    const temp = join(dir, `.${name}${TEMP_MARK}${process.pid}-${randomUUID()}`);
    try {
      await writeSynced(temp, bytes);
      await rename(temp, join(dir, name));
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      throw error;
    }
    // The rename is durable only once the directory is.
    await syncDir(dir);
    // Deltas after a base go to a new segment, so that pruning up to a base removes whole ones.
    void this.retire(state);
  }

  private async putDelta(state: OwnerState, ref: EntryRef, bytes: Uint8Array): Promise<void> {
    let segment = state.segment;
    if (
      segment &&
      (segment.superseded ||
        ref.id <= segment.lastId ||
        (segment.size > 0 && segment.size + bytes.length > this.segmentBytes))
    ) {
      void this.retire(state);
      segment = undefined;
    }
    const created = !segment;
    segment ??= await this.createSegment(state, ref.id);
    state.listing = undefined;
    const outcomes = await Promise.allSettled([
      appendDurably(segment.handle, bytes),
      // A new file survives a crash only once its directory entry does.
      ...(created ? [syncDir(state.dir)] : []),
    ]);
    const failed = outcomes.find((outcome) => outcome.status === "rejected");
    if (failed) {
      // Part of the entry may be in the file: never append after it. The retried put goes to
      // a new segment, and the partial entry is a torn tail that the new copy supersedes.
      if (state.segment === segment) await this.retire(state);
      if (created) await unlink(join(state.dir, segment.name)).catch(() => undefined);
      throw failed.reason;
    }
    segment.lastId = ref.id;
    segment.size += bytes.length;
  }

  private async createSegment(state: OwnerState, firstId: number): Promise<OpenSegment> {
    await this.prepareDir(state.dir);
    for (;;) {
      state.highestSeq ??= await this.highestSeq(state.dir);
      const seq = state.highestSeq + 1;
      const name = segmentName(firstId, seq);
      try {
        const handle = await open(join(state.dir, name), SEGMENT_FLAGS, 0o600);
        state.highestSeq = seq;
        state.segment = { name, seq, handle, lastId: -1, size: 0, superseded: false };
        return state.segment;
      } catch (error) {
        if (errorCode(error) !== "EEXIST") throw error;
        // Someone else made one meanwhile: look again, and never retry the same name.
        state.highestSeq = Math.max(seq, await this.highestSeq(state.dir));
      }
    }
  }

  private async highestSeq(dir: string): Promise<number> {
    let highest = 0;
    for (const name of await readdir(dir)) {
      highest = Math.max(highest, parseSegmentName(name)?.seq ?? 0);
    }
    return highest;
  }

  /** Stops appending to the owner's segment; the handle closes in the background. */
  private retire(state: OwnerState): Promise<void> {
    const segment = state.segment;
    if (!segment) return Promise.resolve();
    state.segment = undefined;
    // Every append was already durable when it returned: a failing close loses nothing.
    const closed = segment.handle.close().catch(() => undefined);
    this.closing.add(closed);
    void closed.then(() => this.closing.delete(closed));
    return closed;
  }

  /** `scan`, between the owner's puts and deletes. */
  private scanQueued(state: OwnerState): Promise<Listing> {
    return this.serialize(state, () => this.scan(state));
  }

  /**
   * Reads the owner's directory and the headers of its segments. Runs in the owner's queue: an
   * append in flight would look like a torn tail.
   */
  private async scan(state: OwnerState): Promise<Listing> {
    const { owner, dir } = state;
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      if (errorCode(error) === "ENOENT") return { refs: [], deltas: new Map(), segments: [] };
      throw error;
    }
    const refs: EntryRef[] = [];
    const copies = new Map<number, Copy[]>();
    const addCopy = (id: number, copy: Copy) => copies.set(id, [...(copies.get(id) ?? []), copy]);
    const found: Promise<ScannedSegment | undefined>[] = [];
    const leftovers: string[] = [];
    for (const name of names) {
      const ref = parseEntryName(owner, name);
      const segment = parseSegmentName(name);
      if (ref?.kind === "base") refs.push(ref);
      else if (ref) addCopy(ref.id, { file: name, seq: -1, offset: 0, length: undefined });
      else if (segment) found.push(scanFile(join(dir, name), segment));
      else if (name.startsWith(".") && name.includes(TEMP_MARK)) leftovers.push(join(dir, name));
      // Anything else is not ours: left alone, never listed.
    }
    const segments = (await Promise.all(found)).filter((s) => s !== undefined);
    await Promise.all(leftovers.map((path) => this.removeIfStale(path)));

    for (const segment of segments) {
      for (const { id, offset, length, problem } of segment.entries) {
        addCopy(id, { file: segment.name, seq: segment.seq, offset, length, problem });
      }
      state.highestSeq = Math.max(state.highestSeq ?? 0, segment.seq);
    }
    // Our segment renamed, removed or changed, or a newer one that we did not write: another
    // store works on this owner (a replica that moved away and came back). Continue in a new
    // segment rather than after bytes someone else may have seen differently.
    const own = state.segment;
    if (own) {
      const onDisk = segments.find((s) => s.name === own.name);
      if (onDisk?.size !== own.size || state.highestSeq! > own.seq) own.superseded = true;
    }
    for (const [id, list] of copies) {
      list.sort((a, b) => b.seq - a.seq || b.file.localeCompare(a.file));
      refs.push({ owner, id, kind: "delta" });
    }
    const listing = { refs: refs.sort(compareRefs), deltas: copies, segments };
    state.listing = listing;
    return listing;
  }

  /** The newest valid copy of a delta; rejects with every copy's problem if none is valid. */
  private async readDelta(
    state: OwnerState,
    ref: EntryRef,
    copies: readonly Copy[],
  ): Promise<Uint8Array> {
    if (copies.length === 0) throw new CheckpointMissing(ref);
    const problems: string[] = [];
    let gone = 0;
    for (const copy of copies) {
      const where = copy.length === undefined ? copy.file : `${copy.file} at ${copy.offset}`;
      if (copy.problem !== undefined) {
        problems.push(`${where}: ${copy.problem}`);
        continue;
      }
      let bytes: Uint8Array;
      try {
        const path = join(state.dir, copy.file);
        bytes =
          copy.length === undefined
            ? await readFile(path)
            : await readRange(path, copy.offset, copy.length);
      } catch (error) {
        if (errorCode(error) !== "ENOENT") throw error;
        problems.push(`${where}: the file is gone`);
        gone++;
        continue;
      }
      try {
        return decodeEntry(ref, bytes);
      } catch (error) {
        if (!(error instanceof CheckpointRejected)) throw error;
        problems.push(`${where}: ${error.reason}`);
      }
    }
    // Pruned since the scan: missing, not damaged.
    if (gone === copies.length) throw new CheckpointMissing(ref);
    throw new CheckpointRejected(ref, problems.join("; "));
  }

  private async deleteEntries(state: OwnerState, refs: readonly EntryRef[]): Promise<void> {
    // No directory fsync: see the header.
    const doomed = new Set<number>();
    for (const ref of refs) {
      if (ref.kind === "delta") doomed.add(ref.id);
      else await unlinkIfPresent(this.entryPath(ref));
    }
    if (doomed.size === 0) return;
    const listing = await this.scan(state);
    for (const id of doomed) {
      for (const copy of listing.deltas.get(id) ?? []) {
        if (copy.seq === -1) await unlinkIfPresent(join(state.dir, copy.file));
      }
    }
    const newest = Math.max(0, ...listing.segments.map((s) => s.seq));
    for (const segment of listing.segments) {
      const path = join(state.dir, segment.name);
      const own = state.segment?.name === segment.name;
      const kept = segment.entries.filter((entry) => !doomed.has(entry.id));
      if (kept.length === segment.entries.length) {
        // An empty segment older than the newest is a writer's leftover (it died before its
        // first append completed): nobody will append to it.
        if (segment.size === 0 && segment.seq < newest && !own) await unlinkIfPresent(path);
        continue;
      }
      if (kept.length === 0) {
        if (own) await this.retire(state);
        await unlinkIfPresent(path);
        continue;
      }
      const liveFrom = kept[0]!.id;
      const renamed = join(state.dir, segmentName(liveFrom, segment.seq));
      if (segment.entries.every((entry) => entry.id < liveFrom || !doomed.has(entry.id))) {
        // Only a prefix goes: raising the first live id hides it (an open handle keeps working).
        await renameIfPresent(path, renamed);
        if (own) state.segment!.name = segmentName(liveFrom, segment.seq);
        continue;
      }
      // A gap in the middle: copy what stays (same sequence number) and replace the segment.
      if (own) await this.retire(state);
      let bytes: Buffer;
      try {
        bytes = await readFile(path);
      } catch (error) {
        if (errorCode(error) === "ENOENT") continue;
        throw error;
      }
      const copy = Buffer.concat(
        kept.map((entry) => bytes.subarray(entry.offset, entry.offset + entry.length)),
      );
      const temp = join(state.dir, `.${segment.name}${TEMP_MARK}${process.pid}-${randomUUID()}`);
      try {
        // Synced before the rename: the entries that stay must survive a crash.
        await writeSynced(temp, copy);
        await rename(temp, renamed);
      } catch (error) {
        await unlink(temp).catch(() => undefined);
        throw error;
      }
      if (renamed !== path) await unlinkIfPresent(path);
    }
  }

  /**
   * Creates an owner's directory and fsyncs its ancestors up to the root (and the root's
   * parent if the root is new): a new directory survives a crash only once its parent is
   * synced. Done for every owner directory once per store, even if it existed, since the
   * process that created it may have crashed before syncing.
   */
  private prepareDir(dir: string): Promise<void> {
    let ready = this.readyDirs.get(dir);
    if (!ready) {
      ready = (async () => {
        const created = await mkdir(dir, { recursive: true });
        const fromRoot = created === undefined ? "" : relative(this.root, created);
        const top =
          created !== undefined && (fromRoot === "" || fromRoot.startsWith(".."))
            ? dirname(created)
            : this.root;
        const chain: string[] = [];
        for (let d = dirname(dir); ; d = dirname(d)) {
          chain.push(d);
          if (d === top || d === dirname(d)) break;
        }
        await Promise.all(chain.map(syncDir));
      })();
      this.readyDirs.set(dir, ready);
      ready.catch(() => this.readyDirs.delete(dir));
    }
    return ready;
  }

  private async removeIfStale(path: string): Promise<void> {
    try {
      const { mtimeMs } = await stat(path);
      if (Date.now() - mtimeMs > this.staleTempMs) await unlink(path);
    } catch {
      // Best effort: another lister may have removed it, or the writer renamed it.
    }
  }
}

/** Appends all of `bytes`; durable when it resolves. */
async function appendDurably(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) {
    const { bytesWritten } = await handle.write(bytes, written, bytes.length - written);
    written += bytesWritten;
  }
  if (O_DSYNC === undefined) await handle.datasync();
}

async function writeSynced(path: string, bytes: Uint8Array): Promise<void> {
  const handle = await open(path, "wx", 0o600);
  try {
    await handle.writeFile(bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A segment's live entries; undefined if the file is gone. */
async function scanFile(path: string, name: SegmentName): Promise<ScannedSegment | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    if (errorCode(error) === "ENOENT") return undefined;
    throw error;
  }
  try {
    const { size } = await handle.stat();
    const entries = await scanSegment(
      { size, read: (position, length) => readFully(handle, position, length) },
      name.liveFrom,
    );
    return { name: basename(path), seq: name.seq, size, entries };
  } finally {
    await handle.close();
  }
}

async function readRange(path: string, offset: number, length: number): Promise<Uint8Array> {
  const handle = await open(path, "r");
  try {
    return await readFully(handle, offset, length);
  } finally {
    await handle.close();
  }
}

/** Up to `length` bytes at `position`: fewer only where the file ends. */
async function readFully(handle: FileHandle, position: number, length: number) {
  const buffer = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await handle.read(buffer, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buffer.subarray(0, got);
}

async function unlinkIfPresent(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if (errorCode(error) !== "ENOENT") throw error;
  }
}

async function renameIfPresent(from: string, to: string): Promise<void> {
  if (from === to) return;
  try {
    await rename(from, to);
  } catch (error) {
    if (errorCode(error) !== "ENOENT") throw error;
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } catch (error) {
    // Some filesystems (some NFS and FUSE setups) refuse fsync on a directory; there the
    // rename itself is a synchronous server operation, which is the best they offer.
    if (errorCode(error) !== "EINVAL") throw error;
  } finally {
    await handle.close();
  }
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}
