/**
 * The replicated ZooKeeper data tree: znodes with data, ACL and Stat, the create modes, and
 * every write and read with ZooKeeper 3.8's checks in ZooKeeper's order
 * (PrepRequestProcessor, FinalRequestProcessor, DataTree): ../shared/ZOOKEEPER.md sections 8-11.
 *
 * Deterministic: times and zxids come from the Txn that applies a write, never from a clock, and
 * everything a caller can observe (children lists, ephemerals, expired nodes, snapshots) is
 * sorted rather than in Map/Set order, so replicas with equal histories answer alike and a
 * restored replica answers like the one that took the snapshot.
 */
import { pack, unpack } from "msgpackr";
import { z } from "zod";
import { maskDigests, normalizeAcl, permitted } from "./acl.js";
import { validatePath } from "./paths.js";
import {
  Err,
  EventType,
  OPEN_ACL,
  OpCode,
  Perm,
  type Acl,
  type CheckOp,
  type CreateOp,
  type DeleteOp,
  type ErrCode,
  type EventTypeCode,
  type Id,
  type MultiReadOp,
  type MultiResult,
  type MultiWriteOp,
  type SetDataOp,
  type Stat,
} from "./types.js";

/** What a write is applied with: its zxid, the leader's time (ms), and who asked. */
export interface Txn {
  readonly zxid: number;
  readonly time: number;
  readonly session: number;
  readonly identities: readonly Id[];
}

/** A change that may fire watches, in the order the changes happened. */
export interface ChangeEvent {
  readonly type: EventTypeCode;
  readonly path: string;
}

/** A failed operation: a non-zero KeeperException code. */
export type Failure = { readonly err: Exclude<ErrCode, 0> };

export type CreateResult =
  { readonly err: 0; readonly path: string; readonly stat: Stat } | Failure;
export type StatResult = { readonly err: 0; readonly stat: Stat } | Failure;
export type DeleteResult = { readonly err: 0 } | Failure;
export type GetDataResult =
  { readonly err: 0; readonly data: Uint8Array | null; readonly stat: Stat } | Failure;
export type GetChildrenResult =
  { readonly err: 0; readonly children: string[]; readonly stat: Stat } | Failure;
export type GetAclResult =
  { readonly err: 0; readonly acl: readonly Acl[]; readonly stat: Stat } | Failure;
export type CountResult = { readonly err: 0; readonly count: number } | Failure;

/** A multi's results; on failure every entry is type -1 and nothing was applied. */
export type MultiOutcome = { ok: boolean; results: MultiResult[] };

/** Largest TTL in ms: the 40-bit value field of EphemeralType.TTL. */
export const MAX_TTL = 2 ** 40 - 1;

const PERSISTENT = 0;
const EPHEMERAL = 1;
const CONTAINER = 2;
const TTL = 3;
type Kind = typeof PERSISTENT | typeof EPHEMERAL | typeof CONTAINER | typeof TTL;

/** Nodes nobody may delete (DataTree.isSpecialPath). */
const SPECIAL_PATHS: ReadonlySet<string> = new Set([
  "/",
  "/zookeeper",
  "/zookeeper/quota",
  "/zookeeper/config",
]);

/** ZooDefs.Ids.READ_ACL_UNSAFE, the ACL of /zookeeper/config. */
const READ_ACL: readonly Acl[] = [{ perms: Perm.read, id: { scheme: "world", id: "anyone" } }];

// Shared failure objects: the hot path allocates nothing to fail.
const fail = <E extends Exclude<ErrCode, 0>>(err: E) => Object.freeze({ err });
const BAD_ARGUMENTS = fail(Err.badArguments);
const NO_NODE = fail(Err.noNode);
const NO_AUTH = fail(Err.noAuth);
const BAD_VERSION = fail(Err.badVersion);
const NO_CHILDREN_FOR_EPHEMERALS = fail(Err.noChildrenForEphemerals);
const NODE_EXISTS = fail(Err.nodeExists);
const NOT_EMPTY = fail(Err.notEmpty);
const INVALID_ACL = fail(Err.invalidAcl);
const OK = Object.freeze({ err: 0 as const });

