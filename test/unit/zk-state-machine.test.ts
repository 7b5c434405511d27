import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { unpack } from "msgpackr";
import type { Applied, Execution } from "../../src/tara/state-machine.js";
import {
  encodeCommand,
  encodeRequests,
  type ConnectReply,
  type ConnectionMessage,
  type ZkCommand,
} from "../../src/zk/commands.js";
import { JuteReader } from "../../src/zk/jute.js";
import { decodeReplyHeader, decodeWatcherEvent, readStat } from "../../src/zk/protocol.js";
import { Err, EventType, OPEN_ACL, type ZkRequest } from "../../src/zk/types.js";
import { ZkStateMachine } from "../../src/zk/zk-state-machine.js";

/** A decoded frame: a reply (header + body reader) or a notification. */
type Frame =
  | { kind: "reply"; xid: number; zxid: bigint; err: number; body: JuteReader }
  | { kind: "event"; type: number; path: string };

function framesOf(bytes: Uint8Array): Frame[] {
  const frames: Frame[] = [];
  const all = Buffer.from(bytes);
  for (let at = 0; at < all.length;) {
    const length = all.readInt32BE(at);
    const reader = new JuteReader(all.subarray(at + 4, at + 4 + length));
    at += 4 + length;
    const header = decodeReplyHeader(reader);
    if (header.xid === -1) {
      const event = decodeWatcherEvent(reader);
      frames.push({ kind: "event", type: event.type, path: event.path });
    } else frames.push({ kind: "reply", ...header, body: reader });
  }
  return frames;
}

/** Drives the state machine as TARA would: one command at a time, with the leader's time. */
class Harness {
  readonly machine = new ZkStateMachine({ tickTime: 1000, containerCheckMs: 60_000 });
  time = 1_000_000;
  private s = 0;
  private nextClient = 1;

  run(command: ZkCommand, c: number, g = 0): Applied {
    const execution: Execution = { s: ++this.s, time: this.time, c, g };
    return this.machine.apply(encodeCommand(command), execution);
  }

  connect(options: { session?: number; passwd?: Uint8Array; g?: number } = {}) {
    const c = this.nextClient++;
    const applied = this.run(
      {
        t: "connect",
        session: options.session ?? 0,
        passwd: options.passwd ?? Buffer.alloc(16),
        timeout: 2000,
        lastZxid: 0,
        newPasswd: Buffer.alloc(16, c),
        ip: "127.0.0.1",
      },
      c,
      options.g,
    );
    return { c, reply: unpack(applied.reply) as ConnectReply, applied };
  }

  send(session: number, c: number, reqs: ZkRequest[], g = 0) {
    const applied = this.run({ t: "requests", session, frames: encodeRequests(reqs) }, c, g);
    const message = unpack(applied.reply) as ConnectionMessage;
    const pushes = (applied.pushes ?? []).map((p) => ({
      ...p,
      message: unpack(p.res) as ConnectionMessage,
    }));
    return { message, frames: framesOf(message.f), pushes };
  }
}

function session(reply: ConnectReply): number {
  assert.equal(reply.t, "connected");
  return (reply as Extract<ConnectReply, { t: "connected" }>).session;
}

const create = (xid: number, path: string, flags = 0): ZkRequest => ({
  xid,
  type: 1,
  path,
  data: Buffer.from("v"),
  acl: OPEN_ACL,
  flags,
  ttl: -1,
});

