/**
 * ZooKeeper watches: the trigger table, one-shot and deduplicated notifications, persistent and
 * recursive watches, setWatches' synthetic events, removal, and canonical snapshots
 * (../shared/ZOOKEEPER.md section 12), fed with the events of a real DataTree.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pack } from "msgpackr";
import { DataTree, type ChangeEvent, type Txn } from "../../src/zk/data-tree.js";
import { Watches } from "../../src/zk/watches.js";
import { EventType, OPEN_ACL } from "../../src/zk/types.js";

const { nodeCreated, nodeDeleted, nodeDataChanged, nodeChildrenChanged } = EventType;

/** A tree whose writes return the notifications they send. */
function setup() {
  const tree = new DataTree();
  const watches = new Watches();
  let zxid = 0;
  const txn = (): Txn => ({ zxid: ++zxid, time: zxid, session: 1, identities: [] });
  const fire = (write: (events: ChangeEvent[]) => unknown) => {
    const events: ChangeEvent[] = [];
    write(events);
    return Object.fromEntries(watches.trigger(events));
  };
  const create = (path: string) =>
    fire((e) =>
      tree.create({ type: 1, path, data: null, acl: OPEN_ACL, flags: 0, ttl: -1 }, txn(), e),
    );
  const setData = (path: string) =>
    fire((e) => tree.setData({ type: 5, path, data: null, version: -1 }, txn(), e));
  const del = (path: string) => fire((e) => tree.delete({ type: 2, path, version: -1 }, txn(), e));
  return { tree, watches, create, setData, del, zxid: () => zxid };
}

const ev = (type: ChangeEvent["type"], path: string): ChangeEvent => ({ type, path });

