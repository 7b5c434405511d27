/**
 * Differential test of the ZooKeeper service (`tara start --topology zk`) against a real
 * ZooKeeper 3.8 ensemble (Debian's package, ./zookeeper-ensemble.ts): the same scripted request
 * sequences go over raw wire connections (./zk-wire.ts) to both, and every frame that comes back
 * is compared field by field, in order: replies (xid, err, the decoded body) and watch
 * notifications, including where they fall relative to the replies.
 *
 * What cannot be equal is compared relatively. Stat zxids (czxid, mzxid, pzxid) become their
 * rank among all Stat zxids of the script's transcript ("z3"), so "czxid == mzxid after create",
 * "mzxid increases after setData" and "the parent's pzxid is the child's czxid" must hold alike.
 * A reply header's zxid is placed among those ranks for successful writes ("z3", or "z2<z<z3"
 * for a write no Stat shows); for reads, failed writes (ZooKeeper logs them as error
 * transactions, taking a zxid; the spec allows the last applied one), ping, sync and auth it is
 * only its sign, plus whether it covers the Stat it returns and never goes back on a
 * connection. ctime/mtime: 0 or recent, and mtime against ctime. ephemeralOwner: 0, or which of
 * the script's sessions owns the node.
 *
 * Every script connects all its connections to one server (the ensemble's first, gateway 0),
 * waits for each reply before the next request, and ends with a ping on each open connection,
 * which flushes the notifications a server owes it: nothing here depends on timing beyond the
 * generous reply timeout. Each step also states the error and notifications the spec expects;
 * `ZK_DIFF=zookeeper` runs the scripts against the real ensemble alone to check those
 * (`ZK_DIFF=tara`: against Tara alone); by default both run and are compared.
 * `ZK_DIFF_PRINT=1` prints every transcript.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Err, OpCode, type Acl, type MultiWriteOp, type ZkOp } from "../../src/zk/types.js";
import { TestCluster, waitFor } from "./harness.js";
import { decodeBody, ZkWire, type Frame, type WireBody, type WireStat } from "./zk-wire.js";
import { startEnsemble, type Ensemble } from "../../src/bench/zookeeper-ensemble.js";

const SIDE = process.env.ZK_DIFF ?? "both";
if (!["both", "zookeeper", "tara"].includes(SIDE)) {
  throw new Error(`ZK_DIFF=${SIDE}: expected both, zookeeper or tara`);
}
const PRINT = process.env.ZK_DIFF_PRINT === "1";

// ---- Requests ----

const OPEN: Acl[] = [{ perms: 31, id: { scheme: "world", id: "anyone" } }];
const READ_ONLY: Acl[] = [{ perms: 1, id: { scheme: "world", id: "anyone" } }];
/** digest of "user:pw" (spec section 10). */
const USER_DIGEST = "user:2Om+GBbT2q/tS6pdvACZbbm7/1A=";
const USER_ALL: Acl[] = [{ perms: 31, id: { scheme: "digest", id: USER_DIGEST } }];
const HOUR = 3_600_000;

const bytes = (data: string | null) => (data === null ? null : Buffer.from(data, "utf8"));
const create = (path: string, data: string | null = "", flags = 0, acl: Acl[] = OPEN) =>
  ({ type: OpCode.create, path, data: bytes(data), acl, flags, ttl: -1 }) as const;
const create2 = (path: string, data: string | null = "", flags = 0, acl: Acl[] = OPEN) =>
  ({ ...create(path, data, flags, acl), type: OpCode.create2 }) as const;
const createContainer = (path: string, data: string | null = "") =>
  ({ ...create(path, data, 4), type: OpCode.createContainer }) as const;
const createTtl = (path: string, ttl: number, flags = 5) =>
  ({ ...create(path, "", flags), type: OpCode.createTTL, ttl }) as const;
const del = (path: string, version = -1) => ({ type: OpCode.delete, path, version }) as const;
const exists = (path: string, watch = false) => ({ type: OpCode.exists, path, watch }) as const;
const get = (path: string, watch = false) => ({ type: OpCode.getData, path, watch }) as const;
const set = (path: string, data: string | null, version = -1) =>
  ({ type: OpCode.setData, path, data: bytes(data), version }) as const;
const ls = (path: string, watch = false) => ({ type: OpCode.getChildren, path, watch }) as const;
const ls2 = (path: string, watch = false) => ({ type: OpCode.getChildren2, path, watch }) as const;
const getAcl = (path: string) => ({ type: OpCode.getACL, path }) as const;
const setAcl = (path: string, acl: Acl[], version = -1) =>
  ({ type: OpCode.setACL, path, acl, version }) as const;
