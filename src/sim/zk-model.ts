/**
 * A sequential specification of the ZooKeeper operations the simulated ZooKeeper clients use
 * (zk-scenario.ts), written from ZooKeeper 3.8's semantics and independent of src/zk: the
 * oracle the service's history is replayed against.
 *
 * Every transaction takes the next zxid and every reply carries the zxid it was applied at (a
 * read: the last zxid), so the replies of all sessions, sorted by zxid (reads after the write
 * of their zxid, a session's requests at one zxid by xid), are the service's order. The model
 * replays them and checks
 * - each reply's outcome (error code, created path, Stat, data, children, multi results)
 *   against the model's state at that point, and that a session answers only on the
 *   connection it is attached to (a request late after its session closed: SessionExpired);
 * - that no two transactions share a zxid and, given every command the service applied, that
 *   no zxid is unaccounted for (a command applied twice);
 * and computes the watch notifications each connection must receive (one-shot watches; data
 * and exist watches in one table, child watches in another; one notification per event and
 * session; a session's watches dropped when it moves to another connection, re-registered
 * by setWatches), each with the zxid of the write that fires it, and the final state.
 *
 * Covered: create/create2 (persistent, ephemeral, sequential), delete, setData, multi (create,
 * delete, setData, check), exists, getData, getChildren(2), setWatches, createSession,
 * re-attaching a session, closeSession. Not covered (the clients do not send them): ACLs,
 * containers, TTLs, persistent watches, session expiry.
 */
import {
  Err,
  EventType,
  OpCode,
  type CreateOp,
  type ErrCode,
  type MultiResult,
  type MultiWriteOp,
  type ReadOp,
  type Stat,
  type ZkRequest,
} from "../zk/types.js";

/** A request the clients send (never an undecodable one). */
export type ValidRequest = Exclude<ZkRequest, { readonly invalid: ErrCode }>;

/** A decoded reply to one request, as a client received it. */
export interface ObservedReply {
  readonly session: number;
  /** The connection (TARA client) it was sent through. */
  readonly c: number;
  readonly xid: number;
  readonly req: ValidRequest;
  readonly zxid: number;
  readonly err: number;
  readonly path?: string;
  readonly stat?: Stat;
  readonly data?: Uint8Array | null;
  readonly children?: readonly string[];
  readonly results?: readonly MultiResult[];
}

export type Transaction =
  /** A session created for connection (TARA client) `c`. */
  | { readonly t: "session"; readonly zxid: number; readonly session: number; readonly c: number }
  /**
   * A session re-attached to connection `c` (no transaction: `zxid` is the last one then); its
   * watches are dropped. `order` places it among the session's requests (by xid) at that zxid.
   */
  | {
      readonly t: "move";
      readonly zxid: number;
      readonly session: number;
      readonly c: number;
      readonly order: number;
    }
  | { readonly t: "reply"; readonly reply: ObservedReply };

export interface Notification {
  readonly type: number;
  readonly path: string;
  /** The zxid of the write that fired it. */
  readonly zxid: number;
}

export interface FinalState {
  /** The last transaction's zxid. */
  readonly zxid: number;
  readonly nodes: Map<string, { readonly stat: Stat; readonly data: Uint8Array | null }>;
  /** Open sessions, and the connection each is attached to. */
  readonly sessions: Map<number, number>;
  /** Standard watches, path -> sessions. */
  readonly dataWatches: Map<string, Set<number>>;
  readonly childWatches: Map<string, Set<number>>;
}

export interface ModelResult {
  readonly violations: string[];
  /** The notifications sent to each connection (by TARA client id), in order. */
  readonly notifications: Map<number, Notification[]>;
  /** The state the service must end in. */
  readonly final: FinalState;
  readonly transactions: number;
}

interface Node {
  data: Uint8Array | null;
  czxid: number;
  mzxid: number;
  pzxid: number;
  version: number;
  /** Child creates so far: the sequential suffix, and the visible cversion 2C - numChildren. */
  creates: number;
  children: Set<string>;
  owner: number;
  aversion?: number;
}

interface Event {
  readonly type: number;
  readonly path: string;
}

