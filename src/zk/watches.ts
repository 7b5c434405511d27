/**
 * ZooKeeper watches per session (../shared/ZOOKEEPER.md section 12), replicated with the tree:
 * ZooKeeper's two tables, data (getData and exists watches) and child (getChildren watches),
 * each holding per path and session one-shot (standard), persistent and persistent-recursive
 * watches. addWatch puts a persistent watch in both tables, as ZooKeeper does.
 *
 * Unlike ZooKeeper 3.8, where one watcher has a single mode per path and a getData on a path
 * with a persistent watch turns it one-shot, the modes here coexist: persistent watches always
 * keep firing.
 */
import { pack, unpack } from "msgpackr";
import { z } from "zod";
import type { ChangeEvent, DataTree } from "./data-tree.js";
import { parentOf } from "./paths.js";
import { EventType, type EventTypeCode } from "./types.js";

export type WatchKind = "data" | "exist" | "child";

/** Mode bits of one session's watch on one path in one table. */
const STANDARD = 1;
const PERSISTENT = 2;
const RECURSIVE = 4;

/** RemoveWatches/CheckWatches types (Watcher.WatcherType). */
const WATCHER_CHILDREN = 1;
const WATCHER_DATA = 2;
const WATCHER_ANY = 3;

type Row = [session: number, path: string, bits: number];

const compareRows = (a: Row, b: Row): number =>
  a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);

class WatchTable {
  private readonly byPath = new Map<string, Map<number, number>>();
  private readonly bySession = new Map<number, Set<string>>();
  /** Number of (path, session) entries. */
  size = 0;
  /** Entries with a recursive watch: while 0, events need not look at ancestors. */
  private recursive = 0;

  add(session: number, path: string, bit: number): void {
    let atPath = this.byPath.get(path);
    if (atPath === undefined) this.byPath.set(path, (atPath = new Map()));
    const bits = atPath.get(session) ?? 0;
    if (bits === 0) {
      this.size++;
      const paths = this.bySession.get(session);
      if (paths === undefined) this.bySession.set(session, new Set([path]));
      else paths.add(path);
    }
    if (bit & RECURSIVE & ~bits) this.recursive++;
    atPath.set(session, bits | bit);
  }

  has(session: number, path: string): boolean {
    return this.byPath.get(path)?.has(session) ?? false;
  }

  /** Removes the session's watch on `path`, whatever its modes; false if there was none. */
  remove(session: number, path: string): boolean {
    const atPath = this.byPath.get(path);
    const bits = atPath?.get(session);
    if (atPath === undefined || bits === undefined) return false;
    this.removeEntry(atPath, path, session, bits);
    return true;
  }

  dropSession(session: number): void {
    const paths = this.bySession.get(session);
    if (paths === undefined) return;
    for (const path of [...paths]) this.remove(session, path);
  }

  /**
   * Adds to `fired` the sessions an event of `type` on `path` notifies from this table, and
   * removes the one-shot watches it consumes. Recursive watches on the path or an ancestor see
   * everything but NodeChildrenChanged.
   */
  fire(path: string, type: EventTypeCode, fired: Set<number>): void {
    const atPath = this.byPath.get(path);
    const childrenChanged = type === EventType.nodeChildrenChanged;
    if (atPath !== undefined) {
      for (const [session, bits] of atPath) {
        if (bits & (STANDARD | PERSISTENT) || (bits & RECURSIVE && !childrenChanged)) {
          fired.add(session);
        }
        if (bits & STANDARD) {
          if (bits === STANDARD) this.removeEntry(atPath, path, session, bits);
          else atPath.set(session, bits & ~STANDARD);
        }
      }
    }
    if (this.recursive === 0 || childrenChanged) return;
    for (let ancestor = path; ancestor !== "/";) {
      ancestor = parentOf(ancestor);
      const watching = this.byPath.get(ancestor);
      if (watching === undefined) continue;
      for (const [session, bits] of watching) if (bits & RECURSIVE) fired.add(session);
    }
  }

  rows(): Row[] {
    const rows: Row[] = [];
    for (const [path, atPath] of this.byPath) {
      for (const [session, bits] of atPath) rows.push([session, path, bits]);
    }
    return rows.sort(compareRows);
  }

  private removeEntry(
    atPath: Map<number, number>,
    path: string,
    session: number,
    bits: number,
  ): void {
    atPath.delete(session);
    if (atPath.size === 0) this.byPath.delete(path);
    const paths = this.bySession.get(session);
    if (paths !== undefined) {
      paths.delete(path);
      if (paths.size === 0) this.bySession.delete(session);
    }
    this.size--;
    if (bits & RECURSIVE) this.recursive--;
  }
}

// ---- Snapshot format: ["zk-watches", 1, data table rows, child table rows], rows sorted ----

const SNAPSHOT_TAG = "zk-watches";
const rowSchema = z.tuple([z.number().int(), z.string(), z.number().int().min(1).max(7)]);
const snapshotSchema = z.tuple([
  z.literal(SNAPSHOT_TAG),
  z.literal(1),
  z.array(rowSchema),
  z.array(rowSchema),
]);