type Undo = () => void;

class ZNode {
  /** Child names; created with the first child. */
  children: Set<string> | undefined = undefined;

  constructor(
    public data: Uint8Array | null,
    public acl: readonly Acl[],
    public czxid: number,
    public mzxid: number,
    public pzxid: number,
    public ctime: number,
    public mtime: number,
    public version: number,
    /** Internal cversion: the number of child creates (C); clients see 2*C - numChildren. */
    public cversion: number,
    public aversion: number,
    public kind: Kind,
    /** The owning session of an ephemeral node, else 0. */
    public session: number,
    /** The TTL (ms) of a TTL node, else 0. */
    public ttl: number,
  ) {}

  get numChildren(): number {
    return this.children === undefined ? 0 : this.children.size;
  }
}

function statOf(node: ZNode): Stat {
  const numChildren = node.numChildren;
  return {
    czxid: node.czxid,
    mzxid: node.mzxid,
    ctime: node.ctime,
    mtime: node.mtime,
    version: node.version,
    // Java int arithmetic, as DataNode.copyStat does it.
    cversion: (2 * node.cversion - numChildren) | 0,
    aversion: node.aversion,
    // Containers and TTL nodes keep internal markers but show 0, as ZooKeeper's do.
    ephemeralOwner: node.kind === EPHEMERAL ? node.session : 0,
    dataLength: node.data === null ? 0 : node.data.length,
    numChildren,
    pzxid: node.pzxid,
  };
}

/** String.format("%010d", n) for a Java int. */
function sequenceSuffix(n: number): string {
  return n < 0 ? "-" + String(-n).padStart(9, "0") : String(n).padStart(10, "0");
}

/** The path notifications use for a parent: ZooKeeper's "" (parent of "/a") is "/". */
function eventPath(parentPath: string): string {
  return parentPath === "" ? "/" : parentPath;
}

/** ZooKeeper's approximate data size of one node: path length plus data length. */
function nodeSize(path: string, data: Uint8Array | null): number {
  return path.length + (data === null ? 0 : data.length);
}

/** A copy the tree owns: what a request carries may be a view into a reused buffer. */
function own(data: Uint8Array | null): Uint8Array | null {
  return data === null ? null : new Uint8Array(data);
}

function builtIn(acl: readonly Acl[], aversion: number): ZNode {
  return new ZNode(new Uint8Array(0), acl, 0, 0, 0, 0, 0, 0, 0, aversion, PERSISTENT, 0, 0);
}

// ---- Snapshot format: ["zk-tree", 1, acl lists, nodes sorted by path] ----

const SNAPSHOT_TAG = "zk-tree";
const int = z.number().int();
const aclEntrySchema = z.tuple([int, z.string(), z.string()]);
const nodeSchema = z.tuple([
  z.string(), // path
  z.instanceof(Uint8Array).nullable(), // data
  int.nonnegative(), // index into the ACL lists
  int, // czxid
  int, // mzxid
  int, // pzxid
  int, // ctime
  int, // mtime
  int, // version
  int, // internal cversion
  int, // aversion
  z.union([z.literal(PERSISTENT), z.literal(EPHEMERAL), z.literal(CONTAINER), z.literal(TTL)]),
  int, // session
  int, // ttl
]);
const snapshotSchema = z.tuple([
  z.literal(SNAPSHOT_TAG),
  z.literal(1),
  z.array(z.array(aclEntrySchema)),
  z.array(nodeSchema),
]);

export class DataTree {
  private readonly nodes = new Map<string, ZNode>();
  /** Ephemeral paths per owning session. */
  private readonly ephemerals = new Map<number, Set<string>>();
  private readonly containers = new Set<string>();
  private readonly ttls = new Set<string>();
  private dataSize = 0;

  constructor() {
    this.insert("/", builtIn(OPEN_ACL, 0));
    this.attach("/zookeeper", builtIn(OPEN_ACL, 0));
    this.attach("/zookeeper/quota", builtIn(OPEN_ACL, 0));
    // ZooKeeper sets this ACL with setACL(..., version -1), which leaves aversion -1.
    this.attach("/zookeeper/config", builtIn(READ_ACL, -1));
  }

