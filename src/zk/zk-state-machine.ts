/**
 * The replicated ZooKeeper service: the data tree, the sessions and the watches, as one
 * deterministic state machine TARA replicates (commands.ts says what travels).
 *
 * - zxid: every transaction ZooKeeper would log (a write, failed or not, a session created or
 *   closed or expired, a container or TTL node removed) takes the next zxid, so zxids increase
 *   in commit order. Reads answer with the last zxid.
 * - Time: the leader's clock when it proposed the batch (never a replica's), for ctime/mtime,
 *   session deadlines and container/TTL expiry.
 * - Sessions: created, re-attached (to another connection, maybe on another gateway), renewed
 *   (any request of the session, pings included) and closed or expired here, so every replica
 *   agrees which session owns which ephemeral node. A session expires at the first command
 *   executed later than its deadline: clients ping every third of their timeout, so while any
 *   client is connected, time moves on.
 * - Reads go through the replicated order too: they are linearizable (stronger than
 *   ZooKeeper's sequential consistency), and `sync` is answered at once.
 * - Watches are registered by reads at their place in the order and fire for the writes that
 *   follow; their notifications are pushed to the watching session's connection, numbered
 *   with the replies (see commands.ts), and one-shot per the DataTree's rules.
 */
import { pack, unpack } from "msgpackr";
import type { Applied, Execution, Push, StateMachine } from "../tara/state-machine.js";
import { digestIdentity } from "./acl.js";
import type { ConnectReply, ConnectionMessage, ZkCommand } from "./commands.js";
import { DataTree, type ChangeEvent, type Txn } from "./data-tree.js";
import type { JuteWriter } from "./jute.js";
import {
  decodeRequest,
  notificationFrame,
  replyFrame,
  writeAcls,
  writeMultiResults,
  writeStat,
} from "./protocol.js";
import { Err, OpCode, type Id, type ZkRequest } from "./types.js";
import { Watches } from "./watches.js";

export interface ZkServiceConfig {
  /** ZooKeeper's tickTime: session timeouts are clamped to [2, 20] ticks. */
  readonly tickTime: number;
  /** How often (ms of the leader's time) empty containers and expired TTL nodes go. */
  readonly containerCheckMs: number;
}

export const DEFAULT_ZK_CONFIG: ZkServiceConfig = { tickTime: 2000, containerCheckMs: 60_000 };

interface Session {
  readonly id: number;
  readonly passwd: Uint8Array;
  timeout: number;
  deadline: number;
  /** The connection it is attached to: TARA client `c` at gateway `g`. */
  g: number;
  c: number;
  /** Messages sent to that connection so far (see commands.ts). */
  out: number;
  /** The connection's identities for ACLs: its address, then what it authenticated as. */
  identities: Id[];
}

/** Frames being gathered for one session's connection during a command. */
class Outbox {
  readonly frames: Buffer[] = [];
  close: string | undefined;
  constructor(readonly session: Session) {}
}

export class ZkStateMachine implements StateMachine {
  private tree = new DataTree();
  private watches = new Watches();
  private readonly sessions = new Map<number, Session>();
  private zxid = 0;
  /** No session's deadline is before this: expiry checks skip commands before it. */
  private nextExpiry = Infinity;
  private nextContainerCheck = 0;
  // Per command:
  private time = 0;
  private outboxes = new Map<number, Outbox>();
  private pushes: Push[] = [];

  constructor(private readonly config: ZkServiceConfig = DEFAULT_ZK_CONFIG) {}

