/**
 * The ZooKeeper data tree: Stat maintenance, create modes, every error of ZooKeeper 3.8 in its
 * precedence, ACLs, multi atomicity and result encoding, sessions, container/TTL expiry and
 * canonical snapshots (../shared/ZOOKEEPER.md sections 7-11).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pack, unpack } from "msgpackr";
import { digestIdentity, maskDigests, normalizeAcl, permitted } from "../../src/zk/acl.js";
import {
  DataTree,
  MAX_TTL,
  type ChangeEvent,
  type CreateResult,
  type Txn,
} from "../../src/zk/data-tree.js";
import { basename, parentOf, validatePath } from "../../src/zk/paths.js";
import {
  CreateFlag,
  Err,
  EventType,
  OPEN_ACL,
  Perm,
  type Acl,
  type CreateOp,
  type Id,
  type MultiWriteOp,
  type Stat,
} from "../../src/zk/types.js";
import { int, pick, withSeed, type Random } from "./helpers/random.js";

const USER: Id = { scheme: "digest", id: digestIdentity("user:pw") };
const OTHER: Id = { scheme: "digest", id: digestIdentity("other:pw") };

/** Hands out increasing zxids; time is zxid * 10 so that both are checkable. */
class Clock {
  zxid = 0;
  txn(session = 1, identities: readonly Id[] = []): Txn {
    this.zxid++;
    return { zxid: this.zxid, time: this.zxid * 10, session, identities };
  }
}

function createOp(path: string, opts: Partial<CreateOp> = {}): CreateOp {
  return { type: 1, path, data: new Uint8Array(0), acl: OPEN_ACL, flags: 0, ttl: -1, ...opts };
}

function acl(perms: number, scheme: string, id: string): Acl {
  return { perms, id: { scheme, id } };
}

/** A tree with its clock and helpers that assert success. */
function setup() {
  const tree = new DataTree();
  const clock = new Clock();
  const events: ChangeEvent[] = [];
  const create = (path: string, opts: Partial<CreateOp> = {}, session = 1, ids: Id[] = []) =>
    tree.create(createOp(path, opts), clock.txn(session, ids), events);
  const mustCreate = (path: string, opts: Partial<CreateOp> = {}, session = 1) => {
    const r = create(path, opts, session);
    assert.equal(r.err, 0, `create ${path}`);
    return r as Extract<CreateResult, { err: 0 }>;
  };
  const del = (path: string, version = -1, ids: Id[] = []) =>
    tree.delete({ type: 2, path, version }, clock.txn(1, ids), events).err;
  const setData = (path: string, data: Uint8Array | null, version = -1, ids: Id[] = []) =>
    tree.setData({ type: 5, path, data, version }, clock.txn(1, ids), events);
  const stat = (path: string): Stat => {
    const s = tree.stat(path);
    assert.ok(s, `stat ${path}`);
    return s;
  };
  return { tree, clock, events, create, mustCreate, del, setData, stat };
}

const bytes = (text: string) => new Uint8Array(Buffer.from(text));
const snap = (tree: DataTree) => Buffer.from(tree.snapshot());

describe("paths", () => {
  it("validatePath follows PathUtils", () => {
    for (const good of ["/", "/a", "/a/b", "/.foo", "/..f", "/f.c", "/ä", "/a.", "/a..", "/a/.b"]) {
      assert.equal(validatePath(good), true, good);
    }
    const bad = ["", "a", "/a/", "//", "/a//b", "/.", "/..", "/a/.", "/a/../b", "/a\0b"];
    bad.push("/\u0001x", "/\u007f", "/\u009f", "/😀", "/\ue000", "/\ufff0", "/\uffff");
    for (const path of bad) assert.equal(validatePath(path), false, JSON.stringify(path));
  });

  it("parentOf and basename split at the last slash", () => {
    assert.equal(parentOf("/a"), "/");
    assert.equal(parentOf("/a/b"), "/a");
    assert.equal(parentOf("/a//b"), "/a/");
    assert.equal(basename("/a/b"), "b");
    assert.equal(basename("/a"), "a");
  });
});