const sync = (path: string) => ({ type: OpCode.sync, path }) as const;
const ping = () => ({ type: OpCode.ping }) as const;
const check = (path: string, version: number) => ({ type: OpCode.check, path, version }) as const;
const multi = (...ops: MultiWriteOp[]) => ({ type: OpCode.multi, ops }) as const;
const auth = (scheme: string, credentials: string) =>
  ({ type: OpCode.auth, scheme, auth: Buffer.from(credentials) }) as const;
const closeSession = () => ({ type: OpCode.closeSession }) as const;
/** A request header with an opcode ZooKeeper does not know, and no body. */
const unknownOp = (type: number) => ({ type, invalid: Err.unimplemented }) as const;

// ---- Scripts ----

type Conn = "a" | "b";
interface Step {
  readonly c: Conn;
  readonly op: ZkOp;
  /** The reply's err the spec expects. */
  readonly err: number;
  /** Notifications expected on this connection before the reply ("created /x", ...). */
  readonly events: readonly string[];
}
interface Script {
  readonly name: string;
  readonly steps: readonly Step[];
}

const a = (op: ZkOp, err = 0, ...events: string[]): Step => ({ c: "a", op, err, events });
const b = (op: ZkOp, err = 0, ...events: string[]): Step => ({ c: "b", op, err, events });
const {
  noNode,
  nodeExists,
  badVersion,
  notEmpty,
  noChildrenForEphemerals,
  badArguments,
  invalidAcl,
  noAuth,
  unimplemented,
  authFailed,
} = Err;

const EVENT_NAMES: Record<number, string> = {
  1: "created",
  2: "deleted",
  3: "changed",
  4: "children",
};