const WRITES: ReadonlySet<number> = new Set([
  OpCode.create,
  OpCode.create2,
  OpCode.delete,
  OpCode.setData,
  OpCode.multi,
  OpCode.closeSession,
]);

export function isWrite(req: ValidRequest): boolean {
  return WRITES.has(req.type);
}

const OP_NAMES: Record<number, string> = {
  1: "create",
  2: "delete",
  3: "exists",
  4: "getData",
  5: "setData",
  8: "getChildren",
  12: "getChildren2",
  13: "check",
  14: "multi",
  101: "setWatches",
  15: "create2",
  [-11]: "closeSession",
};

export function describeRequest(req: ValidRequest): string {
  const name = OP_NAMES[req.type] ?? `op ${req.type}`;
  return "path" in req ? `${name} ${req.path}` : name;
}

function parentPath(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash <= 0 ? "/" : path.slice(0, slash);
}

function sameBytes(a: Uint8Array | null | undefined, b: Uint8Array | null | undefined): boolean {
  if (a === null || a === undefined || b === null || b === undefined) {
    return (a ?? null) === null && (b ?? null) === null;
  }
  return Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
}

/** Replies that carry a Stat. */
const STAT_REPLIES: ReadonlySet<number> = new Set([
  OpCode.create2,
  OpCode.setData,
  OpCode.exists,
  OpCode.getData,
  OpCode.getChildren2,
]);

/** The Stat fields the model knows (not ctime/mtime: the leader's clock). */
const STAT_FIELDS = [
  "czxid",
  "mzxid",
  "version",
  "cversion",
  "aversion",
  "ephemeralOwner",
  "dataLength",
  "numChildren",
  "pzxid",
] as const;

/** The fields of `got` that differ from `want` (not ctime and mtime), described; or undefined. */
export function statDiff(got: Stat | undefined, want: Stat): string | undefined {
  if (!got) return "no stat";
  const diffs = STAT_FIELDS.filter((f) => got[f] !== want[f]).map(
    (f) => `${f} ${got[f]} (model ${want[f]})`,
  );
  return diffs.length > 0 ? diffs.join(", ") : undefined;
}

type Outcome =
  | { err: 0; path?: string; stat?: Stat; data?: Uint8Array | null; children?: string[] }
  | { err: number };

class Model {
  readonly nodes = new Map<string, Node>();
  /** During a multi: the nodes it changed, as they were (undefined: absent). */
  private saved: Map<string, Node | undefined> | undefined;
  readonly sessions = new Set<number>();
  /** The connection each session is attached to. */
  readonly attached = new Map<number, number>();
  /** Standard watches: data (getData, exists) and child (getChildren), path -> sessions. */
  readonly dataWatches = new Map<string, Set<number>>();
  readonly childWatches = new Map<string, Set<number>>();
  readonly notifications = new Map<number, Notification[]>();

  constructor() {
    const node = (): Node => ({
      data: new Uint8Array(0),
      czxid: 0,
      mzxid: 0,
      pzxid: 0,
      version: 0,
      creates: 0,
      children: new Set(),
      owner: 0,
    });
    this.nodes.set("/", { ...node(), children: new Set(["zookeeper"]) });
    this.nodes.set("/zookeeper", { ...node(), children: new Set(["quota", "config"]) });
    this.nodes.set("/zookeeper/quota", node());
    // ZooKeeper sets its ACL with setACL(..., version -1), which leaves aversion -1.
    this.nodes.set("/zookeeper/config", { ...node(), aversion: -1 });
  }

  stat(node: Node): Stat {
    return {
      czxid: node.czxid,
      mzxid: node.mzxid,
      ctime: 0,
      mtime: 0,
      version: node.version,
      cversion: 2 * node.creates - node.children.size,
      aversion: node.aversion ?? 0,
      ephemeralOwner: node.owner,
      dataLength: node.data === null ? 0 : node.data.length,
      numChildren: node.children.size,
      pzxid: node.pzxid,
    };
  }

  // ---- writes: each returns an outcome and appends the events it causes ----