describe("Watches", () => {
  it("a data watch fires once per registration", () => {
    const { watches, create, setData } = setup();
    create("/a");
    watches.register(1, "/a", "data");
    watches.register(1, "/a", "data"); // twice: still one watch
    assert.equal(watches.count, 1);
    assert.deepEqual(setData("/a"), { 1: [ev(nodeDataChanged, "/a")] });
    assert.deepEqual(setData("/a"), {});
    assert.equal(watches.count, 0);
  });

  it("a node watched by data and child watches gets one NodeDeleted", () => {
    const { watches, create, del } = setup();
    create("/a");
    watches.register(1, "/a", "data");
    watches.register(1, "/a", "child");
    watches.register(2, "/a", "child");
    watches.register(2, "/", "child");
    assert.deepEqual(del("/a"), {
      1: [ev(nodeDeleted, "/a")],
      2: [ev(nodeDeleted, "/a"), ev(nodeChildrenChanged, "/")],
    });
    assert.equal(watches.count, 0);
  });

  it("follows the trigger table: child watches ignore data changes and vice versa", () => {
    const { watches, create, setData } = setup();
    create("/p");
    create("/p/c");
    watches.register(1, "/p", "child");
    watches.register(2, "/p", "data");
    watches.register(3, "/p/new", "exist");
    assert.deepEqual(setData("/p/c"), {});
    assert.deepEqual(create("/p/new"), {
      1: [ev(nodeChildrenChanged, "/p")],
      3: [ev(nodeCreated, "/p/new")],
    });
    assert.equal(watches.count, 1);
    assert.deepEqual(setData("/p"), { 2: [ev(nodeDataChanged, "/p")] });
  });

  it("an exists watch on a missing node fires on its creation only", () => {
    const { watches, create, setData } = setup();
    watches.register(5, "/x", "exist");
    assert.deepEqual(create("/x"), { 5: [ev(nodeCreated, "/x")] });
    assert.deepEqual(setData("/x"), {});
  });

  it("notifies sessions in ascending order, each in the order of the events", () => {
    const { tree, watches, create } = setup();
    create("/a");
    const owner: Txn = { zxid: 10, time: 0, session: 99, identities: [] };
    const op = { type: 1, path: "/a/e", data: null, acl: OPEN_ACL, flags: 1, ttl: -1 } as const;
    assert.equal(tree.create(op, owner, []).err, 0);
    for (const session of [9, 3]) {
      watches.register(session, "/a/e", "data");
      watches.register(session, "/a", "child");
    }
    const events: ChangeEvent[] = [];
    tree.closeSession(99, { ...owner, zxid: 11 }, events);
    const fired = watches.trigger(events);
    assert.deepEqual([...fired.keys()], [3, 9]);
    assert.deepEqual(fired.get(9), [ev(nodeDeleted, "/a/e"), ev(nodeChildrenChanged, "/a")]);
    assert.deepEqual(fired.get(3), fired.get(9));
  });

  it("one-shot within a batch of events: a multi's second change finds the watch gone", () => {
    const { tree, watches, create } = setup();
    create("/a");
    watches.register(1, "/a", "data");
    watches.addPersistent(2, "/a", false);
    const events: ChangeEvent[] = [];
    const txn: Txn = { zxid: 50, time: 0, session: 1, identities: [] };
    const outcome = tree.multi(
      [
        { type: 5, path: "/a", data: null, version: -1 },
        { type: 5, path: "/a", data: null, version: -1 },
      ],
      txn,
      events,
    );
    assert.equal(outcome.ok, true);
    assert.deepEqual(Object.fromEntries(watches.trigger(events)), {
      1: [ev(nodeDataChanged, "/a")],
      2: [ev(nodeDataChanged, "/a"), ev(nodeDataChanged, "/a")],
    });
  });

  it("persistent watches fire every time, on the node and its children list", () => {
    const { watches, create, setData, del } = setup();
    create("/p");
    watches.addPersistent(1, "/p", false);
    assert.equal(watches.count, 2); // in both tables, as in ZooKeeper
    assert.deepEqual(setData("/p"), { 1: [ev(nodeDataChanged, "/p")] });
    assert.deepEqual(setData("/p"), { 1: [ev(nodeDataChanged, "/p")] });
    assert.deepEqual(create("/p/c"), { 1: [ev(nodeChildrenChanged, "/p")] });
    assert.deepEqual(setData("/p/c"), {});
    // A one-shot watch on the same path does not make the persistent one one-shot.
    watches.register(1, "/p", "data");
    assert.deepEqual(setData("/p"), { 1: [ev(nodeDataChanged, "/p")] });
    assert.deepEqual(setData("/p"), { 1: [ev(nodeDataChanged, "/p")] });
    assert.deepEqual(del("/p/c"), { 1: [ev(nodeChildrenChanged, "/p")] });
    assert.deepEqual(del("/p"), { 1: [ev(nodeDeleted, "/p")] });
    assert.deepEqual(create("/p"), { 1: [ev(nodeCreated, "/p")] });
  });

  it("recursive watches see every change below but no NodeChildrenChanged", () => {
    const { watches, create, setData, del } = setup();
    create("/r");
    watches.addPersistent(1, "/r", true);
    watches.addPersistent(2, "/", true);
    assert.deepEqual(create("/r/a"), {
      1: [ev(nodeCreated, "/r/a")],
      2: [ev(nodeCreated, "/r/a")],
    });
    assert.deepEqual(create("/r/a/b"), {
      1: [ev(nodeCreated, "/r/a/b")],
      2: [ev(nodeCreated, "/r/a/b")],
    });
    assert.deepEqual(setData("/r/a/b"), {
      1: [ev(nodeDataChanged, "/r/a/b")],
      2: [ev(nodeDataChanged, "/r/a/b")],
    });
    assert.deepEqual(setData("/r"), {
      1: [ev(nodeDataChanged, "/r")],
      2: [ev(nodeDataChanged, "/r")],
    });
    assert.deepEqual(del("/r/a/b"), {
      1: [ev(nodeDeleted, "/r/a/b")],
      2: [ev(nodeDeleted, "/r/a/b")],
    });
    assert.deepEqual(create("/other"), { 2: [ev(nodeCreated, "/other")] });
    assert.equal(watches.remove(1, "/r", 3), true);
    assert.deepEqual(setData("/r/a"), { 2: [ev(nodeDataChanged, "/r/a")] });
  });

  it("setWatches: synthetic events for what changed, registration for the rest", () => {
    const { tree, watches, create, setData, del, zxid } = setup();
    create("/same");
    create("/changed");
    create("/kids");
    create("/gone");
    const seen = zxid();
    setData("/changed");
    create("/kids/k");
    del("/gone");
    create("/born");
    const events = watches.setWatches(
      1,
      seen,
      ["/same", "/changed", "/gone"],
      ["/born", "/unborn"],
      ["/same", "/kids", "/gone"],
      ["/p"],
      ["/r"],
      tree,
    );
    assert.deepEqual(events, [
      ev(nodeDataChanged, "/changed"),
      ev(nodeDeleted, "/gone"),
      ev(nodeCreated, "/born"),
      ev(nodeChildrenChanged, "/kids"),
      ev(nodeDeleted, "/gone"),
    ]);
    // data /same, exist /unborn, child /same, and /p and /r in both tables.
    assert.equal(watches.count, 7);
    assert.deepEqual(setData("/same"), { 1: [ev(nodeDataChanged, "/same")] });
    assert.deepEqual(create("/unborn"), { 1: [ev(nodeCreated, "/unborn")] });
    assert.deepEqual(create("/same/x"), { 1: [ev(nodeChildrenChanged, "/same")] });
    assert.equal(watches.count, 4);
  });

  it("has and remove by watcher type: 1 children, 2 data, 3 any", () => {
    const { watches } = setup();
    watches.register(1, "/a", "data");
    watches.register(1, "/a", "child");
    watches.register(1, "/b", "exist");
    assert.equal(watches.has(1, "/a", 1), true);
    assert.equal(watches.has(1, "/b", 1), false);
    assert.equal(watches.has(1, "/b", 2), true);
    assert.equal(watches.has(1, "/b", 3), true);
    assert.equal(watches.has(2, "/b", 3), false);
    assert.equal(watches.has(1, "/b", 7), false);
    assert.equal(watches.count, 3); // has consumes nothing
    assert.equal(watches.remove(1, "/b", 1), false);
    assert.equal(watches.remove(1, "/a", 2), true);
    assert.equal(watches.has(1, "/a", 2), false);
    assert.equal(watches.has(1, "/a", 1), true);
    assert.equal(watches.remove(1, "/a", 3), true);
    assert.equal(watches.remove(1, "/a", 3), false);
    assert.equal(watches.count, 1);
  });

  it("dropSession forgets every watch of the session", () => {
    const { watches, create, setData } = setup();
    create("/a");
    watches.register(1, "/a", "data");
    watches.register(1, "/a", "child");
    watches.addPersistent(1, "/", true);
    watches.register(2, "/a", "data");
    watches.dropSession(1);
    assert.equal(watches.count, 1);
    assert.deepEqual(setData("/a"), { 2: [ev(nodeDataChanged, "/a")] });
  });

  it("snapshots are canonical and restore keeps behaviour", () => {
    const a = new Watches();
    const b = new Watches();
    a.register(1, "/x", "data");
    a.register(2, "/y", "child");
    a.addPersistent(1, "/z", true);
    a.register(1, "/z", "data");
    b.addPersistent(1, "/z", true);
    b.register(1, "/w", "data");
    b.register(2, "/y", "child");
    b.register(1, "/x", "data");
    b.register(1, "/z", "data");
    b.remove(1, "/w", 2);
    assert.deepEqual(Buffer.from(a.snapshot()), Buffer.from(b.snapshot()));
    assert.notDeepEqual(Buffer.from(a.snapshot()), Buffer.from(new Watches().snapshot()));

    const copy = Watches.restore(a.snapshot());
    assert.deepEqual(Buffer.from(copy.snapshot()), Buffer.from(a.snapshot()));
    assert.equal(copy.count, a.count);
    const events = [
      ev(nodeDataChanged, "/z/deep"),
      ev(nodeDataChanged, "/z"),
      ev(nodeDataChanged, "/z"),
    ];
    events.push(ev(nodeChildrenChanged, "/y"), ev(nodeDataChanged, "/x"));
    assert.deepEqual(copy.trigger(events), a.trigger(events));
    assert.deepEqual(Buffer.from(copy.snapshot()), Buffer.from(a.snapshot()));

    for (const bytes of [
      Buffer.from([0xc1]),
      pack("x"),
      pack(["zk-watches", 1, [[1, "/a", 0]], []]),
      pack(["zk-watches", 1, [[1, "/a", 8]], []]),
      pack(["zk-tree", 1, [], []]),
    ]) {
      assert.throws(() => Watches.restore(bytes), /watch snapshot/);
    }
  });
});