describe("acl", () => {
  it("digestIdentity is user:base64(sha1(user:password))", () => {
    assert.equal(digestIdentity("user:pw"), "user:2Om+GBbT2q/tS6pdvACZbbm7/1A=");
    assert.equal(USER.id, "user:2Om+GBbT2q/tS6pdvACZbbm7/1A=");
  });

  it("normalizeAcl validates, expands auth and removes duplicates", () => {
    const world = acl(Perm.all, "world", "anyone");
    assert.deepEqual(normalizeAcl([world, world], []), [world]);
    assert.equal(normalizeAcl([], []), undefined);
    assert.equal(normalizeAcl([acl(1, "world", "someone")], []), undefined);
    assert.equal(normalizeAcl([acl(1, "sasl", "x")], []), undefined);
    assert.equal(normalizeAcl([acl(1, "digest", "user")], []), undefined);
    assert.equal(normalizeAcl([acl(1, "digest", "a:b:c")], []), undefined);
    assert.equal(normalizeAcl([acl(1, "digest", "user:")], []), undefined);
    assert.deepEqual(normalizeAcl([acl(1, "digest", "u:h")], []), [acl(1, "digest", "u:h")]);
    for (const id of ["1.2.3", "1.2.3.256", "a.b.c.d", "10.0.0.0/33", "10.0.0.0/x", "::1"]) {
      assert.equal(normalizeAcl([acl(1, "ip", id)], []), undefined, id);
    }
    assert.deepEqual(normalizeAcl([acl(1, "ip", "10.0.0.0/8")], []), [acl(1, "ip", "10.0.0.0/8")]);
    // auth: one entry per authenticated identity; an ip identity does not count.
    const ip: Id = { scheme: "ip", id: "127.0.0.1" };
    assert.equal(normalizeAcl([acl(Perm.read, "auth", "")], [ip]), undefined);
    assert.deepEqual(normalizeAcl([acl(Perm.read, "auth", "")], [ip, USER, OTHER]), [
      { perms: Perm.read, id: USER },
      { perms: Perm.read, id: OTHER },
    ]);
  });

  it("permitted matches world, digest identities, ip CIDRs and super", () => {
    const ip = (id: string): Id => ({ scheme: "ip", id });
    assert.equal(permitted(OPEN_ACL, Perm.write, []), true);
    assert.equal(permitted([acl(Perm.read, "world", "anyone")], Perm.write, []), false);
    assert.equal(permitted([acl(Perm.all, "digest", USER.id)], Perm.read, []), false);
    assert.equal(permitted([acl(Perm.all, "digest", USER.id)], Perm.read, [OTHER]), false);
    assert.equal(permitted([acl(Perm.all, "digest", USER.id)], Perm.read, [USER]), true);
    const net = [acl(Perm.all, "ip", "10.0.0.0/8")];
    assert.equal(permitted(net, Perm.read, [ip("10.200.1.2")]), true);
    assert.equal(permitted(net, Perm.read, [ip("11.0.0.1")]), false);
    assert.equal(permitted([acl(Perm.all, "ip", "10.1.2.3")], Perm.read, [ip("10.1.2.3")]), true);
    assert.equal(
      permitted([acl(Perm.all, "ip", "10.1.2.0/23")], Perm.read, [ip("10.1.3.9")]),
      true,
    );
    assert.equal(
      permitted([acl(Perm.all, "ip", "10.1.2.0/24")], Perm.read, [ip("10.1.3.9")]),
      false,
    );
    assert.equal(permitted([acl(Perm.read, "ip", "0.0.0.0/0")], Perm.read, [ip("1.2.3.4")]), true);
    assert.equal(
      permitted([acl(Perm.read, "digest", USER.id)], Perm.read, [{ scheme: "super", id: "" }]),
      true,
    );
    // READ|ADMIN: either bit will do (getACL).
    assert.equal(permitted([acl(Perm.admin, "world", "anyone")], Perm.read | Perm.admin, []), true);
  });

  it("maskDigests hides digest hashes", () => {
    assert.deepEqual(maskDigests([acl(Perm.all, "digest", USER.id), OPEN_ACL[0]!]), [
      acl(Perm.all, "digest", "user:x"),
      OPEN_ACL[0],
    ]);
  });
});