  // ---- Writes ----

  create(op: CreateOp, txn: Txn, events: ChangeEvent[]): CreateResult {
    return this.applyCreate(op, txn, events, undefined);
  }

  delete(op: DeleteOp, txn: Txn, events: ChangeEvent[]): DeleteResult {
    return this.applyDelete(op, txn, events, undefined);
  }

  setData(op: SetDataOp, txn: Txn, events: ChangeEvent[]): StatResult {
    return this.applySetData(op, txn, events, undefined);
  }

  setACL(path: string, acl: readonly Acl[], version: number, txn: Txn): StatResult {
    if (!validatePath(path)) return BAD_ARGUMENTS;
    const normalized = normalizeAcl(acl, txn.identities);
    if (normalized === undefined) return INVALID_ACL;
    const node = this.nodes.get(path);
    if (node === undefined) return NO_NODE;
    if (!permitted(node.acl, Perm.admin, txn.identities)) return NO_AUTH;
    if (version !== -1 && version !== node.aversion) return BAD_VERSION;
    node.aversion = (node.aversion + 1) | 0;
    node.acl = normalized;
    return { err: 0, stat: statOf(node) };
  }

  /**
   * Applies `ops` atomically at one zxid, each seeing the effects of the earlier ones. On
   * failure nothing is applied, no event is added, and the results are ZooKeeper's: 0 for the
   * ops before the failing one, its code for it, RuntimeInconsistency for the rest.
   */
  multi(ops: readonly MultiWriteOp[], txn: Txn, events: ChangeEvent[]): MultiOutcome {
    const undo: Undo[] = [];
    const pending: ChangeEvent[] = [];
    const results: MultiResult[] = [];
    for (let i = 0; i < ops.length; i++) {
      const result = this.applyMultiOp(ops[i] as MultiWriteOp, txn, pending, undo);
      if (result.type === -1) {
        for (let j = undo.length - 1; j >= 0; j--) (undo[j] as Undo)();
        return {
          ok: false,
          results: ops.map((_, j): MultiResult => ({
            type: -1,
            err: j < i ? Err.ok : j === i ? result.err : Err.runtimeInconsistency,
          })),
        };
      }
      results.push(result);
    }
    for (const event of pending) events.push(event);
    return { ok: true, results };
  }

  /** Deletes the session's ephemerals in one transaction; returns their paths. */
  closeSession(session: number, txn: Txn, events: ChangeEvent[]): string[] {
    const owned = this.ephemerals.get(session);
    if (owned === undefined) return [];
    const paths = [...owned].sort();
    for (const path of paths) {
      const slash = path.lastIndexOf("/");
      this.removeNode(path, slash, this.nodes.get(path) as ZNode, txn.zxid, events, undefined);
    }
    return paths;
  }

  // ---- Containers and TTL nodes ----

  /**
   * Containers that have had a child and have none now, and childless TTL nodes whose mtime +
   * ttl < now: what ContainerManager would delete at `now`, sorted.
   */
  expiredNodes(now: number): string[] {
    const expired: string[] = [];
    for (const path of this.containers) {
      const node = this.nodes.get(path) as ZNode;
      if (node.cversion > 0 && node.numChildren === 0) expired.push(path);
    }
    for (const path of this.ttls) {
      const node = this.nodes.get(path) as ZNode;
      if (node.numChildren === 0 && node.mtime + node.ttl < now) expired.push(path);
    }
    return expired.sort();
  }

  /**
   * The server's own delete of an expired container or TTL node (deleteContainer): no ACL or
   * version check, but the node must still exist, be childless and not be an ephemeral.
   */
  deleteExpired(path: string, txn: Txn, events: ChangeEvent[]): DeleteResult {
    const slash = path.lastIndexOf("/");
    if (slash < 0 || path.includes("\0") || SPECIAL_PATHS.has(path)) return BAD_ARGUMENTS;
    const node = this.nodes.get(path);
    if (node === undefined) return NO_NODE;
    if (node.numChildren > 0) return NOT_EMPTY;
    if (node.kind === EPHEMERAL) return BAD_VERSION;
    this.removeNode(path, slash, node, txn.zxid, events, undefined);
    return OK;
  }