export class Watches {
  private readonly data = new WatchTable();
  private readonly child = new WatchTable();

  /** A one-shot watch set by getData or exists ("exist": on a missing node) or getChildren. */
  register(session: number, path: string, kind: WatchKind): void {
    (kind === "child" ? this.child : this.data).add(session, path, STANDARD);
  }

  /** addWatch (106): mode 0 persistent, mode 1 persistent-recursive. */
  addPersistent(session: number, path: string, recursive: boolean): void {
    const bit = recursive ? RECURSIVE : PERSISTENT;
    this.data.add(session, path, bit);
    this.child.add(session, path, bit);
  }

  /**
   * The notifications `events` (in order) send to each session, consuming one-shot watches: at
   * most one per session for each event, even when several of its watches match (a node
   * watched by getData and getChildren gives one NodeDeleted). Sessions in ascending order.
   */
  trigger(events: readonly ChangeEvent[]): Map<number, ChangeEvent[]> {
    const notified = new Map<number, ChangeEvent[]>();
    if (this.count === 0) return notified;
    for (const event of events) {
      const fired = new Set<number>();
      const { type, path } = event;
      if (type === EventType.nodeChildrenChanged) {
        this.child.fire(path, type, fired);
      } else {
        this.data.fire(path, type, fired);
        if (type === EventType.nodeDeleted) this.child.fire(path, type, fired);
      }
      for (const session of fired) {
        const list = notified.get(session);
        if (list === undefined) notified.set(session, [event]);
        else list.push(event);
      }
    }
    return notified.size > 1 ? new Map([...notified].sort((a, b) => a[0] - b[0])) : notified;
  }

  /**
   * setWatches (101/105) after a reconnect: the events for what changed since `relativeZxid`
   * (in the lists' order), and registration of the watches that still wait.
   */
  setWatches(
    session: number,
    relativeZxid: number,
    data: readonly string[],
    exist: readonly string[],
    child: readonly string[],
    persistent: readonly string[],
    persistentRecursive: readonly string[],
    tree: DataTree,
  ): ChangeEvent[] {
    const events: ChangeEvent[] = [];
    for (const path of data) {
      const stat = tree.stat(path);
      if (stat === undefined) events.push({ type: EventType.nodeDeleted, path });
      else if (stat.mzxid > relativeZxid) events.push({ type: EventType.nodeDataChanged, path });
      else this.data.add(session, path, STANDARD);
    }
    for (const path of exist) {
      if (tree.stat(path) !== undefined) events.push({ type: EventType.nodeCreated, path });
      else this.data.add(session, path, STANDARD);
    }
    for (const path of child) {
      const stat = tree.stat(path);
      if (stat === undefined) events.push({ type: EventType.nodeDeleted, path });
      else if (stat.pzxid > relativeZxid) {
        events.push({ type: EventType.nodeChildrenChanged, path });
      } else this.child.add(session, path, STANDARD);
    }
    for (const path of persistent) this.addPersistent(session, path, false);
    for (const path of persistentRecursive) this.addPersistent(session, path, true);
    return events;
  }

  /** Whether the session watches `path` in the tables `type` names (1 children, 2 data, 3 any). */
  has(session: number, path: string, type: number): boolean {
    return (
      ((type === WATCHER_CHILDREN || type === WATCHER_ANY) && this.child.has(session, path)) ||
      ((type === WATCHER_DATA || type === WATCHER_ANY) && this.data.has(session, path))
    );
  }

  /** removeWatches (18): false (NoWatcher) when nothing matched. */
  remove(session: number, path: string, type: number): boolean {
    const child =
      (type === WATCHER_CHILDREN || type === WATCHER_ANY) && this.child.remove(session, path);
    const data = (type === WATCHER_DATA || type === WATCHER_ANY) && this.data.remove(session, path);
    return child || data;
  }

  dropSession(session: number): void {
    this.data.dropSession(session);
    this.child.dropSession(session);
  }

  /** zk_watch_count: entries of both tables (a persistent watch is in both, as in ZooKeeper). */
  get count(): number {
    return this.data.size + this.child.size;
  }

  /** Canonical: equal watch sets give equal bytes whatever the history. */
  snapshot(): Uint8Array {
    return pack([SNAPSHOT_TAG, 1, this.data.rows(), this.child.rows()]);
  }

  /** The watches a snapshot describes; throws on bytes that are not a watch snapshot. */
  static restore(bytes: Uint8Array): Watches {
    let decoded: unknown;
    try {
      decoded = unpack(bytes);
    } catch (e) {
      throw new Error(`not a ZooKeeper watch snapshot: ${(e as Error).message}`);
    }
    const parsed = snapshotSchema.safeParse(decoded);
    if (!parsed.success) {
      throw new Error(`not a ZooKeeper watch snapshot: ${parsed.error.message}`);
    }
    const watches = new Watches();
    const [, , dataRows, childRows] = parsed.data;
    for (const [session, path, bits] of dataRows) watches.data.add(session, path, bits);
    for (const [session, path, bits] of childRows) watches.child.add(session, path, bits);
    return watches;
  }
}