  create(req: CreateOp, zxid: number, session: number, events: Event[]): Outcome {
    const parentName = parentPath(req.path);
    const parent = this.nodes.get(parentName);
    if (!parent) return { err: Err.noNode };
    const sequential = req.flags === 2 || req.flags === 3;
    const path = sequential ? req.path + String(parent.creates).padStart(10, "0") : req.path;
    if (this.nodes.has(path)) return { err: Err.nodeExists };
    if (parent.owner !== 0) return { err: Err.noChildrenForEphemerals };
    const ephemeral = req.flags === 1 || req.flags === 3;
    this.save(path);
    this.save(parentName);
    const node: Node = {
      data: req.data === null ? null : new Uint8Array(req.data),
      czxid: zxid,
      mzxid: zxid,
      pzxid: zxid,
      version: 0,
      creates: 0,
      children: new Set(),
      owner: ephemeral ? session : 0,
    };
    this.nodes.set(path, node);
    parent.children.add(path.slice(path.lastIndexOf("/") + 1));
    parent.creates++;
    parent.pzxid = zxid;
    events.push(
      { type: EventType.nodeCreated, path },
      { type: EventType.nodeChildrenChanged, path: parentName },
    );
    return { err: 0, path, stat: this.stat(node) };
  }

  delete(path: string, version: number, zxid: number, events: Event[]): Outcome {
    const node = this.nodes.get(path);
    if (!this.nodes.has(parentPath(path)) || !node) return { err: Err.noNode };
    if (version !== -1 && version !== node.version) return { err: Err.badVersion };
    if (node.children.size > 0) return { err: Err.notEmpty };
    this.remove(path, zxid, events);
    return { err: 0 };
  }

  private remove(path: string, zxid: number, events: Event[]): void {
    const parentName = parentPath(path);
    this.save(path);
    this.save(parentName);
    const parent = this.nodes.get(parentName)!;
    this.nodes.delete(path);
    parent.children.delete(path.slice(path.lastIndexOf("/") + 1));
    if (zxid > parent.pzxid) parent.pzxid = zxid;
    events.push(
      { type: EventType.nodeDeleted, path },
      { type: EventType.nodeChildrenChanged, path: parentName },
    );
  }

  setData(
    path: string,
    data: Uint8Array | null,
    version: number,
    zxid: number,
    events: Event[],
  ): Outcome {
    const node = this.nodes.get(path);
    if (!node) return { err: Err.noNode };
    if (version !== -1 && version !== node.version) return { err: Err.badVersion };
    this.save(path);
    node.data = data === null ? null : new Uint8Array(data);
    node.version++;
    node.mzxid = zxid;
    events.push({ type: EventType.nodeDataChanged, path });
    return { err: 0, stat: this.stat(node) };
  }

  check(path: string, version: number): Outcome {
    const node = this.nodes.get(path);
    if (!node) return { err: Err.noNode };
    if (version !== -1 && version !== node.version) return { err: Err.badVersion };
    return { err: 0 };
  }

  /** All or nothing at one zxid; on failure the state is as before and no event fires. */
  multi(
    req: { readonly ops: readonly MultiWriteOp[] },
    zxid: number,
    session: number,
    events: Event[],
  ): MultiResult[] {
    const saved = (this.saved = new Map());
    const pending: Event[] = [];
    const results: MultiResult[] = [];
    for (let i = 0; i < req.ops.length; i++) {
      const op = req.ops[i]!;
      let outcome: Outcome;
      let result: MultiResult;
      switch (op.type) {
        case OpCode.create:
        case OpCode.create2:
          outcome = this.create(op, zxid, session, pending);
          result = { type: 1, path: "path" in outcome ? outcome.path! : "" };
          break;
        case OpCode.delete:
          outcome = this.delete(op.path, op.version, zxid, pending);
          result = { type: 2 };
          break;
        case OpCode.setData:
          outcome = this.setData(op.path, op.data, op.version, zxid, pending);
          result = { type: 5, stat: "stat" in outcome ? outcome.stat! : ({} as Stat) };
          break;
        case OpCode.check:
          outcome = this.check(op.path, op.version);
          result = { type: 13 };
          break;
        default:
          throw new Error(`the model has no multi op ${op.type}`);
      }
      if (outcome.err !== 0) {
        this.saved = undefined;
        for (const [path, node] of saved) {
          if (node) this.nodes.set(path, node);
          else this.nodes.delete(path);
        }
        return req.ops.map((_, j) => ({
          type: -1,
          err: j < i ? Err.ok : j === i ? outcome.err : Err.runtimeInconsistency,
        }));
      }
      results.push(result);
    }
    this.saved = undefined;
    events.push(...pending);
    return results;
  }