  // ---- Reads ----

  /** The Stat of `path`, or undefined; no ACL check (exists). */
  stat(path: string): Stat | undefined {
    const node = this.lookup(path);
    return node === undefined ? undefined : statOf(node);
  }

  /** exists (3): like stat, which ZooKeeper does not ACL-check either. */
  exists(path: string): Stat | undefined {
    return this.stat(path);
  }

  /** The data returned is the stored array: callers must not modify it. */
  getData(path: string, identities: readonly Id[]): GetDataResult {
    const node = this.lookup(path);
    if (node === undefined) return NO_NODE;
    if (!permitted(node.acl, Perm.read, identities)) return NO_AUTH;
    return { err: 0, data: node.data, stat: statOf(node) };
  }

  /** Child names, sorted (ZooKeeper's order is unspecified). */
  getChildren(path: string, identities: readonly Id[]): GetChildrenResult {
    const node = this.lookup(path);
    if (node === undefined) return NO_NODE;
    if (!permitted(node.acl, Perm.read, identities)) return NO_AUTH;
    const children = node.children === undefined ? [] : [...node.children].sort();
    return { err: 0, children, stat: statOf(node) };
  }

  getACL(path: string, identities: readonly Id[]): GetAclResult {
    const node = this.lookup(path);
    if (node === undefined) return NO_NODE;
    if (!permitted(node.acl, Perm.read | Perm.admin, identities)) return NO_AUTH;
    const acl = permitted(node.acl, Perm.admin, identities) ? node.acl : maskDigests(node.acl);
    return { err: 0, acl, stat: statOf(node) };
  }