const SCRIPTS: Script[] = [
  {
    name: "create, get, set, delete with versions; null vs empty data",
    steps: [
      a(create("/crud", "hello")),
      a(get("/crud")),
      a(exists("/crud")),
      a(set("/crud", "v1", 0)),
      a(set("/crud", "v2", 0), badVersion),
      a(set("/crud", "v2", -1)),
      a(get("/crud")),
      a(set("/crud", "", 2)),
      a(get("/crud")),
      a(set("/crud", null, 3)),
      a(get("/crud")),
      a(del("/crud", 0), badVersion),
      a(del("/crud", 4)),
      a(exists("/crud"), noNode),
      a(get("/crud"), noNode),
      a(create2("/crud", null)),
      a(get("/crud")),
      a(create2("/crud-empty", "")),
      a(get("/crud-empty")),
      a(create("/crud-empty/child", "data")),
      a(exists("/crud-empty")),
      a(set("/crud-none", "x"), noNode),
      a(del("/crud-none"), noNode),
      a(del("/crud-none", 3), noNode),
    ],
  },
  {
    name: "create errors and their precedence",
    steps: [
      a(create("/cerr")),
      a(create("/cerr"), nodeExists),
      a(create2("/cerr"), nodeExists),
      a(create("/cerr/x/y"), noNode),
      a(create("noslash"), badArguments),
      a(create(""), badArguments),
      a(create("/cerr/"), badArguments),
      a(create("/cerr//b"), noNode),
      a(create("/cerr/\u0001x"), badArguments),
      a(create("/cerr/."), badArguments),
      a(create("/cerr/.."), badArguments),
      a(create("/cerr/\u{1F600}"), badArguments),
      a(create("/cerr/.ok"), 0),
      a(create("/cerr/ok.name..x")),
      a(create("/cerr/ä")),
      a(create("/cerr/flags", "", 99), badArguments),
      a(create("/cerr/flags", "", -1), badArguments),
      a(create("/cerr/noacl", "", 0, []), invalidAcl),
      a(
        create("/cerr/scheme", "", 0, [{ perms: 31, id: { scheme: "nope", id: "x" } }]),
        invalidAcl,
      ),
      a(create("/cerr/auth", "", 0, [{ perms: 31, id: { scheme: "auth", id: "" } }]), invalidAcl),
      a(create("/cerr/dg", "", 0, [{ perms: 31, id: { scheme: "digest", id: "x" } }]), invalidAcl),
      a(create("/cerr/missing/x", "", 0, []), invalidAcl),
      a(create("/cerr", "", 0, []), invalidAcl),
      a(create("/cerr/flags", "", 99, []), badArguments),
      a(create("/cerr/eph", "e", 1)),
      a(create("/cerr/eph/child"), noChildrenForEphemerals),
      a(create("/cerr/eph/child", "", 2), noChildrenForEphemerals),
      a(create("/cerr/eph"), nodeExists),
      a(ls2("/cerr")),
    ],
  },
  {
    name: "delete errors: BadVersion beats NotEmpty, special and bad paths",
    steps: [
      a(create("/del")),
      a(create("/del/c")),
      a(del("/del", 5), badVersion),
      a(del("/del", 0), notEmpty),
      a(del("/del"), notEmpty),
      a(del("/del/none"), noNode),
      a(del("/del/none/x"), noNode),
      a(del("/del/c/"), noNode),
      a(del("/zookeeper"), badArguments),
      a(del("/zookeeper/quota"), badArguments),
      a(del("/zookeeper/config"), badArguments),
      a(del("/"), badArguments),
      a(del("nopath"), badArguments),
      a(del("/del/c", 1), badVersion),
      a(del("/del/c", 0)),
      a(ls2("/del")),
      a(del("/del", 0)),
      a(exists("/del"), noNode),
    ],
  },
  {
    name: "setData and reads on bad paths",
    steps: [
      a(set("noslash", "x"), badArguments),
      a(set("/bad/", "x"), badArguments),
      a(get("noslash"), noNode),
      a(exists("/bad//x"), noNode),
      a(ls("/bad/"), noNode),
      a(getAcl("nopath"), noNode),
    ],
  },
  {
    name: "ACLs: digest auth, NoAuth, the auth scheme, ip, hidden digests, duplicates",
    steps: [
      a(auth("digest", "user:pw")),
      a(create("/acl", "secret", 0, USER_ALL)),
      a(get("/acl")),
      a(getAcl("/acl")),
      b(get("/acl"), noAuth),
      b(set("/acl", "x"), noAuth),
      b(create("/acl/child"), noAuth),
      b(getAcl("/acl"), noAuth),
      b(exists("/acl")),
      b(setAcl("/acl", OPEN), noAuth),
      b(ls("/acl"), noAuth),
      a(create("/acl/child")),
      b(del("/acl/child"), noAuth),
      a(create("/acl2", "", 0, [{ perms: 31, id: { scheme: "auth", id: "" } }])),
      a(getAcl("/acl2")),
      b(get("/acl2"), noAuth),
      a(
        create("/acl3", "r", 0, [
          ...READ_ONLY,
          { perms: 31, id: { scheme: "digest", id: USER_DIGEST } },
        ]),
      ),
      b(get("/acl3")),
      b(getAcl("/acl3")),
      b(set("/acl3", "x"), noAuth),
      b(create("/acl3/c"), noAuth),
      a(set("/acl3", "x")),
      a(create("/acl4", "", 0, [...OPEN, ...OPEN])),
      a(getAcl("/acl4")),
      a(create("/acl5", "", 0, [{ perms: 31, id: { scheme: "ip", id: "127.0.0.1" } }])),
      b(get("/acl5")),
      a(create("/acl6", "", 0, [{ perms: 31, id: { scheme: "ip", id: "10.0.0.0/8" } }])),
      b(get("/acl6"), noAuth),
    ],
  },
  {
    name: "getACL and setACL with aversion",
    steps: [
      a(create("/av", "d")),
      a(getAcl("/av")),
      a(setAcl("/av", READ_ONLY, 1), badVersion),
      a(setAcl("/av", [...READ_ONLY, { perms: 30, id: { scheme: "world", id: "anyone" } }], 0)),
      a(getAcl("/av")),
      a(setAcl("/av", OPEN, 0), badVersion),
      a(setAcl("/av", OPEN, 1)),
      a(exists("/av")),
      a(setAcl("/av", [], -1), invalidAcl),
      a(setAcl("/av", [{ perms: 31, id: { scheme: "digest", id: "nocolon" } }]), invalidAcl),
      a(setAcl("/av-none", OPEN), noNode),
      a(setAcl("/av-none", []), invalidAcl),
      a(getAcl("/av-none"), noNode),
      a(setAcl("/av", READ_ONLY)),
      a(set("/av", "x"), noAuth),
      a(setAcl("/av", OPEN), noAuth),
      a(get("/av")),
    ],
  },
  {
    name: "auth with an unknown scheme fails and closes",
    steps: [a(create("/authfail")), a(auth("nosuch", "x"), authFailed)],
  },
  {
    name: "sequential nodes: numbering after a plain child and after a delete",
    steps: [
      a(create("/seq")),
      a(create("/seq/plain")),
      a(create("/seq/s-", "", 2)),
      a(create("/seq/s-", "", 2)),
      a(del("/seq/s-0000000002")),
      a(create("/seq/s-", "", 2)),
      a(create("/seq/", "", 2)),
      a(create2("/seq/t-", "x", 2)),
      a(create("/seq/e-", "", 3)),
      a(multi(create("/seq/m-", "", 2), create("/seq/m-", "", 2))),
      a(ls("/seq")),
      a(ls2("/seq")),
      a(create("/seq/s-0000000010")),
      a(create("/seq/s-", "", 2), nodeExists),
      a(create("/seq/s-", "", 2), nodeExists),
      a(create("/seq/other")),
      a(create("/seq/s-", "", 2)),
      a(create("/seq2/x-", "", 2), noNode),
      a(create("/seq/", "", 0), badArguments),
    ],
  },
  {
    name: "ephemeral nodes and closeSession",
    steps: [
      a(create("/eph")),
      a(create("/eph2")),
      a(create("/eph/e", "x", 1)),
      a(create2("/eph2/e2", "", 1)),
      a(exists("/eph/e")),
      b(exists("/eph/e")),
      b(get("/eph/e")),
      b(create("/eph/b", "", 1)),
      a(ls2("/eph")),
      b(ls2("/eph", true)),
      b(exists("/eph/e", true)),
      a(closeSession()),
      b(ping(), 0, "deleted /eph/e", "children /eph"),
      b(ls2("/eph")),
      b(exists("/eph/e"), noNode),
      b(exists("/eph2/e2"), noNode),
      b(ls2("/eph2")),
    ],
  },
  {
    name: "containers and TTL nodes (create result only)",
    steps: [
      a(createContainer("/cont", "c")),
      a(createContainer("/cont"), nodeExists),
      a(createContainer("/cont-none/x"), noNode),
      a(createTtl("/ttl", HOUR)),
      a(createTtl("/ttl", HOUR), nodeExists),
      a(create("/ttls")),
      a(create("/ttls/plain")),
      a(createTtl("/ttls/t-", HOUR, 6)),
      a(createTtl("/ttls/t-", HOUR, 6)),
      a(createTtl("/ttl-zero", 0), badArguments),
      a(createTtl("/ttl-neg", -5), badArguments),
      a(createTtl("/ttl-huge", 2 ** 40), badArguments),
      a(createTtl("/ttl-mode", HOUR, 0), badArguments),
      a(createTtl("/ttl-eph", HOUR, 1), badArguments),
    ],
  },
  {
    name: "getChildren and getChildren2",
    steps: [
      a(create("/kids", "abc")),
      a(ls("/kids")),
      a(ls2("/kids")),
      a(create("/kids/b")),
      a(create("/kids/a")),
      a(create("/kids/c", "12345")),
      a(ls("/kids")),
      a(ls2("/kids")),
      a(del("/kids/b")),
      a(ls2("/kids")),
      a(get("/kids")),
      a(ls("/kids/none"), noNode),
      a(ls2("/kids/none"), noNode),
      a(ls("/zookeeper")),
    ],
  },
  {
    name: "exists watch on a missing node, then create: NodeCreated",
    steps: [
      a(exists("/w1", true), noNode),
      b(create("/w1", "x")),
      a(ping(), 0, "created /w1"),
      b(set("/w1", "y")),
      a(ping()),
      a(exists("/w1b", true), noNode),
      a(exists("/w1b", true), noNode),
      a(create("/w1b"), 0, "created /w1b"),
      a(exists("/w1c", true), noNode),
      b(create("/w1c")),
      b(del("/w1c")),
      a(ping(), 0, "created /w1c"),
    ],
  },
  {
    name: "data and child watches fire once and are deduplicated",
    steps: [
      a(create("/w2")),
      a(create("/w2/c")),
      b(get("/w2/c", true)),
      b(get("/w2/c", true)),
      b(exists("/w2/c", true)),
      b(ls("/w2/c", true)),
      b(ls2("/w2", true)),
      a(set("/w2/c", "1")),
      b(ping(), 0, "changed /w2/c"),
      a(set("/w2/c", "2")),
      b(ping()),
      b(get("/w2/c", true)),
      a(create("/w2/c/gc")),
      b(ping(), 0, "children /w2/c"),
      b(ls("/w2/c", true)),
      a(set("/w2/c/gc", "x")),
      b(ping()),
      a(del("/w2/c/gc")),
      b(ping(), 0, "children /w2/c"),
      b(ls2("/w2/c", true)),
      a(del("/w2/c")),
      b(ping(), 0, "deleted /w2/c", "children /w2"),
      a(create("/w2/c")),
      b(ping()),
      b(get("/w2/none", true), noNode),
      b(ls("/w2/none", true), noNode),
      a(create("/w2/none")),
      a(del("/w2/none")),
      b(ping()),
    ],
  },
  {
    name: "notifications come before the reply of a self-triggered write",
    steps: [
      a(create("/self", "x")),
      a(get("/self", true)),
      b(get("/self", true)),
      a(set("/self", "y"), 0, "changed /self"),
      b(ping(), 0, "changed /self"),
      a(set("/self", "z")),
      a(ls("/self", true)),
      a(create("/self/c"), 0, "children /self"),
      a(get("/self", true)),
      a(exists("/self/c", true)),
      a(ls("/self", true)),
      a(
        multi(set("/self", "w"), del("/self/c")),
        0,
        "changed /self",
        "deleted /self/c",
        "children /self",
      ),
      a(exists("/self/c", true), noNode),
      a(multi(create("/self/c"), set("/self/c", "v")), 0, "created /self/c"),
      a(get("/self/c", true)),
      a(del("/self/c"), 0, "deleted /self/c"),
    ],
  },
  {
    name: "multi: success, failure encoding, empty, no watches on failure",
    steps: [
      a(create("/m", "x")),
      a(multi(create("/m/a"), create2("/m/b", "b"), set("/m", "y"), check("/m", 1), del("/m/a"))),
      a(get("/m")),
      a(ls2("/m")),
      b(get("/m", true)),
      b(ls("/m", true)),
      a(multi(check("/m", 1), check("/m", 0), create("/m/c"))),
      a(exists("/m/c"), noNode),
      b(ping()),
      a(multi()),
      a(multi(create("/m/c"), create("/m/c"))),
      a(multi(del("/m/none"))),
      a(multi(set("/m", "z", 7), create("/m/x", "", 0, []))),
      a(multi(create("/m/x", "", 0, []), set("/m", "z", 7))),
      a(multi(create("/m/p"), create("/m/p/q"), del("/m/p"))),
      a(multi(createContainer("/m/cc"), createTtl("/m/tt", HOUR))),
      b(ping(), 0, "children /m"),
      a(multi(create("/m/s-", "", 2), create("/m/e", "", 1), check("/m/e", 0))),
      a(exists("/m/e")),
      b(ls("/m", true)),
      a(multi(set("/m", "w"), del("/m/b")), 0),
      b(ping(), 0, "changed /m", "children /m"),
      a(ls2("/m")),
      a(multi(check("/m", 2), set("/m", "v", 2), check("/m", 3))),
      a(multi(check("/m/none", -1)), 0),
    ],
  },
  {
    name: "sync and ping",
    steps: [
      a(ping()),
      a(sync("/")),
      a(create("/sync")),
      a(sync("/sync")),
      a(sync("/sync-none")),
      a(ping()),
      a(get("/sync")),
    ],
  },
  {
    name: "unknown opcode: Unimplemented, then the connection closes",
    steps: [a(create("/unknown")), a(unknownOp(999), unimplemented)],
  },
];