  get lastZxid(): number {
    return this.zxid;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  apply(bytes: Uint8Array, execution: Execution): Applied {
    this.time = execution.time;
    this.pushes = [];
    this.expireSessions();
    this.removeExpiredNodes();
    let reply: Uint8Array;
    try {
      const command = unpack(bytes) as ZkCommand | undefined;
      if (command?.t === "connect" && typeof command.session === "number") {
        reply = pack(this.connect(command, execution));
      } else if (command?.t === "requests" && command.frames instanceof Uint8Array) {
        reply = this.requests(command.session, command.frames, execution);
      } else {
        reply = pack(this.message(undefined, [], "not a ZooKeeper command"));
      }
    } catch (error) {
      // Every replica fails alike (it is deterministic); throwing would crash them all, at
      // every restart again. The connection is closed instead.
      this.outboxes.clear();
      reply = pack(this.message(undefined, [], `internal error: ${(error as Error).message}`));
    }
    this.flushOutboxes();
    return { reply, pushes: this.pushes };
  }

  snapshot(): Uint8Array {
    const sessions = [...this.sessions.values()]
      .sort((a, b) => a.id - b.id)
      .map((s) => [s.id, s.passwd, s.timeout, s.deadline, s.g, s.c, s.out, s.identities]);
    return pack([
      this.zxid,
      this.nextContainerCheck,
      this.tree.snapshot(),
      this.watches.snapshot(),
      sessions,
    ]);
  }

  restore(snapshot: Uint8Array): void {
    const [zxid, nextContainerCheck, tree, watches, sessions] = unpack(snapshot) as [
      number,
      number,
      Uint8Array,
      Uint8Array,
      [number, Uint8Array, number, number, number, number, number, Id[]][],
    ];
    if (typeof zxid !== "number" || !Array.isArray(sessions)) {
      throw new Error("not a ZooKeeper snapshot");
    }
    this.tree = DataTree.restore(tree);
    this.watches = Watches.restore(watches);
    this.zxid = zxid;
    this.nextContainerCheck = nextContainerCheck;
    this.sessions.clear();
    this.nextExpiry = Infinity;
    for (const [id, passwd, timeout, deadline, g, c, out, identities] of sessions) {
      this.sessions.set(id, { id, passwd, timeout, deadline, g, c, out, identities });
      this.nextExpiry = Math.min(this.nextExpiry, deadline);
    }
  }

  // ---- sessions ----

  private connect(
    command: Extract<ZkCommand, { t: "connect" }>,
    { g, c }: Execution,
  ): ConnectReply {
    if (command.lastZxid > this.zxid) return { t: "refused", reason: "behind", z: this.zxid };
    const timeout = this.negotiate(command.timeout);
    const ip: Id = { scheme: "ip", id: command.ip };
    if (command.session === 0) {
      const id = ++this.zxid; // createSession is a transaction: its zxid names the session
      const session: Session = {
        id,
        passwd: command.newPasswd,
        timeout,
        deadline: this.time + timeout,
        g,
        c,
        out: 0,
        identities: [ip],
      };
      this.sessions.set(id, session);
      this.nextExpiry = Math.min(this.nextExpiry, session.deadline);
      return { t: "connected", session: id, passwd: session.passwd, timeout, z: this.zxid };
    }
    const session = this.sessions.get(command.session);
    if (!session || !equalBytes(session.passwd, command.passwd)) {
      return { t: "refused", reason: "expired", z: this.zxid };
    }
    if (session.c !== c || session.g !== g) {
      // The newest connection owns the session; the old one is closed, its watches dropped.
      this.outbox(session).close = "the session moved to another connection";
      this.flushOutboxes(); // addressed to the old connection, before it changes below
      this.watches.dropSession(session.id);
    }
    session.g = g;
    session.c = c;
    session.out = 0;
    session.timeout = timeout;
    session.deadline = this.time + timeout;
    session.identities = [ip];
    return { t: "connected", session: session.id, passwd: session.passwd, timeout, z: this.zxid };
  }

  private negotiate(requested: number): number {
    const { tickTime } = this.config;
    return Math.min(Math.max(requested, 2 * tickTime), 20 * tickTime);
  }

  /** Sessions whose deadline passed are closed like a closeSession, by the service. */
  private expireSessions(): void {
    if (this.time <= this.nextExpiry) return;
    this.nextExpiry = Infinity;
    for (const session of [...this.sessions.values()].sort((a, b) => a.id - b.id)) {
      if (session.deadline < this.time) {
        this.outbox(session).close = "session expired";
        this.closeSession(session);
      } else {
        this.nextExpiry = Math.min(this.nextExpiry, session.deadline);
      }
    }
  }

  /** The closeSession transaction: its ephemeral nodes go, its watches too. */
  private closeSession(session: Session): void {
    const events: ChangeEvent[] = [];
    this.tree.closeSession(session.id, this.txn(session, ++this.zxid), events);
    this.sessions.delete(session.id);
    this.watches.dropSession(session.id);
    this.fire(events);
  }

  private removeExpiredNodes(): void {
    if (this.time < this.nextContainerCheck) return;
    this.nextContainerCheck = this.time + this.config.containerCheckMs;
    for (const path of this.tree.expiredNodes(this.time)) {
      const events: ChangeEvent[] = [];
      this.tree.deleteExpired(path, this.txn(undefined, ++this.zxid), events);
      this.fire(events);
    }
  }

  // ---- requests ----

  private requests(id: number, frames: Uint8Array, { g, c }: Execution): Uint8Array {
    const reqs = decodeFrames(frames);
    const session = this.sessions.get(id);
    if (!session) {
      // Expired or closed: the first request learns it, the connection closes.
      const first = reqs[0];
      const frames = first ? [replyFrame(first.xid, this.zxid, Err.sessionExpired)] : [];
      return pack(this.message(undefined, frames, "session expired"));
    }
    if (session.c !== c || session.g !== g) {
      // ZooKeeper closes a connection whose session moved, without a reply.
      return pack(this.message(undefined, [], "the session moved to another connection"));
    }
    session.deadline = this.time + session.timeout;
    const box = this.outbox(session);
    for (const req of reqs) {
      this.request(session, req, box);
      if (box.close !== undefined) break;
    }
    this.outboxes.delete(session.id);
    session.out++;
    return pack(this.message(session.out, box.frames, box.close));
  }

  private request(session: Session, req: ZkRequest, box: Outbox): void {
    const { xid } = req;
    const reply = (err: number, body?: (w: JuteWriter) => void, zxid = this.zxid): void => {
      box.frames.push(replyFrame(xid, zxid, err, body));
    };
    if ("invalid" in req) {
      reply(req.invalid, undefined, -1);
      box.close =
        req.invalid === Err.unimplemented ? "unimplemented request" : "undecodable request";
      return;
    }
    const ids = session.identities;
    switch (req.type) {
      case OpCode.create:
      case OpCode.create2:
      case OpCode.createContainer:
      case OpCode.createTTL: {
        const events: ChangeEvent[] = [];
        const result = this.tree.create(req, this.txn(session, ++this.zxid), events);
        this.fire(events);
        if (result.err !== 0) return reply(result.err);
        if (req.type === OpCode.create) return reply(0, (w) => w.ustring(result.path));
        return reply(0, (w) => {
          w.ustring(result.path);
          writeStat(w, result.stat);
        });
      }
      case OpCode.delete: {
        const events: ChangeEvent[] = [];
        const result = this.tree.delete(req, this.txn(session, ++this.zxid), events);
        this.fire(events);
        return reply(result.err);
      }
      case OpCode.setData: {
        const events: ChangeEvent[] = [];
        const result = this.tree.setData(req, this.txn(session, ++this.zxid), events);
        this.fire(events);
        if (result.err !== 0) return reply(result.err);
        return reply(0, (w) => writeStat(w, result.stat));
      }
      case OpCode.setACL: {
        const result = this.tree.setACL(
          req.path,
          req.acl,
          req.version,
          this.txn(session, ++this.zxid),
        );
        if (result.err !== 0) return reply(result.err);
        return reply(0, (w) => writeStat(w, result.stat));
      }
      case OpCode.multi: {
        const events: ChangeEvent[] = [];
        const outcome = this.tree.multi(req.ops, this.txn(session, ++this.zxid), events);
        this.fire(events);
        return reply(0, (w) => writeMultiResults(w, outcome.results));
      }
      case OpCode.exists: {
        const stat = this.tree.exists(req.path);
        if (req.watch) this.watches.register(session.id, req.path, stat ? "data" : "exist");
        if (!stat) return reply(Err.noNode);
        return reply(0, (w) => writeStat(w, stat));
      }
      case OpCode.getData: {
        const result = this.tree.getData(req.path, ids);
        if (result.err !== 0) return reply(result.err);
        if (req.watch) this.watches.register(session.id, req.path, "data");
        return reply(0, (w) => {
          w.buffer(result.data);
          writeStat(w, result.stat);
        });
      }
      case OpCode.getChildren:
      case OpCode.getChildren2: {
        const result = this.tree.getChildren(req.path, ids);
        if (result.err !== 0) return reply(result.err);
        if (req.watch) this.watches.register(session.id, req.path, "child");
        return reply(0, (w) => {
          writeStrings(w, result.children);
          if (req.type === OpCode.getChildren2) writeStat(w, result.stat);
        });
      }
      case OpCode.getACL: {
        const result = this.tree.getACL(req.path, ids);
        if (result.err !== 0) return reply(result.err);
        return reply(0, (w) => {
          writeAcls(w, result.acl);
          writeStat(w, result.stat);
        });
      }
      case OpCode.multiRead: {
        const results = this.tree.multiRead(req.ops, ids);
        return reply(0, (w) => writeMultiResults(w, results));
      }
      case OpCode.sync:
        // Every read is linearizable already: sync has nothing to wait for.
        return reply(0, (w) => w.ustring(req.path));
      case OpCode.ping:
        return reply(0);
      case OpCode.auth: {
        if (req.scheme !== "digest") {
          // The request's xid echoed (clients send -4), as ZooKeeper does.
          box.frames.push(replyFrame(xid, 0, Err.authFailed));
          box.close = `authentication failed: unknown scheme ${req.scheme}`;
          return;
        }
        const id: Id = { scheme: "digest", id: digestIdentity(Buffer.from(req.auth).toString()) };
        if (!ids.some((known) => known.scheme === id.scheme && known.id === id.id)) ids.push(id);
        return reply(0, undefined, 0);
      }
      case OpCode.setWatches:
      case OpCode.setWatches2: {
        const fired = this.watches.setWatches(
          session.id,
          req.relativeZxid,
          req.dataWatches,
          req.existWatches,
          req.childWatches,
          req.persistentWatches,
          req.persistentRecursiveWatches,
          this.tree,
        );
        for (const event of fired) box.frames.push(notificationFrame(event.type, event.path));
        return reply(0);
      }
      case OpCode.addWatch:
        this.watches.addPersistent(session.id, req.path, req.mode === 1);
        return reply(0, (w) => w.int(0));
      case OpCode.checkWatches:
      case OpCode.removeWatches: {
        const found =
          req.type === OpCode.removeWatches
            ? this.watches.remove(session.id, req.path, req.watcherType)
            : this.watches.has(session.id, req.path, req.watcherType);
        return reply(found ? 0 : Err.noWatcher);
      }
      case OpCode.getEphemerals:
        return reply(0, (w) => writeStrings(w, this.tree.getEphemerals(session.id, req.path)));
      case OpCode.getAllChildrenNumber: {
        const result = this.tree.allChildrenNumber(req.path, ids);
        if (result.err !== 0) return reply(result.err);
        return reply(0, (w) => w.int(result.count));
      }
      case OpCode.whoAmI:
        return reply(0, (w) => {
          const shown = ids.filter((id) => id.scheme !== "world");
          w.int(shown.length);
          for (const id of shown) {
            w.ustring(id.scheme);
            w.ustring(id.scheme === "digest" ? id.id.split(":")[0]! : id.id);
          }
        });
      case OpCode.closeSession: {
        this.closeSession(session);
        reply(0);
        box.close = "session closed";
        return;
      }
      default:
        reply(Err.unimplemented, undefined, -1);
        box.close = "unimplemented request";
    }
  }

  // ---- output ----

  private txn(session: Session | undefined, zxid: number): Txn {
    return {
      zxid,
      time: this.time,
      session: session?.id ?? 0,
      identities: session?.identities ?? [],
    };
  }

  /** Notifications for every session whose watches the events fire. */
  private fire(events: readonly ChangeEvent[]): void {
    if (events.length === 0) return;
    for (const [id, fired] of this.watches.trigger(events)) {
      const session = this.sessions.get(id);
      if (!session) continue;
      const box = this.outbox(session);
      for (const event of fired) box.frames.push(notificationFrame(event.type, event.path));
    }
  }

  private outbox(session: Session): Outbox {
    let box = this.outboxes.get(session.id);
    if (!box) this.outboxes.set(session.id, (box = new Outbox(session)));
    return box;
  }

  /** Every outbox left (other sessions'): pushes to their connections, numbered unless a bare close. */
  private flushOutboxes(): void {
    for (const { session, frames, close } of this.outboxes.values()) {
      const o = close !== undefined && frames.length === 0 ? undefined : ++session.out;
      const res = pack(this.message(o, frames, close));
      this.pushes.push({ c: session.c, g: session.g, res });
    }
    this.outboxes.clear();
  }

  private message(o: number | undefined, frames: Buffer[], close?: string): ConnectionMessage {
    return {
      t: "frames",
      ...(o === undefined ? {} : { o }),
      f: Buffer.concat(frames),
      ...(close === undefined ? {} : { close }),
      z: this.zxid,
      n: this.tree.nodeCount,
    };
  }
}

/**
 * The requests of a command's frames. A frame too short for a request header (the gateway
 * never forwards one) ends the list as an undecodable request.
 */
function decodeFrames(bytes: Uint8Array): ZkRequest[] {
  const all = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const reqs: ZkRequest[] = [];
  for (let at = 0; at < all.length;) {
    const length = at + 4 <= all.length ? all.readInt32BE(at) : -1;
    const end = at + 4 + length;
    if (length < 0 || end > all.length) break;
    try {
      reqs.push(decodeRequest(all.subarray(at + 4, end)));
    } catch {
      reqs.push({ xid: 0, type: 0, invalid: Err.marshallingError });
      break;
    }
    at = end;
  }
  return reqs;
}

function writeStrings(w: JuteWriter, strings: readonly string[]): void {
  w.int(strings.length);
  for (const s of strings) w.ustring(s);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}