  /** In a multi: keeps what `path` was before its first change, to restore on failure. */
  private save(path: string): void {
    if (!this.saved || this.saved.has(path)) return;
    const node = this.nodes.get(path);
    this.saved.set(path, node && { ...node, children: new Set(node.children) });
  }

  closeSession(session: number, zxid: number, events: Event[]): void {
    const owned = [...this.nodes].filter(([, n]) => n.owner === session).map(([p]) => p);
    for (const path of owned.sort()) this.remove(path, zxid, events);
    this.sessions.delete(session);
    this.dropWatches(session);
  }

  dropWatches(session: number): void {
    for (const table of [this.dataWatches, this.childWatches]) {
      for (const [path, watchers] of table) {
        watchers.delete(session);
        if (watchers.size === 0) table.delete(path);
      }
    }
  }

  // ---- reads ----

  read(req: ReadOp, session: number): Outcome {
    const node = this.nodes.get(req.path);
    if (req.type === OpCode.exists) {
      if (req.watch) this.watch(this.dataWatches, req.path, session);
      return node ? { err: 0, stat: this.stat(node) } : { err: Err.noNode };
    }
    if (!node) return { err: Err.noNode };
    if (req.type === OpCode.getData) {
      if (req.watch) this.watch(this.dataWatches, req.path, session);
      return { err: 0, data: node.data, stat: this.stat(node) };
    }
    if (req.watch) this.watch(this.childWatches, req.path, session);
    return { err: 0, children: [...node.children].sort(), stat: this.stat(node) };
  }

  private watch(table: Map<string, Set<number>>, path: string, session: number): void {
    let watchers = table.get(path);
    if (!watchers) table.set(path, (watchers = new Set()));
    watchers.add(session);
  }

  /** The notifications a write's events send, consuming the one-shot watches they fire. */
  fire(events: readonly Event[], zxid: number): void {
    for (const { type, path } of events) {
      const fired = new Set<number>();
      const take = (table: Map<string, Set<number>>) => {
        const watchers = table.get(path);
        if (!watchers) return;
        table.delete(path);
        for (const session of watchers) fired.add(session);
      };
      if (type === EventType.nodeChildrenChanged) take(this.childWatches);
      else {
        take(this.dataWatches);
        if (type === EventType.nodeDeleted) take(this.childWatches);
      }
      for (const session of fired) this.notify(session, type, path, zxid);
    }
  }

  private notify(session: number, type: number, path: string, zxid: number): void {
    const c = this.attached.get(session) ?? -1;
    let list = this.notifications.get(c);
    if (!list) this.notifications.set(c, (list = []));
    list.push({ type, path, zxid });
  }

  /**
   * SetWatches after a reconnect: what changed since `relativeZxid` is notified at once (in the
   * lists' order: data, exist, child), the rest registered.
   */
  setWatches(
    session: number,
    req: {
      relativeZxid: number;
      dataWatches: readonly string[];
      existWatches: readonly string[];
      childWatches: readonly string[];
    },
    zxid: number,
  ): void {
    for (const path of req.dataWatches) {
      const node = this.nodes.get(path);
      if (!node) this.notify(session, EventType.nodeDeleted, path, zxid);
      else if (node.mzxid > req.relativeZxid) {
        this.notify(session, EventType.nodeDataChanged, path, zxid);
      } else this.watch(this.dataWatches, path, session);
    }
    for (const path of req.existWatches) {
      if (this.nodes.has(path)) this.notify(session, EventType.nodeCreated, path, zxid);
      else this.watch(this.dataWatches, path, session);
    }
    for (const path of req.childWatches) {
      const node = this.nodes.get(path);
      if (!node) this.notify(session, EventType.nodeDeleted, path, zxid);
      else if (node.pzxid > req.relativeZxid) {
        this.notify(session, EventType.nodeChildrenChanged, path, zxid);
      } else this.watch(this.childWatches, path, session);
    }
  }
}

