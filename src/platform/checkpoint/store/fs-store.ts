/**
 * Checkpoints in a directory tree: `<root>/<topology>/<stage>/<replica or "group">/`, one file
 * per entry named `<id padded to 20 digits>.<kind>` (e.g. `00000000000000000042.base`), so a
 * plain `ls` shows the chain in order.
 *
 * A put writes a temp file in the same directory, fsyncs it, renames it over the entry's name
 * and fsyncs the directory: after a crash the name holds the old entry or the new one, never a
 * mix. This needs nothing but an atomic rename and fsync, so it works on NFS too (no O_DIRECT,
 * no locks). All I/O goes through node:fs/promises: the event loop is never blocked.
 *
 * Temp files are named `.<entry name>.tmp-<pid>-<uuid>`; `list` never returns them, and removes
 * those older than `staleTempMs` (default one hour, far beyond any write; long enough that clock
 * skew between an NFS client and server cannot make a live writer's file look stale): they are
 * what a writer that crashed mid-put left behind.
 */
import { randomUUID } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, stat, unlink } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
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
  CheckpointRejected,
  type CheckpointOwner,
  type CheckpointStore,
  type EntryRef,
} from "./store.js";

const TEMP_MARK = ".tmp-";

export interface FsStoreOptions {
  /** Temp files older than this are a crashed writer's leftovers and are removed by `list`. */
  readonly staleTempMs?: number;
}

export class FsCheckpointStore implements CheckpointStore {
  readonly root: string;
  readonly description: string;
  private readonly staleTempMs: number;
  /** Owner directories created and made durable by this store, so a put does it only once. */
  private readonly readyDirs = new Map<string, Promise<void>>();

  constructor(rootDir: string, options: FsStoreOptions = {}) {
    this.root = resolve(rootDir);
    this.description = `fs:${this.root}`;
    this.staleTempMs = options.staleTempMs ?? 60 * 60 * 1000;
  }

  /** The directory holding an owner's entries. */
  ownerDir(owner: CheckpointOwner): string {
    validateOwner(owner);
    const replica = owner.replica === "group" ? "group" : String(owner.replica);
    return join(this.root, owner.topology, owner.stage, replica);
  }

  /** The file holding an entry. */
  entryPath(ref: EntryRef): string {
    validateRef(ref);
    return join(this.ownerDir(ref.owner), entryName(ref));
  }

  async put(ref: EntryRef, data: Uint8Array): Promise<void> {
    const path = this.entryPath(ref);
    const bytes = encodeEntry(ref, data);
    const dir = dirname(path);
    await this.prepareDir(dir);
    const temp = join(dir, `.${entryName(ref)}${TEMP_MARK}${process.pid}-${randomUUID()}`);
    try {
      const handle = await open(temp, "wx", 0o600);
      try {
        await handle.writeFile(bytes);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, path);
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      throw error;
    }
    // The rename is durable only once the directory is.
    await syncDir(dir);
  }

  async list(owner: CheckpointOwner): Promise<EntryRef[]> {
    const dir = this.ownerDir(owner);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      if (errorCode(error) === "ENOENT") return [];
      throw error;
    }
    const refs: EntryRef[] = [];
    const leftovers: string[] = [];
    for (const name of names) {
      const ref = parseEntryName(owner, name);
      if (ref) refs.push(ref);
      else if (name.startsWith(".") && name.includes(TEMP_MARK)) leftovers.push(join(dir, name));
      // Anything else is not ours: left alone, never listed.
    }
    await Promise.all(leftovers.map((path) => this.removeIfStale(path)));
    return refs.sort(compareRefs);
  }

  async get(ref: EntryRef): Promise<Uint8Array> {
    let bytes: Buffer;
    try {
      bytes = await readFile(this.entryPath(ref));
    } catch (error) {
      if (errorCode(error) === "ENOENT") throw new CheckpointRejected(ref, "no such entry");
      throw error;
    }
    return decodeEntry(ref, bytes);
  }

  async delete(refs: readonly EntryRef[]): Promise<void> {
    // No directory fsync: an unlink undone by a crash only brings back an entry that the next
    // prune removes again, and recovery never prefers an older entry to a newer valid one.
    for (const ref of refs) {
      try {
        await unlink(this.entryPath(ref));
      } catch (error) {
        if (errorCode(error) !== "ENOENT") throw error;
      }
    }
  }

  async close(): Promise<void> {}

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