// ---- Running a script ----

interface Received {
  readonly frame: Frame;
  /** For a reply: the type of the request it answers (undefined: no such request pending). */
  readonly type?: number;
  /** For a reply: whether it answers the oldest pending request. */
  readonly inOrder?: boolean;
}
interface StepRecord {
  readonly label: string;
  readonly received: Received[];
  readonly skipped?: string;
}
interface Transcript {
  readonly sessions: Partial<Record<Conn, bigint>>;
  readonly connects: Record<string, unknown>;
  readonly steps: StepRecord[];
}

/** Whether the server closes the connection after answering this step. */
function closes(step: Step): boolean {
  return (
    step.op.type === OpCode.closeSession || "invalid" in step.op || step.err === Err.authFailed
  );
}

function label(step: Step | { c: Conn; op: ZkOp }): string {
  const op = step.op;
  const name = Object.entries(OpCode).find(([, code]) => code === op.type)?.[0] ?? `op${op.type}`;
  const path = "path" in op ? ` ${op.path}` : "";
  return `${step.c} ${name}${path}`;
}

async function runScript(port: number, script: Script): Promise<Transcript> {
  const used = [...new Set(script.steps.map((step) => step.c))].sort();
  const conns = new Map<Conn, ZkWire>();
  const transcript: Transcript = { sessions: {}, connects: {}, steps: [] };
  const closedSessions = new Set<Conn>();
  try {
    for (const c of used) {
      const wire = await ZkWire.connect(port);
      conns.set(c, wire);
      const session = wire.session!;
      transcript.sessions[c] = session.sessionId;
      transcript.connects[c] = {
        protocolVersion: session.protocolVersion,
        timeOut: session.timeOut,
        sessionId: session.sessionId === 0n ? "0" : "nonzero",
        passwd: session.passwd.length,
        readOnly: session.readOnly,
      };
    }
    const run = async (step: { c: Conn; op: ZkOp }, expectClose: boolean) => {
      const wire = conns.get(step.c)!;
      if (wire.closed) {
        transcript.steps.push({ label: label(step), received: [], skipped: "connection closed" });
        return;
      }
      const sent = wire.send(step.op);
      const received: Received[] = [];
      for (;;) {
        const frame = await wire.next();
        if (frame.kind !== "reply") {
          received.push({ frame });
          if (frame.kind === "notification") continue;
          break;
        }
        const oldest = wire.oldestPending();
        const request = wire.answered(frame.xid);
        received.push({ frame, type: request?.type, inOrder: request === oldest });
        if (frame.xid !== sent.xid) continue;
        if (expectClose) received.push({ frame: await wire.next() });
        break;
      }
      transcript.steps.push({ label: label(step), received });
    };
    for (const step of script.steps) {
      await run(step, closes(step));
      if (step.op.type === OpCode.closeSession) closedSessions.add(step.c);
    }
    // Flush what each open connection is owed, then leave.
    for (const c of used) {
      if (!conns.get(c)!.closed) await run({ c, op: ping() }, false);
    }
    // End every session, also those whose connection the server closed (auth failure, unknown
    // opcode): one left to expire would change the zxids of a later script at a random time.
    for (const c of used) {
      const wire = conns.get(c)!;
      if (!wire.closed) {
        await wire.closeSession();
      } else if (!closedSessions.has(c)) {
        const again = await ZkWire.connect(port, {
          sessionId: wire.session!.sessionId,
          passwd: wire.session!.passwd,
        }).catch(() => undefined);
        await again?.closeSession();
      }
    }
  } finally {
    for (const wire of conns.values()) wire.destroy();
  }
  return transcript;
}