describe("DataTree", () => {
  it("starts with /, /zookeeper, /zookeeper/quota and /zookeeper/config", () => {
    const { tree } = setup();
    const root = tree.stat("/");
    assert.deepEqual(root, {
      czxid: 0,
      mzxid: 0,
      ctime: 0,
      mtime: 0,
      version: 0,
      // /zookeeper is a child but was never counted as a create: 2*0 - 1.
      cversion: -1,
      aversion: 0,
      ephemeralOwner: 0,
      dataLength: 0,
      numChildren: 1,
      pzxid: 0,
    });
    assert.equal(tree.stat("/zookeeper")?.cversion, -2);
    assert.equal(tree.stat("/zookeeper/config")?.aversion, -1);
    assert.deepEqual(tree.getChildren("/", []), { err: 0, children: ["zookeeper"], stat: root });
    const zk = tree.getChildren("/zookeeper", []);
    assert.ok(zk.err === 0);
    assert.deepEqual(zk.children, ["config", "quota"]);
    const config = tree.getData("/zookeeper/config", []);
    assert.ok(config.err === 0);
    assert.deepEqual(config.data, new Uint8Array(0));
    const configAcl = tree.getACL("/zookeeper/config", []);
    assert.ok(configAcl.err === 0);
    assert.deepEqual(configAcl.acl, [acl(Perm.read, "world", "anyone")]);
    assert.equal(tree.nodeCount, 5); // ZooKeeper counts its "" alias of the root too
    assert.equal(tree.approximateDataSize, 44);
    assert.equal(tree.ephemeralCount, 0);
  });

  it("create sets the node's stat and the parent's pzxid and cversion", () => {
    const { tree, mustCreate, stat } = setup();
    const a = mustCreate("/a", { data: bytes("hello") });
    assert.deepEqual(a, {
      err: 0,
      path: "/a",
      stat: {
        czxid: 1,
        mzxid: 1,
        ctime: 10,
        mtime: 10,
        version: 0,
        cversion: 0,
        aversion: 0,
        ephemeralOwner: 0,
        dataLength: 5,
        numChildren: 0,
        pzxid: 1,
      },
    });
    mustCreate("/a/b");
    const parent = stat("/a");
    assert.equal(parent.pzxid, 2);
    assert.equal(parent.mzxid, 1);
    assert.equal(parent.cversion, 1);
    assert.equal(parent.numChildren, 1);
    assert.equal(stat("/").pzxid, 1);
    assert.equal(stat("/").cversion, 0); // 2*1 - 2
    assert.equal(tree.approximateDataSize, 44 + 2 + 5 + 4);
  });

  it("cversion counts creates and deletes: 5 creates + 1 delete -> 6", () => {
    const { mustCreate, del, stat } = setup();
    mustCreate("/p");
    for (let i = 0; i < 5; i++) mustCreate(`/p/c${i}`);
    assert.equal(del("/p/c2"), Err.ok);
    const p = stat("/p");
    assert.equal(p.cversion, 6);
    assert.equal(p.numChildren, 4);
    assert.equal(p.pzxid, 7); // the delete's zxid
  });

  it("sequential names come from the parent's create counter, never reused", () => {
    const { mustCreate, del } = setup();
    mustCreate("/s");
    assert.equal(
      mustCreate("/s/x-", { flags: CreateFlag.persistentSequential }).path,
      "/s/x-0000000000",
    );
    mustCreate("/q");
    mustCreate("/q/plain");
    const seq = { flags: CreateFlag.persistentSequential };
    assert.equal(mustCreate("/q/n", seq).path, "/q/n0000000001");
    assert.equal(mustCreate("/q/n", seq).path, "/q/n0000000002");
    assert.equal(mustCreate("/q/n", seq).path, "/q/n0000000003");
    assert.equal(del("/q/n0000000002"), Err.ok);
    assert.equal(mustCreate("/q/n", seq).path, "/q/n0000000004");
    // "/folder/" + suffix is a valid path.
    assert.equal(mustCreate("/q/", seq).path, "/q/0000000005");
    assert.equal(mustCreate("/", seq).path, "/0000000002");
  });

  it("keeps null data distinct from empty data", () => {
    const { tree, mustCreate, setData } = setup();
    mustCreate("/null", { data: null });
    mustCreate("/empty", { data: new Uint8Array(0) });
    const n = tree.getData("/null", []);
    const e = tree.getData("/empty", []);
    assert.ok(n.err === 0 && e.err === 0);
    assert.equal(n.data, null);
    assert.deepEqual(e.data, new Uint8Array(0));
    assert.equal(n.stat.dataLength, 0);
    assert.equal(e.stat.dataLength, 0);
    setData("/empty", null);
    const after = tree.getData("/empty", []);
    assert.ok(after.err === 0);
    assert.equal(after.data, null);
  });

  it("ephemeral, container and TTL modes", () => {
    const { tree, mustCreate, create, clock, events } = setup();
    const e = mustCreate("/e", { flags: CreateFlag.ephemeral }, 42);
    assert.equal(e.stat.ephemeralOwner, 42);
    assert.equal(
      mustCreate("/es", { flags: CreateFlag.ephemeralSequential }, 42).path,
      "/es0000000001",
    );
    assert.equal(tree.ephemeralCount, 2);
    assert.deepEqual(tree.getEphemerals(42, "/"), ["/e", "/es0000000001"]);
    assert.deepEqual(tree.getEphemerals(42, "/es"), ["/es0000000001"]);
    assert.deepEqual(tree.getEphemerals(7, ""), []);
    const c = mustCreate("/c", { type: 19, flags: CreateFlag.container });
    assert.equal(c.stat.ephemeralOwner, 0);
    const t = mustCreate("/t", { type: 21, flags: CreateFlag.persistentWithTtl, ttl: 1000 });
    assert.equal(t.stat.ephemeralOwner, 0);
    const ts = mustCreate("/ts", {
      type: 21,
      flags: CreateFlag.persistentSequentialWithTtl,
      ttl: MAX_TTL,
    });
    assert.equal(ts.path, "/ts0000000004");
    assert.equal(tree.ephemeralCount, 2);
    // Mode 4 through opcode 1 is a plain persistent node, as ZooKeeper's CreateTxn makes it.
    mustCreate("/c1", { flags: CreateFlag.container });
    mustCreate("/c1/x");
    tree.delete({ type: 2, path: "/c1/x", version: -1 }, clock.txn(), events);
    assert.deepEqual(tree.expiredNodes(Number.MAX_SAFE_INTEGER), ["/t", "/ts0000000004"]);
    // An ephemeral has no children.
    assert.deepEqual(create("/e/x"), { err: Err.noChildrenForEphemerals });
  });

  it("create errors in ZooKeeper's order", () => {
    const { tree, mustCreate, create, clock, events } = setup();
    const err = (op: Partial<CreateOp> & { path: string }, ids: Id[] = []) =>
      tree.create(createOp(op.path, op), clock.txn(1, ids), events).err;
    mustCreate("/a");
    // Flags first, whatever else is wrong.
    assert.equal(err({ path: "bad", flags: 99, acl: [] }), Err.badArguments);
    assert.equal(err({ path: "/x", flags: 7 }), Err.badArguments);
    assert.equal(err({ path: "/x", flags: -1 }), Err.badArguments);
    // TTL rules (extended types enabled).
    assert.equal(err({ path: "/x", type: 21, flags: 5, ttl: 0 }), Err.badArguments);
    assert.equal(err({ path: "/x", type: 21, flags: 5, ttl: MAX_TTL + 1 }), Err.badArguments);
    assert.equal(err({ path: "/x", type: 21, flags: 0, ttl: 100 }), Err.badArguments);
    assert.equal(err({ path: "/x", type: 21, flags: 0, ttl: -1 }), Err.badArguments);
    assert.equal(err({ path: "/x", type: 1, flags: 5, ttl: 100 }), Err.badArguments);
    assert.equal(err({ path: "/x", type: 15, flags: 6 }), Err.badArguments);
    assert.equal(err({ path: "/x", type: 19, flags: 5 }), Err.badArguments);
    // No slash or a NUL: BadArguments before the ACL is looked at.
    assert.equal(err({ path: "x", acl: [] }), Err.badArguments);
    assert.equal(err({ path: "/a\0b", acl: [] }), Err.badArguments);
    // ACL before the parent.
    assert.equal(err({ path: "/missing/x", acl: [] }), Err.invalidAcl);
    assert.equal(err({ path: "/missing/x", acl: [acl(1, "nope", "x")] }), Err.invalidAcl);
    assert.equal(err({ path: "/missing/x", acl: [acl(1, "auth", "")] }), Err.invalidAcl);
    assert.equal(err({ path: "/missing/x" }), Err.noNode);
    // The parent is looked up before the full path is validated.
    assert.equal(err({ path: "/a//b" }), Err.noNode);
    assert.equal(err({ path: "/x/." }), Err.noNode);
    assert.equal(err({ path: "/a/." }), Err.badArguments);
    assert.equal(err({ path: "/a/" }), Err.badArguments);
    assert.equal(err({ path: "/\u0001x" }), Err.badArguments);
    assert.equal(err({ path: "/😀" }), Err.badArguments);
    // NodeExists, the root included.
    assert.equal(err({ path: "/a" }), Err.nodeExists);
    assert.equal(err({ path: "/" }), Err.nodeExists);
    assert.equal(err({ path: "/zookeeper" }), Err.nodeExists);
    // CREATE permission on the parent, checked before the path's validity and existence.
    mustCreate("/locked", { acl: [acl(Perm.all & ~Perm.create, "world", "anyone")] });
    mustCreate("/locked2", { acl: [acl(Perm.all, "digest", USER.id)] });
    assert.equal(err({ path: "/locked/." }), Err.noAuth);
    assert.equal(err({ path: "/locked2/x" }), Err.noAuth);
    assert.equal(err({ path: "/locked2/x" }, [USER]), Err.ok);
    assert.equal(err({ path: "/zookeeper/config/x" }), Err.noAuth);
    // Nothing failed changed anything.
    assert.equal(create("/a/ok").err, 0);
    assert.equal(tree.stat("/a")?.cversion, 1);
  });

  it("NodeExists is checked before NoChildrenForEphemerals", () => {
    // Only a tree where an ephemeral has a child shows the order: craft one from a snapshot.
    const { tree, mustCreate } = setup();
    mustCreate("/e");
    mustCreate("/e/x");
    const [tag, version, acls, rows] = unpack(tree.snapshot()) as [
      string,
      number,
      unknown,
      unknown[][],
    ];
    const row = rows.find((r) => r[0] === "/e") as unknown[];
    row[11] = 1; // ephemeral
    row[12] = 5; // of session 5
    const crafted = DataTree.restore(pack([tag, version, acls, rows]));
    const clock = new Clock();
    const events: ChangeEvent[] = [];
    assert.equal(crafted.create(createOp("/e/x"), clock.txn(), events).err, Err.nodeExists);
    assert.equal(
      crafted.create(createOp("/e/y"), clock.txn(), events).err,
      Err.noChildrenForEphemerals,
    );
  });

  it("delete errors in ZooKeeper's order: BadVersion beats NotEmpty", () => {
    const { mustCreate, del, tree } = setup();
    for (const special of ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"]) {
      assert.equal(del(special), Err.badArguments, special);
    }
    assert.equal(del("x"), Err.badArguments);
    assert.equal(del("/a\0"), Err.badArguments);
    assert.equal(del("/missing/x"), Err.noNode);
    assert.equal(del("/missing"), Err.noNode);
    mustCreate("/p");
    mustCreate("/p/c");
    assert.equal(del("/p", 5), Err.badVersion);
    assert.equal(del("/p", 0), Err.notEmpty);
    assert.equal(del("/p", -1), Err.notEmpty);
    // DELETE permission on the parent, before the node's existence.
    mustCreate("/locked", { acl: [acl(Perm.all & ~Perm.delete, "world", "anyone")] });
    mustCreate("/locked/c");
    assert.equal(del("/locked/missing"), Err.noAuth);
    assert.equal(del("/locked/c"), Err.noAuth);
    // Not validated as a whole: "/p/" names no node.
    assert.equal(del("/p/"), Err.noNode);
    assert.equal(del("/p/c", 1), Err.badVersion);
    assert.equal(del("/p/c", 0), Err.ok);
    assert.equal(tree.stat("/p/c"), undefined);
    assert.equal(del("/p/c"), Err.noNode);
  });

  it("setData: errors, version, mzxid and mtime", () => {
    const { mustCreate, setData, stat, clock } = setup();
    assert.equal(setData("/a/", null).err, Err.badArguments);
    assert.equal(setData("missing", null).err, Err.badArguments);
    assert.equal(setData("/missing", null).err, Err.noNode);
    assert.equal(setData("/zookeeper/config", bytes("x")).err, Err.noAuth);
    mustCreate("/ro", { acl: [acl(Perm.read, "world", "anyone")] });
    assert.equal(setData("/ro", null, 7).err, Err.noAuth); // NoAuth before BadVersion
    mustCreate("/a", { data: bytes("1") });
    assert.equal(setData("/a", null, 1).err, Err.badVersion);
    const r = setData("/a", bytes("22"), 0);
    assert.ok(r.err === 0);
    assert.equal(r.stat.version, 1);
    assert.equal(r.stat.mzxid, clock.zxid);
    assert.equal(r.stat.mtime, clock.zxid * 10);
    assert.equal(r.stat.czxid, 7); // failed writes took zxids too
    assert.equal(r.stat.dataLength, 2);
    assert.equal(setData("/a", bytes("22")).err, 0);
    assert.equal(stat("/a").version, 2); // +1 even with identical data
    assert.equal(setData("/", bytes("root")).err, 0);
    assert.equal(stat("/").version, 1);
  });

  it("setACL: errors, aversion, and the ACL it stores", () => {
    const { tree, mustCreate, clock, stat } = setup();
    const setACL = (path: string, list: readonly Acl[], version = -1, ids: Id[] = []) =>
      tree.setACL(path, list, version, clock.txn(1, ids));
    assert.equal(setACL("/a/", []).err, Err.badArguments);
    assert.equal(setACL("/missing", []).err, Err.invalidAcl);
    assert.equal(setACL("/missing", OPEN_ACL).err, Err.noNode);
    mustCreate("/a", { acl: [acl(Perm.all & ~Perm.admin, "world", "anyone")] });
    assert.equal(setACL("/a", OPEN_ACL).err, Err.noAuth);
    mustCreate("/b");
    assert.equal(setACL("/b", OPEN_ACL, 1).err, Err.badVersion);
    const mzxid = stat("/b").mzxid;
    const r = setACL("/b", [acl(Perm.all, "auth", "")], 0, [USER]);
    assert.ok(r.err === 0);
    assert.equal(r.stat.aversion, 1);
    assert.equal(r.stat.version, 0);
    assert.equal(r.stat.mzxid, mzxid);
    assert.equal(setACL("/b", OPEN_ACL, 0, [USER]).err, Err.badVersion); // compares aversion
    const got = tree.getACL("/b", [USER]);
    assert.ok(got.err === 0);
    assert.deepEqual(got.acl, [acl(Perm.all, "digest", USER.id)]);
  });

  it("ACLs are enforced on reads; exists needs none; getACL masks digests without ADMIN", () => {
    const { tree, mustCreate } = setup();
    mustCreate("/secret", {
      acl: [acl(Perm.all, "digest", USER.id), acl(Perm.read, "world", "anyone")],
      data: bytes("s"),
    });
    mustCreate("/hidden", { acl: [acl(Perm.all, "digest", USER.id)] });
    assert.equal(tree.getData("/hidden", []).err, Err.noAuth);
    assert.equal(tree.getData("/hidden", [OTHER]).err, Err.noAuth);
    assert.equal(tree.getData("/hidden", [USER]).err, 0);
    assert.equal(tree.getChildren("/hidden", []).err, Err.noAuth);
    assert.equal(tree.getACL("/hidden", []).err, Err.noAuth);
    assert.equal(tree.allChildrenNumber("/hidden", []).err, Err.noAuth);
    assert.ok(tree.exists("/hidden"));
    assert.equal(tree.getData("/missing", [USER]).err, Err.noNode);
    const masked = tree.getACL("/secret", []);
    assert.ok(masked.err === 0);
    assert.deepEqual(masked.acl, [
      acl(Perm.all, "digest", "user:x"),
      acl(Perm.read, "world", "anyone"),
    ]);
    const full = tree.getACL("/secret", [USER]);
    assert.ok(full.err === 0);
    assert.deepEqual(full.acl[0], acl(Perm.all, "digest", USER.id));
    // ADMIN alone is enough for getACL.
    mustCreate("/admin", { acl: [acl(Perm.admin, "world", "anyone")] });
    assert.equal(tree.getACL("/admin", []).err, 0);
    assert.equal(tree.getData("/admin", []).err, Err.noAuth);
  });

  it("getChildren is sorted; allChildrenNumber counts descendants", () => {
    const { tree, mustCreate } = setup();
    for (const name of ["b", "a", "c"]) mustCreate(`/${name}`);
    mustCreate("/a/x");
    mustCreate("/a/x/y");
    const r = tree.getChildren("/", []);
    assert.ok(r.err === 0);
    assert.deepEqual(r.children, ["a", "b", "c", "zookeeper"]);
    assert.deepEqual(tree.allChildrenNumber("/a", []), { err: 0, count: 2 });
    assert.deepEqual(tree.allChildrenNumber("/", []), { err: 0, count: 8 });
    assert.deepEqual(tree.allChildrenNumber("/zookeeper", []), { err: 0, count: 2 });
    assert.deepEqual(tree.allChildrenNumber("/nope", []), { err: Err.noNode });
  });

  it("writes emit their change events; failed writes emit none", () => {
    const { mustCreate, setData, del, events, create } = setup();
    mustCreate("/a");
    mustCreate("/a/b");
    setData("/a/b", null);
    del("/a/b");
    create("/a");
    setData("/missing", null);
    del("/a", 9);
    assert.deepEqual(events, [
      { type: EventType.nodeCreated, path: "/a" },
      { type: EventType.nodeChildrenChanged, path: "/" },
      { type: EventType.nodeCreated, path: "/a/b" },
      { type: EventType.nodeChildrenChanged, path: "/a" },
      { type: EventType.nodeDataChanged, path: "/a/b" },
      { type: EventType.nodeDeleted, path: "/a/b" },
      { type: EventType.nodeChildrenChanged, path: "/a" },
    ]);
  });

  it("multi: results per op type, one zxid, later ops see earlier ones", () => {
    const { tree, mustCreate, clock, stat } = setup();
    mustCreate("/old");
    const events: ChangeEvent[] = [];
    const txn = clock.txn();
    const outcome = tree.multi(
      [
        createOp("/m", { type: 15 }),
        createOp("/m/c", { type: 19, flags: CreateFlag.container }),
        { type: 5, path: "/m", data: bytes("d"), version: 0 },
        { type: 13, path: "/m", version: 1 },
        createOp("/m/s", { flags: CreateFlag.persistentSequential }),
        { type: 2, path: "/old", version: 0 },
      ],
      txn,
      events,
    );
    assert.equal(outcome.ok, true);
    const m = stat("/m");
    assert.deepEqual(outcome.results, [
      { type: 1, path: "/m" },
      { type: 15, path: "/m/c", stat: stat("/m/c") },
      { type: 5, stat: { ...m, cversion: 1, numChildren: 1, pzxid: txn.zxid } },
      { type: 13 },
      { type: 1, path: "/m/s0000000001" },
      { type: 2 },
    ]);
    assert.equal(m.czxid, txn.zxid);
    assert.equal(m.mzxid, txn.zxid);
    assert.equal(stat("/m/c").czxid, txn.zxid);
    assert.equal(events.length, 9);
    assert.deepEqual(tree.multi([], clock.txn(), events), { ok: true, results: [] });
  });

  it("multi failure: nothing applied, no events, ZooKeeper's result encoding", () => {
    const { tree, mustCreate, clock, stat } = setup();
    mustCreate("/p");
    mustCreate("/p/e", { flags: CreateFlag.ephemeral }, 9);
    mustCreate("/p/v", { data: bytes("v") });
    const before = snap(tree);
    const sizeBefore = tree.approximateDataSize;
    const events: ChangeEvent[] = [];
    const outcome = tree.multi(
      [
        createOp("/p/n", { flags: CreateFlag.persistentSequential }),
        { type: 13, path: "/p/v", version: 3 },
        { type: 5, path: "/p/v", data: null, version: -1 },
      ],
      clock.txn(),
      events,
    );
    assert.deepEqual(outcome, {
      ok: false,
      results: [
        { type: -1, err: 0 },
        { type: -1, err: Err.badVersion },
        { type: -1, err: Err.runtimeInconsistency },
      ],
    });
    assert.deepEqual(events, []);
    assert.deepEqual(snap(tree), before);

    const undone = tree.multi(
      [
        { type: 2, path: "/p/e", version: -1 },
        createOp("/p/e2", { flags: CreateFlag.ephemeral }),
        createOp("/p/c", { type: 19, flags: CreateFlag.container }),
        createOp("/p/t", { type: 21, flags: CreateFlag.persistentWithTtl, ttl: 1 }),
        { type: 5, path: "/p/v", data: bytes("longer data"), version: 0 },
        { type: 5, path: "/p/v", data: null, version: 1 },
        { type: 2, path: "/p/v", version: 2 },
        createOp("/p/v"),
        createOp("/p/v"),
      ],
      clock.txn(9),
      events,
    );
    assert.equal(undone.ok, false);
    assert.deepEqual(undone.results.at(-1), { type: -1, err: Err.nodeExists });
    assert.deepEqual(events, []);
    assert.deepEqual(snap(tree), before);
    assert.equal(tree.approximateDataSize, sizeBefore);
    assert.deepEqual(tree.getEphemerals(9, "/"), ["/p/e"]);
    assert.equal(tree.ephemeralCount, 1);
    assert.deepEqual(tree.expiredNodes(Number.MAX_SAFE_INTEGER), []);
    // The sequence counter was restored too.
    assert.equal(
      mustCreate("/p/n", { flags: CreateFlag.persistentSequential }).path,
      "/p/n0000000002",
    );
    assert.equal(stat("/p").cversion, 3 * 2 - 3);
  });

  it("property: a multi equals its ops applied one by one, or changes nothing", () => {
    withSeed("zk multi", (random) => {
      const { tree, clock } = setup();
      for (let round = 0; round < 300; round++) {
        const ops = Array.from({ length: int(random, 1, 4) }, () => randomWriteOp(random));
        const before = tree.snapshot();
        const txn = clock.txn(int(random, 1, 2));
        const sequential = DataTree.restore(before);
        const expectedEvents: ChangeEvent[] = [];
        let failedAt = -1;
        let failedErr = 0;
        for (const [i, op] of ops.entries()) {
          const err = applyOne(sequential, op, txn, expectedEvents);
          if (err !== 0) {
            failedAt = i;
            failedErr = err;
            break;
          }
        }
        const events: ChangeEvent[] = [];
        const outcome = tree.multi(ops, txn, events);
        if (failedAt < 0) {
          assert.equal(outcome.ok, true);
          assert.deepEqual(events, expectedEvents);
          assert.deepEqual(snap(tree), snap(sequential));
        } else {
          assert.equal(outcome.ok, false);
          assert.deepEqual(outcome.results[failedAt], { type: -1, err: failedErr });
          assert.deepEqual(events, []);
          assert.deepEqual(snap(tree), Buffer.from(before));
        }
      }
    });
  });

  it("multiRead evaluates each op on its own", () => {
    const { tree, mustCreate } = setup();
    mustCreate("/a", { data: bytes("x") });
    mustCreate("/a/b");
    mustCreate("/h", { acl: [acl(Perm.all, "digest", USER.id)] });
    assert.deepEqual(
      tree.multiRead(
        [
          { type: 4, path: "/a", watch: false },
          { type: 4, path: "/missing", watch: false },
          { type: 8, path: "/a", watch: false },
          { type: 8, path: "/h", watch: false },
        ],
        [],
      ),
      [
        { type: 4, data: bytes("x"), stat: tree.stat("/a") },
        { type: -1, err: Err.noNode },
        { type: 8, children: ["b"] },
        { type: -1, err: Err.noAuth },
      ],
    );
  });

  it("closeSession deletes the session's ephemerals in one transaction", () => {
    const { tree, mustCreate, clock, stat } = setup();
    mustCreate("/p");
    mustCreate("/p/b", { flags: CreateFlag.ephemeral }, 7);
    mustCreate("/a", { flags: CreateFlag.ephemeral }, 7);
    mustCreate("/p/other", { flags: CreateFlag.ephemeral }, 8);
    const events: ChangeEvent[] = [];
    const txn = clock.txn(7);
    assert.deepEqual(tree.closeSession(7, txn, events), ["/a", "/p/b"]);
    assert.deepEqual(events, [
      { type: EventType.nodeDeleted, path: "/a" },
      { type: EventType.nodeChildrenChanged, path: "/" },
      { type: EventType.nodeDeleted, path: "/p/b" },
      { type: EventType.nodeChildrenChanged, path: "/p" },
    ]);
    assert.equal(stat("/p").pzxid, txn.zxid);
    assert.equal(stat("/p").cversion, 3);
    assert.equal(tree.ephemeralCount, 1);
    assert.deepEqual(tree.getEphemerals(7, "/"), []);
    assert.deepEqual(tree.closeSession(7, clock.txn(7), events), []);
    assert.equal(events.length, 4);
  });

  it("expiredNodes: used empty containers and stale childless TTL nodes", () => {
    const { tree, mustCreate, del, setData, clock, events } = setup();
    mustCreate("/c", { type: 19, flags: CreateFlag.container }); // zxid 1, mtime 10
    mustCreate("/t", { type: 21, flags: CreateFlag.persistentWithTtl, ttl: 100 }); // mtime 20
    assert.deepEqual(tree.expiredNodes(1000), ["/t"]); // a never used container stays
    assert.deepEqual(tree.expiredNodes(120), []); // mtime + ttl < now, strictly
    assert.deepEqual(tree.expiredNodes(121), ["/t"]);
    mustCreate("/c/x");
    mustCreate("/t/x");
    assert.deepEqual(tree.expiredNodes(10_000), []);
    del("/c/x");
    del("/t/x");
    setData("/t", null); // zxid 7: mtime 70
    assert.deepEqual(tree.expiredNodes(170), ["/c"]);
    assert.deepEqual(tree.expiredNodes(171), ["/c", "/t"]);
    mustCreate("/c/y", { flags: CreateFlag.ephemeral });
    assert.deepEqual(tree.deleteExpired("/c", clock.txn(), events), { err: Err.notEmpty });
    assert.deepEqual(tree.deleteExpired("/c/y", clock.txn(), events), { err: Err.badVersion });
    assert.deepEqual(tree.deleteExpired("/zookeeper", clock.txn(), events), {
      err: Err.badArguments,
    });
    assert.deepEqual(tree.deleteExpired("/gone", clock.txn(), events), { err: Err.noNode });
    // No ACL check: the server deletes even what clients could not.
    tree.setACL("/t", [acl(Perm.read, "world", "anyone")], -1, clock.txn());
    const before = events.length;
    assert.deepEqual(tree.deleteExpired("/t", clock.txn(), events), { err: 0 });
    assert.deepEqual(events.slice(before), [
      { type: EventType.nodeDeleted, path: "/t" },
      { type: EventType.nodeChildrenChanged, path: "/" },
    ]);
    assert.equal(tree.exists("/t"), undefined);
  });

  it("snapshots are canonical and restore continues like the original", () => {
    // Equal trees from different histories: children created in another order (at the same
    // zxids), so maps and child sets differ in insertion order.
    const build = (order: string[]) => {
      const t = setup();
      t.mustCreate("/p", { acl: [acl(Perm.all, "world", "anyone")] });
      for (const name of order) {
        t.clock.zxid = name === "a" ? 1 : 2;
        t.mustCreate(`/p/${name}`, { data: bytes(name) });
      }
      t.clock.zxid = 3;
      t.mustCreate("/p/c");
      assert.equal(t.del("/p/c"), Err.ok);
      return t;
    };
    const a = build(["a", "b"]);
    const b = build(["b", "a"]);
    assert.deepEqual(a.tree.getChildren("/p", []), b.tree.getChildren("/p", []));
    assert.notDeepEqual(snap(a.tree), snap(new DataTree()));
    assert.deepEqual(snap(a.tree), snap(b.tree));
    b.setData("/p/a", bytes("a"));
    assert.notDeepEqual(snap(a.tree), snap(b.tree));

    withSeed("zk restore", (random) => {
      const { tree, clock } = setup();
      for (let i = 0; i < 300; i++)
        applyOne(tree, randomWriteOp(random), clock.txn(int(random, 1, 3)), []);
      const copy = DataTree.restore(tree.snapshot());
      assert.deepEqual(snap(copy), snap(tree));
      for (const key of ["nodeCount", "ephemeralCount", "approximateDataSize"] as const) {
        assert.equal(copy[key], tree[key], key);
      }
      assert.deepEqual(
        copy.expiredNodes(Number.MAX_SAFE_INTEGER),
        tree.expiredNodes(Number.MAX_SAFE_INTEGER),
      );
      const copyClock = new Clock();
      copyClock.zxid = clock.zxid;
      for (let i = 0; i < 300; i++) {
        const op = randomWriteOp(random);
        const session = int(random, 1, 3);
        const e1: ChangeEvent[] = [];
        const e2: ChangeEvent[] = [];
        assert.equal(
          applyOne(copy, op, copyClock.txn(session), e1),
          applyOne(tree, op, clock.txn(session), e2),
        );
        assert.deepEqual(e1, e2);
        for (const path of PATHS) {
          assert.deepEqual(copy.getData(path, []), tree.getData(path, []));
          assert.deepEqual(copy.getChildren(path, []), tree.getChildren(path, []));
        }
      }
      const e1: ChangeEvent[] = [];
      const e2: ChangeEvent[] = [];
      assert.deepEqual(
        copy.closeSession(2, copyClock.txn(2), e1),
        tree.closeSession(2, clock.txn(2), e2),
      );
      assert.deepEqual(e1, e2);
      assert.deepEqual(snap(copy), snap(tree));
    });
  });

  it("restore refuses bytes that are not a data tree snapshot", () => {
    const good = unpack(new DataTree().snapshot()) as unknown[];
    const noRoot = [...good.slice(0, 3), (good[3] as unknown[][]).slice(1)];
    const orphan = [
      ...good.slice(0, 3),
      [...(good[3] as unknown[][]), (good[3] as unknown[][])[1]!.with(0, "/no/parent")],
    ];
    const badAcl = [...good.slice(0, 3), [(good[3] as unknown[][])[0]!.with(2, 9)]];
    for (const bytes of [
      Buffer.from([0xc1]),
      pack("x"),
      pack(["zk-tree", 2, [], []]),
      pack(["zk-watches", 1, [], []]),
      pack({ nodes: [] }),
      pack(noRoot),
      pack(orphan),
      pack(badAcl),
    ]) {
      assert.throws(() => DataTree.restore(bytes), /snapshot/);
    }
  });
});

// ---- Random operations for the property tests ----

const PATHS = ["/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z"];

function randomWriteOp(random: Random): MultiWriteOp {
  const path = pick(random, PATHS);
  const version = pick(random, [-1, -1, 0, 1]);
  switch (int(random, 0, 4)) {
    case 0:
    case 1: {
      const type = pick(random, [1, 15, 19] as const);
      const flags = type === 19 ? CreateFlag.container : int(random, 0, 3);
      return createOp(path, { type, flags, data: pick(random, [null, bytes(path)]) });
    }
    case 2:
      return { type: 2, path, version };
    case 3:
      return { type: 5, path, data: pick(random, [null, bytes("d"), bytes("data")]), version };
    default:
      return { type: 13, path, version };
  }
}

/** Applies one multi op through the single-op API; returns its error code. */
function applyOne(tree: DataTree, op: MultiWriteOp, txn: Txn, events: ChangeEvent[]): number {
  switch (op.type) {
    case 2:
      return tree.delete(op, txn, events).err;
    case 5:
      return tree.setData(op, txn, events).err;
    case 13: {
      const result = tree.multi([op], txn, events).results[0];
      return result?.type === -1 ? result.err : 0;
    }
    default:
      return tree.create(op, txn, events).err;
  }
}