describe("ZooKeeper state machine", () => {
  it("numbers a connection's messages and puts a watch's notification before the reply that fired it", () => {
    const h = new Harness();
    const a = h.connect();
    const sa = session(a.reply);
    const b = h.connect();
    const sb = session(b.reply);
    h.send(sa, a.c, [create(1, "/n")]);
    const watched = h.send(sb, b.c, [{ xid: 1, type: 4, path: "/n", watch: true }]);
    assert.equal(watched.message.o, 1);
    h.send(sa, a.c, [{ xid: 2, type: 4, path: "/n", watch: true }]); // a watches too

    // a changes /n: a's own notification precedes its reply; b gets a numbered push.
    const set = h.send(sa, a.c, [{ xid: 3, type: 5, path: "/n", data: null, version: -1 }]);
    assert.deepEqual(
      set.frames.map((f) => (f.kind === "event" ? `event ${f.type} ${f.path}` : `reply ${f.xid}`)),
      [`event ${EventType.nodeDataChanged} /n`, "reply 3"],
    );
    assert.equal(set.message.o, 3);
    assert.equal(set.pushes.length, 1);
    const push = set.pushes[0]!;
    assert.equal(push.c, b.c);
    assert.equal(push.message.o, 2);
    assert.deepEqual(framesOf(push.message.f), [
      { kind: "event", type: EventType.nodeDataChanged, path: "/n" },
    ]);

    // One-shot: the next change notifies nobody.
    const again = h.send(sa, a.c, [{ xid: 4, type: 5, path: "/n", data: null, version: -1 }]);
    assert.equal(again.pushes.length, 0);
    assert.deepEqual(
      again.frames.map((f) => f.kind),
      ["reply"],
    );
  });

  it("gives every write the next zxid and answers reads with the last one", () => {
    const h = new Harness();
    const a = h.connect();
    const sa = session(a.reply);
    const created = h.send(sa, a.c, [create(1, "/x"), create(2, "/x"), create(3, "/y")]);
    const [first, failed, third] = created.frames as Extract<Frame, { kind: "reply" }>[];
    assert.equal(first!.err, 0);
    assert.equal(failed!.err, Err.nodeExists);
    assert.ok(failed!.zxid > first!.zxid, "a failed write takes a zxid too");
    assert.ok(third!.zxid > failed!.zxid);
    const read = h.send(sa, a.c, [{ xid: 4, type: 3, path: "/y", watch: false }]);
    const reply = read.frames[0] as Extract<Frame, { kind: "reply" }>;
    assert.equal(reply.zxid, third!.zxid);
    assert.equal(Number(readStat(reply.body).czxid), Number(third!.zxid));
  });

  it("re-attaches a session with its password, refuses a wrong one, closes the old connection", () => {
    const h = new Harness();
    const a = h.connect();
    const sa = session(a.reply);
    const passwd = (a.reply as Extract<ConnectReply, { t: "connected" }>).passwd;
    h.send(sa, a.c, [create(1, "/eph", 1)]);

    const wrong = h.connect({ session: sa, passwd: Buffer.alloc(16, 99) });
    assert.deepEqual(wrong.reply, { t: "refused", reason: "expired", z: h.machine.lastZxid });

    const moved = h.connect({ session: sa, passwd, g: 1 });
    assert.equal(session(moved.reply), sa);
    const closes = (moved.applied.pushes ?? []).map((p) => ({
      c: p.c,
      message: unpack(p.res) as ConnectionMessage,
    }));
    assert.equal(closes.length, 1);
    assert.equal(closes[0]!.c, a.c);
    assert.match(closes[0]!.message.close ?? "", /moved/);

    // The old connection is closed without a reply; the ephemeral node survives the move.
    const stale = h.send(sa, a.c, [{ xid: 2, type: 11 }]);
    assert.equal(stale.frames.length, 0);
    assert.match(stale.message.close ?? "", /moved/);
    const check = h.send(sa, moved.c, [{ xid: 3, type: 3, path: "/eph", watch: false }], 1);
    assert.equal((check.frames[0] as Extract<Frame, { kind: "reply" }>).err, 0);
  });

  it("expires a silent session at the first command after its deadline: its ephemerals go, watchers hear it", () => {
    const h = new Harness();
    const a = h.connect();
    const sa = session(a.reply);
    const b = h.connect();
    const sb = session(b.reply);
    h.send(sa, a.c, [create(1, "/eph", 1)]);
    h.send(sb, b.c, [{ xid: 1, type: 3, path: "/eph", watch: true }]);

    h.time += 1500; // b stays alive; a is silent
    h.send(sb, b.c, [{ xid: 2, type: 11 }]);
    h.time += 1000; // a's deadline (2000 ms after its last request) is past, b's is not
    const ping = h.send(sb, b.c, [{ xid: 3, type: 11 }]);
    assert.deepEqual(
      ping.frames.map((f) => (f.kind === "event" ? `event ${f.type} ${f.path}` : `reply ${f.xid}`)),
      [`event ${EventType.nodeDeleted} /eph`, "reply 3"],
    );
    const closed = ping.pushes.find((p) => p.c === a.c);
    assert.ok(closed, "the expired session's connection is closed");
    assert.match(closed.message.close ?? "", /expired/);

    const late = h.send(sa, a.c, [{ xid: 2, type: 11 }]);
    assert.equal((late.frames[0] as Extract<Frame, { kind: "reply" }>).err, Err.sessionExpired);
    const { passwd } = a.reply as Extract<ConnectReply, { t: "connected" }>;
    assert.equal(h.connect({ session: sa, passwd }).reply.t, "refused");
  });

  it("refuses a client that has seen a later zxid than the service", () => {
    const h = new Harness();
    const applied = h.run(
      {
        t: "connect",
        session: 0,
        passwd: Buffer.alloc(16),
        timeout: 2000,
        lastZxid: 5,
        newPasswd: Buffer.alloc(16, 1),
        ip: "127.0.0.1",
      },
      1,
    );
    assert.deepEqual(unpack(applied.reply), { t: "refused", reason: "behind", z: 0 });
  });

  it("restores from a snapshot to the same bytes and the same behaviour", () => {
    const h = new Harness();
    const a = h.connect();
    const sa = session(a.reply);
    h.send(sa, a.c, [create(1, "/p"), create(2, "/p/q", 2), create(3, "/e", 1)]);
    h.send(sa, a.c, [{ xid: 4, type: 12, path: "/p", watch: true }]);
    const bytes = h.machine.snapshot();
    const copy = new ZkStateMachine({ tickTime: 1000, containerCheckMs: 60_000 });
    copy.restore(bytes);
    assert.deepEqual(Buffer.from(copy.snapshot()), Buffer.from(bytes));
    const command = encodeCommand({
      t: "requests",
      session: sa,
      frames: encodeRequests([create(5, "/p/q", 2)]),
    });
    const execution: Execution = { s: 99, time: h.time, c: a.c, g: 0 };
    const original = h.machine.apply(command, execution);
    const restored = copy.apply(command, execution);
    assert.deepEqual(Buffer.from(restored.reply), Buffer.from(original.reply));
    assert.deepEqual(Buffer.from(copy.snapshot()), Buffer.from(h.machine.snapshot()));
  });

  it("answers a command it cannot read with a close, never an exception", () => {
    const h = new Harness();
    const applied = h.machine.apply(Buffer.from([0xc1, 0xff, 0x00]), {
      s: 1,
      time: 1,
      c: 1,
      g: 0,
    });
    const message = unpack(applied.reply) as ConnectionMessage;
    assert.ok(message.close);
  });
});