// ---- Canonical form ----

const WRITES = new Set<number>([
  OpCode.create,
  OpCode.create2,
  OpCode.createContainer,
  OpCode.createTTL,
  OpCode.delete,
  OpCode.setData,
  OpCode.setACL,
  OpCode.multi,
  OpCode.closeSession,
]);

function statsOf(body: WireBody): WireStat[] {
  const stats = body.stat ? [body.stat] : [];
  for (const result of body.results ?? []) if (result.stat) stats.push(result.stat);
  return stats;
}

interface Decoded {
  readonly received: Received;
  readonly body?: WireBody;
  readonly decodeError?: string;
}

/** The transcript with reply bodies decoded, in canonical (comparable) form, one per step. */
function canonical(transcript: Transcript): { connects: unknown; steps: unknown[] } {
  const decoded = transcript.steps.map((step) =>
    step.received.map((received): Decoded => {
      const { frame, type } = received;
      if (frame.kind !== "reply" || type === undefined) return { received };
      try {
        return { received, body: decodeBody(type, frame.err, frame.body) };
      } catch (error) {
        return { received, decodeError: (error as Error).message };
      }
    }),
  );
  const zxids = new Set<bigint>();
  for (const step of decoded) {
    for (const { body } of step) {
      for (const stat of body ? statsOf(body) : []) {
        for (const z of [stat.czxid, stat.mzxid, stat.pzxid]) if (z !== 0n) zxids.add(z);
      }
    }
  }
  const ranked = [...zxids].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const rank = (z: bigint): string => {
    if (z <= 0n) return `${z}`;
    const i = ranked.findIndex((r) => r >= z);
    if (i >= 0 && ranked[i] === z) return `z${i + 1}`;
    if (i < 0) return ranked.length === 0 ? "z>0" : `z${ranked.length}<z`;
    return i === 0 ? `0<z<z1` : `z${i}<z<z${i + 1}`;
  };
  const now = BigInt(Date.now());
  const time = (t: bigint) =>
    t === 0n ? 0 : t > now - 86_400_000n && t < now + 86_400_000n ? "recent" : `raw ${t}`;
  const owner = (id: bigint) => {
    if (id === 0n) return 0;
    for (const [c, session] of Object.entries(transcript.sessions)) {
      if (session === id) return `session ${c}`;
    }
    return `other 0x${id.toString(16)}`;
  };
  const stat = (s: WireStat) => ({
    czxid: rank(s.czxid),
    mzxid: rank(s.mzxid),
    pzxid: rank(s.pzxid),
    ctime: time(s.ctime),
    // Created by this very transaction or changed since (possibly within the same ms).
    mtime:
      s.mzxid === s.czxid
        ? s.mtime === s.ctime
          ? "=ctime"
          : `${s.mtime - s.ctime} ms from ctime, same zxid`
        : s.mtime >= s.ctime
          ? ">=ctime"
          : "<ctime",
    version: s.version,
    cversion: s.cversion,
    aversion: s.aversion,
    ephemeralOwner: owner(s.ephemeralOwner),
    dataLength: s.dataLength,
    numChildren: s.numChildren,
  });
  const data = (d: Buffer | null | undefined) =>
    d === undefined
      ? undefined
      : d === null
        ? null
        : /^[\x20-\x7e]*$/.test(d.toString("latin1"))
          ? `'${d.toString("latin1")}'`
          : `hex ${d.toString("hex")}`;

  const lastZxid = new Map<string, bigint>();
  /** The zxid of the last write, while no failed write came after it. */
  let lastWrite: bigint | undefined;
  const steps = transcript.steps.map((step, s) => {
    const conn = step.label[0]!;
    const frames = decoded[s]!.map(({ received, body, decodeError }) => {
      const { frame } = received;
      if (frame.kind === "closed") return "closed";
      if (frame.kind === "timeout") return `no frame in ${frame.ms} ms`;
      if (frame.kind === "notification") {
        const e = frame.event;
        const header =
          frame.xid === -1 && frame.zxid === -1n && frame.err === 0
            ? ""
            : ` header {${frame.xid}, ${frame.zxid}, ${frame.err}}`;
        const extra = frame.extra === 0 ? "" : ` +${frame.extra} bytes`;
        return `${EVENT_NAMES[e.type] ?? `type ${e.type}`} ${e.path} state ${e.state}${header}${extra}`;
      }
      const type = received.type;
      const out: Record<string, unknown> = { xid: frame.xid, err: frame.err };
      if (type === undefined) out.unexpected = "no pending request has this xid";
      else if (!received.inOrder) out.order = "answers a later request first";
      const isWrite = type !== undefined && WRITES.has(type);
      const failedMulti = body?.results?.some((r) => r.type === OpCode.error) ?? false;
      const emptyMulti = type === OpCode.multi && body?.results?.length === 0;
      const z = frame.zxid;
      if (isWrite && frame.err === 0 && !failedMulti && !emptyMulti) {
        out.zxid = rank(z);
        lastWrite = z;
      } else {
        // A failed write (or an empty multi) is an error transaction with its own zxid in
        // ZooKeeper; the spec lets us answer with the last applied one instead. Until the next
        // successful write, other replies' zxids are then only checked for their sign.
        if (isWrite) lastWrite = undefined;
        if (z <= 0n) out.zxid = `${z}`;
        else if (lastWrite === undefined) out.zxid = "positive";
        else {
          out.zxid =
            z === lastWrite ? "=last write" : z > lastWrite ? ">last write" : "<last write";
        }
        const covered = body ? statsOf(body) : [];
        if (covered.some((st) => st.czxid > z || st.mzxid > z || st.pzxid > z)) {
          out.zxidBelowItsStat = true;
        }
      }
      if (z > 0n) {
        const previous = lastZxid.get(conn);
        if (previous !== undefined && z < previous) out.zxidWentBack = true;
        lastZxid.set(conn, z);
      }
      if (decodeError !== undefined) out.decodeError = decodeError;
      if (body) {
        if (body.path !== undefined) out.path = body.path;
        if (body.data !== undefined) out.data = data(body.data);
        if (body.children !== undefined) out.children = [...body.children].sort();
        if (body.acl !== undefined) {
          out.acl = body.acl.map((acl) => `${acl.id.scheme}:${acl.id.id}=${acl.perms}`);
        }
        if (body.stat !== undefined) out.stat = stat(body.stat);
        if (body.results !== undefined) {
          out.results = body.results.map((r) => {
            const result: Record<string, unknown> = { type: r.type, err: r.err };
            if (r.path !== undefined) result.path = r.path;
            if (r.data !== undefined) result.data = data(r.data);
            if (r.children !== undefined) result.children = [...r.children].sort();
            if (r.stat !== undefined) result.stat = stat(r.stat);
            return result;
          });
        }
        if (body.extra !== 0) out.extraBytes = body.extra;
      }
      return out;
    });
    return { step: step.label, ...(step.skipped ? { skipped: step.skipped } : {}), frames };
  });
  return { connects: transcript.connects, steps };
}