  /** getAllChildrenNumber (104): all descendants of `path`. */
  allChildrenNumber(path: string, identities: readonly Id[]): CountResult {
    const node = this.lookup(path);
    if (node === undefined) return NO_NODE;
    if (!permitted(node.acl, Perm.read, identities)) return NO_AUTH;
    // Every node but the root descends from it.
    if (node === this.nodes.get("/")) return { err: 0, count: this.nodes.size - 1 };
    let count = 0;
    const stack: [string, ZNode][] = [[path, node]];
    for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
      const [parentPath, parent] = top;
      if (parent.children === undefined) continue;
      for (const name of parent.children) {
        const childPath = `${parentPath}/${name}`;
        count++;
        stack.push([childPath, this.nodes.get(childPath) as ZNode]);
      }
    }
    return { err: 0, count };
  }

  /** multiRead (22): each op on its own, failures as type -1 entries. */
  multiRead(ops: readonly MultiReadOp[], identities: readonly Id[]): MultiResult[] {
    return ops.map((op): MultiResult => {
      if (op.type === OpCode.getData) {
        const r = this.getData(op.path, identities);
        return r.err === 0 ? { type: 4, data: r.data, stat: r.stat } : { type: -1, err: r.err };
      }
      const r = this.getChildren(op.path, identities);
      return r.err === 0 ? { type: 8, children: r.children } : { type: -1, err: r.err };
    });
  }

  /** getEphemerals (103): the session's ephemerals under a prefix ("", "/" or blank: all), sorted. */
  getEphemerals(session: number, prefix: string): string[] {
    const owned = this.ephemerals.get(session);
    if (owned === undefined) return [];
    const trimmed = prefix.trim();
    const all = trimmed === "" || trimmed === "/";
    return [...owned].filter((path) => all || path.startsWith(prefix)).sort();
  }

  /** zk_ephemerals_count. */
  get ephemeralCount(): number {
    let count = 0;
    for (const owned of this.ephemerals.values()) count += owned.size;
    return count;
  }

  /**
   * zk_znode_count / srvr's "Node count": ZooKeeper's DataTree also stores the root under "",
   * so it counts one more than there are nodes (5 for a fresh tree); so do we.
   */
  get nodeCount(): number {
    return this.nodes.size + 1;
  }

  /** zk_approximate_data_size: the sum over nodes of path length plus data length. */
  get approximateDataSize(): number {
    return this.dataSize;
  }

  // ---- Snapshots ----

  /** Canonical: equal trees give equal bytes whatever the history. */
  snapshot(): Uint8Array {
    const aclLists: [number, string, string][][] = [];
    const aclIndex = new Map<string, number>();
    const byIdentity = new Map<readonly Acl[], number>();
    const indexOf = (acl: readonly Acl[]): number => {
      let index = byIdentity.get(acl);
      if (index !== undefined) return index;
      const entries = acl.map((a): [number, string, string] => [a.perms, a.id.scheme, a.id.id]);
      const key = JSON.stringify(entries);
      index = aclIndex.get(key);
      if (index === undefined) {
        index = aclLists.length;
        aclLists.push(entries);
        aclIndex.set(key, index);
      }
      byIdentity.set(acl, index);
      return index;
    };
    const rows = [...this.nodes.keys()].sort().map((path) => {
      const n = this.nodes.get(path) as ZNode;
      return [
        path,
        n.data,
        indexOf(n.acl),
        n.czxid,
        n.mzxid,
        n.pzxid,
        n.ctime,
        n.mtime,
        n.version,
        n.cversion,
        n.aversion,
        n.kind,
        n.session,
        n.ttl,
      ];
    });
    return pack([SNAPSHOT_TAG, 1, aclLists, rows]);
  }

  /** The tree a snapshot describes; throws on bytes that are not a data tree snapshot. */
  static restore(bytes: Uint8Array): DataTree {
    let decoded: unknown;
    try {
      decoded = unpack(bytes);
    } catch (e) {
      throw new Error(`not a ZooKeeper data tree snapshot: ${(e as Error).message}`);
    }
    const parsed = snapshotSchema.safeParse(decoded);
    if (!parsed.success) {
      throw new Error(`not a ZooKeeper data tree snapshot: ${parsed.error.message}`);
    }
    const [, , aclLists, rows] = parsed.data;
    const acls = aclLists.map((list): readonly Acl[] =>
      list.map(([perms, scheme, id]) => ({ perms, id: { scheme, id } })),
    );
    const tree = new DataTree();
    // The snapshot has the built-in nodes too, possibly changed since (data, ACL).
    tree.nodes.clear();
    tree.dataSize = 0;
    for (const row of rows) {
      const path = row[0];
      const data = row[1];
      const acl = acls[row[2]];
      if (acl === undefined) {
        throw new Error(`corrupt data tree snapshot: bad ACL index at ${path}`);
      }
      if (tree.nodes.has(path) || (path === "/") !== (tree.nodes.size === 0)) {
        throw new Error(`corrupt data tree snapshot: unexpected node ${path}`);
      }
      const node = new ZNode(
        own(data),
        acl,
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
      );
      if (path === "/") tree.insert(path, node);
      else if (!validatePath(path) || !tree.attach(path, node)) {
        throw new Error(`corrupt data tree snapshot: ${path} has no parent`);
      }
    }
    if (tree.nodes.size === 0) throw new Error("corrupt data tree snapshot: no root");
    return tree;
  }

  // ---- Internals ----

  /** ZooKeeper aliases the root as "" (the parent path of "/a"). */
  private lookup(path: string): ZNode | undefined {
    return this.nodes.get(path === "" ? "/" : path);
  }

  /** Adds a node to the map and the indexes (not to its parent's children). */
  private insert(path: string, node: ZNode): void {
    this.nodes.set(path, node);
    this.dataSize += nodeSize(path, node.data);
    if (node.kind === EPHEMERAL) {
      const owned = this.ephemerals.get(node.session);
      if (owned === undefined) this.ephemerals.set(node.session, new Set([path]));
      else owned.add(path);
    } else if (node.kind === CONTAINER) {
      this.containers.add(path);
    } else if (node.kind === TTL) {
      this.ttls.add(path);
    }
  }

  /** Undoes insert. */
  private erase(path: string, node: ZNode): void {
    this.nodes.delete(path);
    this.dataSize -= nodeSize(path, node.data);
    if (node.kind === EPHEMERAL) {
      const owned = this.ephemerals.get(node.session);
      if (owned !== undefined) {
        owned.delete(path);
        if (owned.size === 0) this.ephemerals.delete(node.session);
      }
    } else if (node.kind === CONTAINER) {
      this.containers.delete(path);
    } else if (node.kind === TTL) {
      this.ttls.delete(path);
    }
  }

  /** Inserts a node below its existing parent (without touching the parent's stat). */
  private attach(path: string, node: ZNode): boolean {
    const slash = path.lastIndexOf("/");
    const parent = this.lookup(path.slice(0, slash));
    if (parent === undefined) return false;
    (parent.children ??= new Set()).add(path.slice(slash + 1));
    this.insert(path, node);
    return true;
  }

  private applyMultiOp(
    op: MultiWriteOp,
    txn: Txn,
    events: ChangeEvent[],
    undo: Undo[],
  ): MultiResult {
    switch (op.type) {
      case OpCode.create:
      case OpCode.create2:
      case OpCode.createContainer:
      case OpCode.createTTL: {
        const r = this.applyCreate(op, txn, events, undo);
        if (r.err !== 0) return { type: -1, err: r.err };
        // Real ZooKeeper answers create2 inside a multi with a plain create result.
        return op.type === OpCode.create || op.type === OpCode.create2
          ? { type: 1, path: r.path }
          : { type: 15, path: r.path, stat: r.stat };
      }
      case OpCode.delete: {
        const r = this.applyDelete(op, txn, events, undo);
        return r.err === 0 ? { type: 2 } : { type: -1, err: r.err };
      }
      case OpCode.setData: {
        const r = this.applySetData(op, txn, events, undo);
        return r.err === 0 ? { type: 5, stat: r.stat } : { type: -1, err: r.err };
      }
      case OpCode.check: {
        const err = this.check(op, txn.identities);
        return err === 0 ? { type: 13 } : { type: -1, err };
      }
    }
  }

  private check(op: CheckOp, identities: readonly Id[]): ErrCode {
    if (!validatePath(op.path)) return Err.badArguments;
    const node = this.nodes.get(op.path);
    if (node === undefined) return Err.noNode;
    if (!permitted(node.acl, Perm.read, identities)) return Err.noAuth;
    if (op.version !== -1 && op.version !== node.version) return Err.badVersion;
    return Err.ok;
  }

  private applyCreate(
    op: CreateOp,
    txn: Txn,
    events: ChangeEvent[],
    undo: Undo[] | undefined,
  ): CreateResult {
    const flags = op.flags;
    if (!Number.isInteger(flags) || flags < 0 || flags > 6) return BAD_ARGUMENTS;
    // Extended types are enabled, so TTL modes need createTTL with 1 <= ttl <= MAX_TTL, and
    // createTTL needs a TTL mode: ZooKeeper rejects a ttl >= 0 with other modes, and a negative
    // one would fail later when applied. Other opcodes carry no ttl (-1), hence BadArguments.
    const ttlMode = flags === 5 || flags === 6;
    if (ttlMode !== (op.type === OpCode.createTTL)) return BAD_ARGUMENTS;
    if (ttlMode && !(op.ttl >= 1 && op.ttl <= MAX_TTL)) return BAD_ARGUMENTS;
    let path = op.path;
    const slash = path.lastIndexOf("/");
    if (slash < 0 || path.includes("\0")) return BAD_ARGUMENTS;
    const acl = normalizeAcl(op.acl, txn.identities);
    if (acl === undefined) return INVALID_ACL;
    const parentPath = path.slice(0, slash);
    const parent = this.lookup(parentPath);
    if (parent === undefined) return NO_NODE;
    if (!permitted(parent.acl, Perm.create, txn.identities)) return NO_AUTH;
    if (flags === 2 || flags === 3 || flags === 6) path += sequenceSuffix(parent.cversion);
    if (!validatePath(path)) return BAD_ARGUMENTS;
    if (this.nodes.has(path)) return NODE_EXISTS;
    if (parent.kind === EPHEMERAL) return NO_CHILDREN_FOR_EPHEMERALS;

    // The opcode decides containers and TTL nodes; opcodes 1 and 15 make mode 4 persistent,
    // as ZooKeeper's CreateTxn (which only records "ephemeral") does.
    const kind: Kind =
      op.type === OpCode.createContainer
        ? CONTAINER
        : op.type === OpCode.createTTL
          ? TTL
          : flags === 1 || flags === 3
            ? EPHEMERAL
            : PERSISTENT;
    const { zxid, time } = txn;
    const node = new ZNode(
      own(op.data),
      acl,
      zxid,
      zxid,
      zxid,
      time,
      time,
      0,
      0,
      0,
      kind,
      kind === EPHEMERAL ? txn.session : 0,
      kind === TTL ? op.ttl : 0,
    );
    const name = path.slice(slash + 1);
    const oldCversion = parent.cversion;
    const oldPzxid = parent.pzxid;
    parent.cversion = (oldCversion + 1) | 0;
    parent.pzxid = zxid;
    (parent.children ??= new Set()).add(name);
    this.insert(path, node);
    undo?.push(() => {
      this.erase(path, node);
      parent.children?.delete(name);
      parent.cversion = oldCversion;
      parent.pzxid = oldPzxid;
    });
    events.push(
      { type: EventType.nodeCreated, path },
      { type: EventType.nodeChildrenChanged, path: eventPath(parentPath) },
    );
    return { err: 0, path, stat: statOf(node) };
  }

  private applyDelete(
    op: DeleteOp,
    txn: Txn,
    events: ChangeEvent[],
    undo: Undo[] | undefined,
  ): DeleteResult {
    const path = op.path;
    const slash = path.lastIndexOf("/");
    if (slash < 0 || path.includes("\0") || SPECIAL_PATHS.has(path)) return BAD_ARGUMENTS;
    const parent = this.lookup(path.slice(0, slash));
    if (parent === undefined) return NO_NODE;
    if (!permitted(parent.acl, Perm.delete, txn.identities)) return NO_AUTH;
    const node = this.nodes.get(path);
    if (node === undefined) return NO_NODE;
    // BadVersion is checked before NotEmpty, as in ZooKeeper.
    if (op.version !== -1 && op.version !== node.version) return BAD_VERSION;
    if (node.numChildren > 0) return NOT_EMPTY;
    this.removeNode(path, slash, node, txn.zxid, events, undo);
    return OK;
  }

  /** Removes a childless node whose parent exists. */
  private removeNode(
    path: string,
    slash: number,
    node: ZNode,
    zxid: number,
    events: ChangeEvent[],
    undo: Undo[] | undefined,
  ): void {
    const parentPath = path.slice(0, slash);
    const parent = this.lookup(parentPath) as ZNode;
    const name = path.slice(slash + 1);
    const oldPzxid = parent.pzxid;
    parent.children?.delete(name);
    if (zxid > parent.pzxid) parent.pzxid = zxid;
    this.erase(path, node);
    undo?.push(() => {
      this.insert(path, node);
      (parent.children ??= new Set()).add(name);
      parent.pzxid = oldPzxid;
    });
    events.push(
      { type: EventType.nodeDeleted, path },
      { type: EventType.nodeChildrenChanged, path: eventPath(parentPath) },
    );
  }

  private applySetData(
    op: SetDataOp,
    txn: Txn,
    events: ChangeEvent[],
    undo: Undo[] | undefined,
  ): StatResult {
    const path = op.path;
    if (!validatePath(path)) return BAD_ARGUMENTS;
    const node = this.nodes.get(path);
    if (node === undefined) return NO_NODE;
    if (!permitted(node.acl, Perm.write, txn.identities)) return NO_AUTH;
    if (op.version !== -1 && op.version !== node.version) return BAD_VERSION;
    if (undo !== undefined) {
      const { data, version, mzxid, mtime } = node;
      undo.push(() => {
        this.dataSize += nodeSize(path, data) - nodeSize(path, node.data);
        Object.assign(node, { data, version, mzxid, mtime });
      });
    }
    const data = own(op.data);
    this.dataSize += nodeSize(path, data) - nodeSize(path, node.data);
    node.data = data;
    node.version = (node.version + 1) | 0;
    node.mzxid = txn.zxid;
    node.mtime = txn.time;
    events.push({ type: EventType.nodeDataChanged, path });
    return { err: 0, stat: statOf(node) };
  }
}