function sortKey(tx: Transaction): [number, number, number, number] {
  if (tx.t === "session") return [tx.zxid, 0, tx.session, 0];
  if (tx.t === "move") return [tx.zxid, 1, tx.session, tx.order];
  const { reply } = tx;
  return [reply.zxid, writes(tx) ? 0 : 1, reply.session, reply.xid];
}

function compareKeys(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i]! !== b[i]!) return a[i]! - b[i]!;
  return 0;
}

const zxidOf = (tx: Transaction) => (tx.t === "reply" ? tx.reply.zxid : tx.zxid);
/** A transaction: what takes a zxid (a request on a closed session takes none). */
function writes(tx: Transaction): boolean {
  if (tx.t !== "reply") return tx.t === "session";
  return isWrite(tx.reply.req) && tx.reply.err !== Err.sessionExpired;
}

/**
 * Replays the history. `complete`: it holds every command the service applied (so every zxid up
 * to the last one seen must be some transaction's).
 */
export function checkHistory(
  history: readonly Transaction[],
  options: {
    complete: boolean;
    /** What the service applied at a zxid, if known: for unaccounted ones. */
    explain?: (zxid: number) => string | undefined;
  },
): ModelResult {
  const violations: string[] = [];
  const violation = (text: string) => {
    if (violations.length < 12) violations.push(text);
  };
  const model = new Model();
  const all = [...history];
  const sorted = all.sort((a, b) => compareKeys(sortKey(a), sortKey(b)));
  const writeAt = new Map<number, string>();
  let transactions = 0;
  for (const tx of sorted) {
    if (tx.t === "move") {
      if (!model.sessions.has(tx.session)) {
        violation(`session ${tx.session} re-attached at zxid ${tx.zxid}: it is not open`);
      }
      model.attached.set(tx.session, tx.c);
      model.dropWatches(tx.session);
      continue;
    }
    const name =
      tx.t === "session"
        ? `createSession ${tx.session}`
        : `session ${tx.reply.session} xid ${tx.reply.xid} ${describeRequest(tx.reply.req)}`;
    const zxid = zxidOf(tx);
    if (writes(tx)) {
      transactions++;
      const other = writeAt.get(zxid);
      if (other !== undefined)
        violation(`zxid ${zxid} taken by two transactions: ${other}, ${name}`);
      writeAt.set(zxid, name);
    }
    if (tx.t === "session") {
      if (tx.session !== tx.zxid) violation(`session ${tx.session} created at zxid ${tx.zxid}`);
      model.sessions.add(tx.session);
      model.attached.set(tx.session, tx.c);
      continue;
    }
    const { reply } = tx;
    const { req, session } = reply;
    const at = `${name} at zxid ${zxid}`;
    if (!model.sessions.has(session)) {
      // A request late on the way, after its session closed: it learns it, and nothing else.
      if (reply.err !== Err.sessionExpired) {
        violation(`${at}: err ${reply.err} for a closed session (model SessionExpired)`);
      }
      continue;
    }
    if (model.attached.get(session) !== reply.c) {
      violation(`${at}: answered on connection ${reply.c}, the session is on another`);
      continue;
    }
    const events: Event[] = [];
    let want: Outcome;
    switch (req.type) {
      case OpCode.create:
      case OpCode.create2:
        want = model.create(req, zxid, session, events);
        break;
      case OpCode.delete:
        want = model.delete(req.path, req.version, zxid, events);
        break;
      case OpCode.setData:
        want = model.setData(req.path, req.data, req.version, zxid, events);
        break;
      case OpCode.multi: {
        const results = model.multi(req, zxid, session, events);
        model.fire(events, zxid);
        const got = JSON.stringify((reply.results ?? []).map(withoutStat));
        const expected = JSON.stringify(results.map(withoutStat));
        if (reply.err !== 0) violation(`${at}: err ${reply.err}, model 0`);
        else if (got !== expected) violation(`${at}: results ${got}, model ${expected}`);
        else {
          results.forEach((r, i) => {
            const gotResult = reply.results![i]!;
            if (r.type === 5 && gotResult.type === 5) {
              const diff = statDiff(gotResult.stat, r.stat);
              if (diff) violation(`${at}: op ${i} stat ${diff}`);
            }
          });
        }
        continue;
      }
      case OpCode.setWatches:
        if (reply.err !== 0) violation(`${at}: err ${reply.err}, model 0`);
        model.setWatches(session, req, zxid);
        continue;
      case OpCode.closeSession:
        if (reply.err !== 0) violation(`${at}: err ${reply.err}, model 0`);
        model.closeSession(session, zxid, events);
        model.fire(events, zxid);
        continue;
      case OpCode.exists:
      case OpCode.getData:
      case OpCode.getChildren:
      case OpCode.getChildren2:
        want = model.read(req, session);
        break;
      default:
        violation(`${at}: the model has no ${req.type}`);
        continue;
    }
    model.fire(events, zxid);
    if (reply.err !== want.err) {
      violation(`${at}: err ${reply.err}, model ${want.err}`);
      continue;
    }
    if (want.err !== 0) continue;
    const ok = want as Extract<Outcome, { err: 0 }>;
    if (ok.path !== undefined && reply.path !== ok.path) {
      violation(`${at}: created ${reply.path}, model ${ok.path}`);
    }
    if (ok.stat !== undefined && STAT_REPLIES.has(req.type)) {
      const diff = statDiff(reply.stat, ok.stat);
      if (diff) violation(`${at}: stat ${diff}`);
    }
    if (req.type === OpCode.getData && !sameBytes(reply.data, ok.data)) {
      violation(`${at}: data ${text(reply.data)}, model ${text(ok.data)}`);
    }
    if (ok.children !== undefined) {
      const got = new Set(reply.children ?? []);
      const missing = ok.children.filter((c) => !got.has(c));
      const extra = [...got].filter((c) => !ok.children!.includes(c));
      if (missing.length > 0 || extra.length > 0) {
        const base = req.path === "/" ? "" : req.path;
        const created = (c: string) => `${c} (czxid ${model.nodes.get(`${base}/${c}`)?.czxid})`;
        violation(
          `${at}: children missing [${missing.map(created).join(", ")}], ` +
            `unexpected [${extra.join(", ")}] (never created by an acknowledged create, ` +
            `or deleted by an acknowledged delete or session close)`,
        );
      }
    }
  }
  if (options.complete) {
    const last = sorted.reduce((max, tx) => Math.max(max, zxidOf(tx)), 0);
    const missing: number[] = [];
    for (let z = 1; z <= last; z++) if (!writeAt.has(z)) missing.push(z);
    if (missing.length > 0) {
      const shown = missing.slice(0, 10).map((z) => {
        const known = options.explain?.(z);
        return known === undefined ? `${z}` : `${z} (${known})`;
      });
      violation(
        `zxids ${shown.join(", ")} are no acknowledged transaction's ` +
          `(${missing.length} unaccounted: applied twice, or without a reply)`,
      );
    }
  }
  const final: FinalState = {
    zxid: [...writeAt.keys()].reduce((max, z) => Math.max(max, z), 0),
    nodes: new Map(
      [...model.nodes].map(([path, n]) => [path, { stat: model.stat(n), data: n.data }]),
    ),
    sessions: new Map([...model.sessions].map((id) => [id, model.attached.get(id) ?? -1])),
    dataWatches: model.dataWatches,
    childWatches: model.childWatches,
  };
  return { violations, notifications: model.notifications, final, transactions };
}

function withoutStat(result: MultiResult): unknown {
  return "stat" in result ? { ...result, stat: undefined } : result;
}

function text(data: Uint8Array | null | undefined): string {
  return data === null || data === undefined
    ? "null"
    : JSON.stringify(Buffer.from(data).toString());
}