/** Where a transcript departs from what the script says the spec expects. */
function unexpected(script: Script, transcript: Transcript): string[] {
  const problems: string[] = [];
  script.steps.forEach((step, i) => {
    const record = transcript.steps[i];
    const where = `step ${i + 1} (${label(step)})`;
    if (!record || record.skipped) {
      problems.push(`${where}: not run (${record?.skipped ?? "missing"})`);
      return;
    }
    const frames = record.received.map((r) => r.frame);
    const reply = frames.find((f) => f.kind === "reply");
    const events = frames.flatMap((f) =>
      f.kind === "notification"
        ? [`${EVENT_NAMES[f.event.type] ?? f.event.type} ${f.event.path}`]
        : [],
    );
    if (!reply) {
      problems.push(`${where}: no reply (${frames.map((f) => f.kind).join(", ")})`);
    } else {
      if (reply.err !== step.err) problems.push(`${where}: err ${reply.err}, expected ${step.err}`);
      const notificationsBefore = frames.slice(0, frames.indexOf(reply));
      if (notificationsBefore.length !== events.length) {
        problems.push(`${where}: notifications after the reply`);
      }
    }
    if (JSON.stringify(events) !== JSON.stringify(step.events)) {
      problems.push(
        `${where}: events ${JSON.stringify(events)}, expected ${JSON.stringify(step.events)}`,
      );
    }
    if (closes(step) && frames.at(-1)?.kind !== "closed") {
      problems.push(`${where}: the connection stayed open`);
    }
  });
  // The final pings must find nothing owed.
  for (const record of transcript.steps.slice(script.steps.length)) {
    const extra = record.received.filter((r) => r.frame.kind !== "reply");
    if (extra.length > 0) {
      problems.push(
        `final ${record.label}: ${extra.map((r) => JSON.stringify(describeFrame(r.frame))).join(", ")}`,
      );
    }
  }
  return problems;
}

function describeFrame(frame: Frame): unknown {
  if (frame.kind === "notification") return `${EVENT_NAMES[frame.event.type]} ${frame.event.path}`;
  if (frame.kind === "reply") return { xid: frame.xid, err: frame.err };
  return frame.kind;
}

/** The steps where the two canonical transcripts differ, each with both versions. */
function differences(expected: ReturnType<typeof canonical>, actual: ReturnType<typeof canonical>) {
  const out: string[] = [];
  if (JSON.stringify(expected.connects) !== JSON.stringify(actual.connects)) {
    out.push(
      `connect:\n  zookeeper: ${JSON.stringify(expected.connects)}\n  tara:      ${JSON.stringify(actual.connects)}`,
    );
  }
  const n = Math.max(expected.steps.length, actual.steps.length);
  for (let i = 0; i < n; i++) {
    const zk = JSON.stringify(expected.steps[i]);
    const tara = JSON.stringify(actual.steps[i]);
    if (zk !== tara) out.push(`step ${i + 1}:\n  zookeeper: ${zk}\n  tara:      ${tara}`);
  }
  return out;
}

// ---- The test ----

let ensemble: Ensemble | undefined;
let cluster: TestCluster | undefined;
let zkPort = 0;
let taraPort = 0;
let failed = false;

async function startTara(): Promise<void> {
  cluster = await TestCluster.start(["--topology", "zk", "--gateway-port", "0"]);
  const clusterFile = join(cluster.dataDir, "cluster.json");
  const gateways = await waitFor("the gateways' addresses", () => {
    if (!existsSync(clusterFile)) return undefined;
    const info = JSON.parse(readFileSync(clusterFile, "utf8")) as { gateways?: string[] };
    return info.gateways;
  });
  taraPort = Number(gateways[0]!.split(":").at(-1));
  // The service is up once it opens a session.
  await waitFor("a session on gateway 0", async () => {
    const wire = await ZkWire.connect(taraPort, { timeoutMs: 5000 });
    await wire.closeSession();
    return wire.sessionId !== 0n;
  });
}

async function startZooKeeper(): Promise<void> {
  ensemble = await startEnsemble();
  zkPort = ensemble.servers[0]!.port;
}

before(async () => {
  const started = await Promise.allSettled([
    SIDE !== "tara" ? startZooKeeper() : undefined,
    SIDE !== "zookeeper" ? startTara() : undefined,
  ]);
  for (const result of started) if (result.status === "rejected") throw result.reason;
});

after(async () => {
  await Promise.all([ensemble?.stop(), cluster?.stop()]);
  // Tara's data directory (its logs) stays for a look after a failure.
  if (cluster && !failed) rmSync(cluster.dataDir, { recursive: true, force: true });
});

describe(`ZooKeeper wire protocol: Tara against real ZooKeeper 3.8 (${SIDE})`, () => {
  for (const script of SCRIPTS) {
    it(script.name, async () => {
      const problems: string[] = [];
      const results: Partial<Record<"zookeeper" | "tara", ReturnType<typeof canonical>>> = {};
      for (const [side, port] of [
        ["zookeeper", zkPort],
        ["tara", taraPort],
      ] as const) {
        if (SIDE !== "both" && SIDE !== side) continue;
        const transcript = await runScript(port, script);
        results[side] = canonical(transcript);
        if (PRINT)
          console.log(`--- ${side}: ${script.name}\n${JSON.stringify(results[side], null, 1)}`);
        for (const problem of unexpected(script, transcript)) problems.push(`${side}: ${problem}`);
      }
      if (results.zookeeper && results.tara) {
        problems.push(...differences(results.zookeeper, results.tara));
      }
      if (problems.length > 0) {
        failed = true;
        if (cluster) problems.push(`(Tara's logs: ${join(cluster.dataDir, "logs")})`);
      }
      assert.equal(problems.length, 0, `${script.name}:\n${problems.join("\n")}`);
    });
  }
});
