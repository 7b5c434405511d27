import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";
import { grouping, TopologyBuilder } from "../../src/platform/api/topology.js";
import { pack, type PhysicalPlan } from "../../src/platform/plan/physical-plan.js";
import { Router } from "../../src/platform/stmgr/router.js";
import { DELIVER, EMIT, FORWARD, TupleReader } from "../../src/platform/wire/tuples.js";
import { int, pick, withSeed } from "./helpers/random.js";
import { noopSource, noopStage, sub } from "./helpers/topologies.js";
import {
  deliverRecord,
  emitRecord,
  forwardRecord,
  isWireError,
  layoutBytes,
  recordBytes,
  RecordingOutlet,
  type TupleRecord,
} from "./helpers/tuples.js";

/**
 * Three containers.
 *   src (2): outputs s (0), other (1), nobody (2)   tasks 0 (c0), 1 (c1)
 *   a   (3): reads src/s shuffle; outputs x (0)     tasks 2 (c0), 3 (c1), 4 (c2)
 *   b   (3): reads src/s all, a/x fields            tasks 5 (c0), 6 (c1), 7 (c2)
 *   c   (1): reads src/other                        task  8 (c0)
 */
function buildPlan(): PhysicalPlan {
  const topology = new TopologyBuilder("router")
    .source("src", { parallelism: 2, outputs: ["s", "other", "nobody"] }, noopSource)
    .stage(
      "a",
      { parallelism: 3, outputs: ["x"], inputs: [sub("src", "s", grouping.shuffle())] },
      noopStage,
    )
    .stage(
      "b",
      {
        parallelism: 3,
        inputs: [sub("src", "s", grouping.all()), sub("a", "x", grouping.fields("k"))],
      },
      noopStage,
    )
    .stage("c", { parallelism: 1, inputs: [sub("src", "other", grouping.shuffle())] }, noopStage)
    .build();
  return pack(topology, { containers: 3 });
}

const plan = buildPlan();
const S = 0;
const OTHER = 1;
const NOBODY = 2;
const X = 0;

const payload = Buffer.from("opaque tuple bytes");

/** The records of an EMIT frame, as the stream manager gets them off the wire. */
const emits = (...records: TupleRecord[]): Buffer => recordBytes(EMIT, records);
const emit = (src: number, stream: number, dests: number[], bytes: Buffer = payload): Buffer =>
  emits(emitRecord(src, stream, dests, bytes));
const forwards = (...records: TupleRecord[]): Buffer => recordBytes(FORWARD, records);
const forward = (src: number, stream: number, dests: number[], bytes: Buffer = payload): Buffer =>
  forwards(forwardRecord(src, stream, dests, bytes));

const invalid = (pattern: RegExp) => isWireError("FRAME_INVALID", pattern);

describe("Router (container 0)", () => {
  let router: Router;
  let local: Map<number, RecordingOutlet>;
  let peers: Map<number, RecordingOutlet>;

  beforeEach(() => {
    router = new Router(plan, 0);
    local = new Map([0, 2, 5, 8].map((task) => [task, new RecordingOutlet()]));
    peers = new Map([1, 2].map((container) => [container, new RecordingOutlet()]));
    for (const [task, outlet] of local) router.local.set(task, outlet);
    for (const [container, outlet] of peers) router.peers.set(container, outlet);
    router.remoteRunning = new Set([1, 3, 4, 6, 7]);
  });

  const outlets = () => [...local.values(), ...peers.values()];
  const delivered = (task: number) => local.get(task)!.records(DELIVER);
  const forwarded = (container: number) => peers.get(container)!.records(FORWARD);
  const nothingSent = () => outlets().every((o) => o.frames.length === 0 && o.queuedCalls === 0);
  const nothingSentBut = (outlet: RecordingOutlet) =>
    outlets().every((o) => o === outlet || (o.frames.length === 0 && o.queuedCalls === 0));
  /** Every append was followed by queued(), as the Outlet contract asks. */
  const allQueued = () => {
    for (const outlet of outlets()) assert.equal(outlet.unqueued, 0, "appends not queued");
  };

  it("delivers to each local destination one DELIVER record", () => {
    router.fromInstance(0, emit(0, S, [2, 5]));
    allQueued();
    assert.deepEqual(delivered(2), [deliverRecord(0, S, 2, payload)]);
    assert.deepEqual(delivered(5), [deliverRecord(0, S, 5, payload)]);
    assert.deepEqual(delivered(0), []);
    assert.deepEqual(delivered(8), []);
    assert.deepEqual(forwarded(1), []);
    assert.deepEqual(forwarded(2), []);
    assert.equal(router.routed, 2);
    assert.equal(router.dropped, 0);
  });

  it("delivers a single-destination emit locally or to the one peer", () => {
    router.fromInstance(0, emit(0, S, [5]));
    router.fromInstance(0, emit(0, S, [6]));
    router.fromInstance(0, emit(0, OTHER, [8]));
    allQueued();
    assert.deepEqual(delivered(5), [deliverRecord(0, S, 5, payload)]);
    assert.deepEqual(delivered(8), [deliverRecord(0, OTHER, 8, payload)]);
    assert.deepEqual(forwarded(1), [forwardRecord(0, S, [6], payload)]);
    assert.deepEqual(forwarded(2), []);
    assert.equal(router.routed, 3);
  });

  it("groups remote destinations into one FORWARD record per container", () => {
    router.fromInstance(0, emit(0, S, [3, 6, 4, 7]));
    allQueued();
    assert.deepEqual(forwarded(1), [forwardRecord(0, S, [3, 6], payload)]);
    assert.deepEqual(forwarded(2), [forwardRecord(0, S, [4, 7], payload)]);
    assert.equal(router.routed, 4);
    assert.equal(router.dropped, 0);
    for (const task of local.keys()) assert.deepEqual(delivered(task), []);
  });

  it("splits a mixed emit between local delivery and peers", () => {
    router.fromInstance(0, emit(0, S, [2, 3, 5, 6, 7]));
    allQueued();
    assert.deepEqual(delivered(2), [deliverRecord(0, S, 2, payload)]);
    assert.deepEqual(delivered(5), [deliverRecord(0, S, 5, payload)]);
    assert.deepEqual(forwarded(1), [forwardRecord(0, S, [3, 6], payload)]);
    assert.deepEqual(forwarded(2), [forwardRecord(0, S, [7], payload)]);
    assert.equal(router.routed, 5);
    assert.equal(router.dropped, 0);
  });

  it("routes every record of a frame in order and calls queued() once per outlet", () => {
    const p = (i: number) => Buffer.from([i]);
    router.fromInstance(
      0,
      emits(
        emitRecord(0, S, [2, 3], p(0)),
        emitRecord(0, OTHER, [8], p(1)),
        emitRecord(0, S, [5, 6, 7], p(2)),
        emitRecord(0, S, [2], p(3)),
        emitRecord(0, S, [4, 3], p(4)),
      ),
    );
    allQueued();
    assert.deepEqual(delivered(2), [deliverRecord(0, S, 2, p(0)), deliverRecord(0, S, 2, p(3))]);
    assert.deepEqual(delivered(5), [deliverRecord(0, S, 5, p(2))]);
    assert.deepEqual(delivered(8), [deliverRecord(0, OTHER, 8, p(1))]);
    assert.deepEqual(forwarded(1), [
      forwardRecord(0, S, [3], p(0)),
      forwardRecord(0, S, [6], p(2)),
      forwardRecord(0, S, [3], p(4)),
    ]);
    assert.deepEqual(forwarded(2), [
      forwardRecord(0, S, [7], p(2)),
      forwardRecord(0, S, [4], p(4)),
    ]);
    for (const task of [2, 5, 8]) assert.equal(local.get(task)!.queuedCalls, 1, `task ${task}`);
    assert.equal(local.get(0)!.queuedCalls, 0, "an untouched outlet is not queued");
    for (const outlet of peers.values()) assert.equal(outlet.queuedCalls, 1);
    assert.equal(local.get(2)!.frames.length, 1, "one batch for the whole frame");
    assert.equal(router.routed, 9);
  });

  it("passes payloads through untouched, empty and large ones too", () => {
    const garbage = Buffer.from([0x00, 0xc1, 0xff, 0x93]); // not even valid msgpack
    const empty = Buffer.alloc(0);
    const large = Buffer.alloc(200_000, 0xab);
    large.writeUInt32LE(0xdeadbeef, 100_000);
    router.fromInstance(
      0,
      emits(
        emitRecord(0, S, [2, 3], garbage),
        emitRecord(0, S, [2, 3], empty),
        emitRecord(0, S, [2, 3], large),
      ),
    );
    const expected = [garbage, empty, large];
    assert.deepEqual(
      delivered(2).map((r) => r.payload),
      expected,
    );
    assert.deepEqual(
      forwarded(1).map((r) => r.payload),
      expected,
    );
  });

  it("drops and counts tuples for remote tasks that are not running", () => {
    router.remoteRunning = new Set([3, 4, 7]);
    router.fromInstance(0, emit(0, S, [3, 6]));
    assert.deepEqual(forwarded(1), [forwardRecord(0, S, [3], payload)]);
    assert.equal(router.dropped, 1);
    assert.equal(router.routed, 1);

    router.fromInstance(0, emit(0, S, [6]));
    assert.equal(router.dropped, 2, "single destination not running");

    router.remoteRunning = new Set();
    router.fromInstance(0, emit(0, S, [3, 6, 4]));
    allQueued();
    assert.equal(forwarded(1).length, 1, "no record when no destination is running");
    assert.deepEqual(forwarded(2), []);
    assert.equal(router.dropped, 5);
    assert.equal(router.routed, 1);
  });

  it("drops and counts tuples for containers without a peer outlet", () => {
    router.peers.delete(2);
    router.fromInstance(0, emit(0, S, [3, 4, 7]));
    assert.deepEqual(forwarded(1), [forwardRecord(0, S, [3], payload)]);
    assert.deepEqual(forwarded(2), []);
    assert.equal(router.dropped, 2);
    assert.equal(router.routed, 1);
    router.fromInstance(0, emit(0, S, [4]));
    assert.equal(router.dropped, 3, "single destination without a peer");
    // Not running and no peer: each tuple counted once.
    router.remoteRunning.delete(7);
    router.fromInstance(0, emit(0, S, [4, 7]));
    assert.equal(router.dropped, 5);
    assert.equal(peers.get(2)!.queuedCalls, 0);
  });

  it("drops and counts tuples for local tasks without an outlet", () => {
    router.local.delete(5);
    router.fromInstance(0, emit(0, S, [2, 5]));
    router.fromInstance(0, emit(0, S, [5]));
    assert.deepEqual(delivered(2), [deliverRecord(0, S, 2, payload)]);
    assert.deepEqual(delivered(5), []);
    assert.equal(router.dropped, 2);
    assert.equal(router.routed, 1);
  });

  it("rejects an emit record without destinations as malformed", () => {
    assert.throws(
      () => router.fromInstance(0, emit(0, NOBODY, [])),
      isWireError("FRAME_MALFORMED"),
    );
    assert.throws(() => router.fromInstance(2, emit(2, X, [])), isWireError("FRAME_MALFORMED"));
    assert.ok(nothingSent());
    assert.equal(router.routed + router.dropped, 0);
  });

  it("rejects truncated records as malformed, after routing the complete ones", () => {
    const whole = emits(emitRecord(0, S, [2], payload), emitRecord(0, S, [5], payload));
    for (let cut = 1; cut < whole.length; cut++) {
      const r = new Router(plan, 0);
      const two = new RecordingOutlet();
      const five = new RecordingOutlet();
      r.local.set(2, two);
      r.local.set(5, five);
      const bytes = whole.subarray(0, cut);
      const firstEnds = whole.length / 2;
      if (cut === firstEnds) {
        r.fromInstance(0, bytes);
      } else {
        assert.throws(() => r.fromInstance(0, bytes), isWireError("FRAME_MALFORMED"), `cut ${cut}`);
      }
      assert.equal(two.records(DELIVER).length, cut >= firstEnds ? 1 : 0, `cut ${cut}`);
      assert.equal(five.records(DELIVER).length, 0, `cut ${cut}`);
      assert.equal(two.unqueued, 0, "routed records are queued even when the frame fails");
    }
    const forwardWhole = forward(1, S, [2, 5]);
    for (let cut = 1; cut < forwardWhole.length; cut++) {
      assert.throws(
        () => router.fromPeer(forwardWhole.subarray(0, cut)),
        isWireError("FRAME_MALFORMED"),
        `forward cut ${cut}`,
      );
    }
    assert.ok(nothingSent());
  });

  it("rejects emits to tasks that do not consume the stream, before sending the tuple", () => {
    assert.throws(
      () => router.fromInstance(0, emit(0, S, [2, 8])),
      invalid(/task 8 does not consume stream 0/),
    );
    assert.throws(
      () => router.fromInstance(0, emit(0, S, [2, 0])),
      invalid(/task 0 does not consume stream 0/),
    );
    assert.throws(
      () => router.fromInstance(0, emit(0, OTHER, [2])),
      invalid(/task 2 does not consume stream 1/),
    );
    assert.throws(
      () => router.fromInstance(0, emit(0, NOBODY, [5])),
      invalid(/does not consume stream 2/),
    );
    assert.throws(
      () => router.fromInstance(0, emit(0, S, [3, 99])),
      invalid(/task 99 does not consume stream 0/),
    );
    assert.throws(
      () => router.fromInstance(0, emit(0, S, [3, 0xffffffff])),
      invalid(/task 4294967295 does not consume/),
    );
    // b consumes a/x (index 0 of a) and src/s (index 0 of src); a (task 2) does not consume x.
    assert.throws(
      () => router.fromInstance(2, emit(2, X, [2])),
      invalid(/task 2 does not consume stream 0/),
    );
    assert.ok(nothingSent(), "a rejected record sends nothing");
    assert.equal(router.routed + router.dropped, 0);
  });

  it("rejects emits on a stream index the task does not declare", () => {
    assert.throws(() => router.fromInstance(0, emit(0, 3, [5])), invalid(/task 0 has no stream 3/));
    assert.throws(
      () => router.fromInstance(0, emit(0, 0xffff, [5])),
      invalid(/task 0 has no stream 65535/),
    );
    assert.throws(() => router.fromInstance(5, emit(5, 0, [2])), invalid(/task 5 has no stream 0/));
    assert.throws(() => router.fromInstance(2, emit(2, 1, [5])), invalid(/task 2 has no stream 1/));
    assert.ok(nothingSent());
    assert.equal(router.routed + router.dropped, 0);
  });

  it("routes the records before a rejected one, and queues them", () => {
    const bytes = emits(
      emitRecord(0, S, [2, 3], payload),
      emitRecord(0, S, [8], payload),
      emitRecord(0, S, [5], payload),
    );
    assert.throws(() => router.fromInstance(0, bytes), invalid(/task 8 does not consume/));
    allQueued();
    assert.deepEqual(delivered(2), [deliverRecord(0, S, 2, payload)]);
    assert.deepEqual(forwarded(1), [forwardRecord(0, S, [3], payload)]);
    assert.deepEqual(delivered(5), [], "nothing after the rejected record");
    assert.deepEqual(delivered(8), []);
  });

  it("rejects an emit record whose srcTask is not the registered task (FRAME_INVALID)", () => {
    // Task 1 is another replica of src: its stream and destinations would be valid.
    assert.throws(
      () => router.fromInstance(0, emit(1, S, [2])),
      invalid(/task 0 sent a tuple as 1/),
    );
    assert.throws(() => router.fromInstance(0, emit(1, S, [3, 5])), invalid(/as 1/));
    assert.throws(
      () => router.fromInstance(1, emit(0, S, [2])),
      invalid(/task 1 sent a tuple as 0/),
    );
    // Another stage, a task outside the plan, the largest srcTask.
    assert.throws(
      () => router.fromInstance(2, emit(0, S, [5])),
      invalid(/task 2 sent a tuple as 0/),
    );
    assert.throws(() => router.fromInstance(0, emit(99, S, [2])), invalid(/as 99/));
    assert.throws(() => router.fromInstance(0, emit(0xffffffff, S, [2])), invalid(/as 4294967295/));
    assert.ok(nothingSent(), "a record under another task's name sends nothing");
    assert.equal(router.routed + router.dropped, 0);
  });

  it("routes the records before one with a wrong srcTask, and nothing of it or after", () => {
    const records = [
      emitRecord(0, S, [2], Buffer.from("a")),
      emitRecord(0, S, [2], Buffer.from("b")),
      emitRecord(0, S, [3, 5], Buffer.from("c")),
      emitRecord(1, S, [2], Buffer.from("forged")),
      emitRecord(0, S, [2], Buffer.from("d")),
    ];
    assert.throws(() => router.fromInstance(0, emits(...records)), invalid(/as 1/));
    allQueued();
    assert.deepEqual(delivered(2), [
      deliverRecord(0, S, 2, Buffer.from("a")),
      deliverRecord(0, S, 2, Buffer.from("b")),
    ]);
    assert.deepEqual(delivered(5), [deliverRecord(0, S, 5, Buffer.from("c"))]);
    assert.deepEqual(forwarded(1), [forwardRecord(0, S, [3], Buffer.from("c"))]);
    assert.equal(router.routed, 4);
  });

  it("delivers a peer's forward to its local destinations", () => {
    router.fromPeer(forward(1, S, [2, 5]));
    allQueued();
    assert.deepEqual(delivered(2), [deliverRecord(1, S, 2, payload)]);
    assert.deepEqual(delivered(5), [deliverRecord(1, S, 5, payload)]);
    router.fromPeer(
      forwards(forwardRecord(3, X, [5], Buffer.from([1])), forwardRecord(1, OTHER, [8], payload)),
    );
    allQueued();
    assert.deepEqual(delivered(5), [
      deliverRecord(1, S, 5, payload),
      deliverRecord(3, X, 5, Buffer.from([1])),
    ]);
    assert.deepEqual(delivered(8), [deliverRecord(1, OTHER, 8, payload)]);
    assert.equal(router.routed, 4);
    assert.deepEqual(forwarded(1), [], "never re-forwarded");
    assert.deepEqual(forwarded(2), []);
  });

  it("drops and counts a peer's forward to a local task without an outlet", () => {
    router.local.delete(5);
    router.fromPeer(forward(1, S, [2, 5]));
    assert.deepEqual(delivered(2), [deliverRecord(1, S, 2, payload)]);
    assert.equal(router.dropped, 1);
    assert.equal(router.routed, 1);
  });

  it("rejects a forward to tasks that are not consumers of its stream", () => {
    assert.throws(
      () => router.fromPeer(forward(1, S, [8])),
      invalid(/task 8 does not consume stream 0 of task 1/),
    );
    assert.throws(() => router.fromPeer(forward(1, S, [99])), invalid(/task 99 does not consume/));
    assert.throws(() => router.fromPeer(forward(1, 3, [5])), invalid(/stream 3 of task 1/));
    assert.throws(() => router.fromPeer(forward(1, OTHER, [5])), invalid(/stream 1 of task 1/));
    assert.throws(() => router.fromPeer(forward(3, X, [2])), invalid(/stream 0 of task 3/));
    assert.throws(() => router.fromPeer(forward(99, S, [2])), invalid(/stream 0 of task 99/));
    assert.throws(() => router.fromPeer(forward(1, S, [])), isWireError("FRAME_MALFORMED"));
    assert.ok(nothingSent(), "a rejected forward delivers nothing");
    assert.equal(router.routed + router.dropped, 0);
  });

  it("drops and counts a forward to a consumer that is not here (sent by an older plan)", () => {
    router.fromPeer(forward(1, S, [3]));
    router.fromPeer(forward(1, S, [2, 6]));
    assert.deepEqual(delivered(2), [deliverRecord(1, S, 2, payload)]);
    assert.equal(router.dropped, 2);
    assert.equal(router.routed, 1);
  });

  it("rejects a forward with a non-consumer destination before delivering it anywhere", () => {
    assert.throws(() => router.fromPeer(forward(1, S, [2, 8])), invalid(/task 8 does not/));
    assert.deepEqual(delivered(2), [], "a rejected record delivers nothing");
  });

  it("routes by the placements of the latest plan", () => {
    router.remoteRunning = new Set([3]);
    router.place([{ task: 3, container: 0 }]);
    local.set(3, new RecordingOutlet());
    router.local.set(3, local.get(3)!);
    router.fromInstance(0, emit(0, S, [3]));
    assert.deepEqual(delivered(3), [deliverRecord(0, S, 3, payload)], "moved here: local");
    router.place([{ task: 3, container: null }]);
    router.fromInstance(0, emit(0, S, [3]));
    assert.equal(router.dropped, 1, "moving: nowhere to go");
    router.place([{ task: 3, container: 2 }]);
    router.fromInstance(0, emit(0, S, [3]));
    assert.deepEqual(forwarded(2), [forwardRecord(0, S, [3], payload)], "moved on: to its peer");
  });

  /** The input bytes of each record of `bytes` (a batch as read off the wire). */
  const slices = (bytes: Buffer): Buffer[] => {
    const reader = new TupleReader(bytes);
    const out: Buffer[] = [];
    while (reader.next()) out.push(bytes.subarray(reader.recordStart, reader.payloadEnd));
    return out;
  };

  it("passes a frame of single-destination emits to one remote task on as one run, byte for byte", () => {
    const N = 500;
    const records = Array.from({ length: N }, (_, i) =>
      emitRecord(0, S, [3], Buffer.alloc(i % 7 === 0 ? 0 : (i * 37) % 3000, i & 0xff)),
    );
    const bytes = emits(...records);
    router.fromInstance(0, bytes);
    allQueued();
    const peer = peers.get(1)!;
    assert.deepEqual(peer.bytes(FORWARD), bytes, "the FORWARD records are the EMIT records");
    assert.deepEqual(forwarded(1), records);
    assert.equal(peer.appendRecordsCalls, 1, "one copy for the whole run");
    assert.equal(peer.appendCalls, 0, "no record rebuilt");
    assert.equal(peer.queuedCalls, 1);
    assert.equal(router.routed, N);
    assert.equal(router.dropped, 0);
    assert.ok(nothingSentBut(peer));
  });

  it("passes single-destination records to one local task on as one DELIVER run", () => {
    const records = Array.from({ length: 100 }, (_, i) => emitRecord(0, S, [2], Buffer.from([i])));
    const bytes = emits(...records);
    router.fromInstance(0, bytes);
    const outlet = local.get(2)!;
    assert.deepEqual(outlet.bytes(DELIVER), bytes, "a DELIVER record is the EMIT record");
    assert.equal(outlet.appendRecordsCalls, 1);
    assert.equal(outlet.appendCalls, 0);
    // From a peer: FORWARD records for one local task go on unchanged too.
    const forwardBytes = forwards(
      ...Array.from({ length: 100 }, (_, i) => forwardRecord(1, S, [5], Buffer.from([i, i]))),
    );
    router.fromPeer(forwardBytes);
    allQueued();
    assert.deepEqual(local.get(5)!.bytes(DELIVER), forwardBytes);
    assert.equal(local.get(5)!.appendRecordsCalls, 1);
    assert.equal(router.routed, 200);
  });

  it("a run to a peer may hold records for several of its tasks", () => {
    // Tasks 3 and 6 are both in container 1; a/x from task 2 goes to b (5, 6, 7).
    const records = Array.from({ length: 60 }, (_, i) =>
      emitRecord(0, S, [i % 2 === 0 ? 3 : 6], Buffer.from([i])),
    );
    const bytes = emits(...records);
    router.fromInstance(0, bytes);
    assert.deepEqual(peers.get(1)!.bytes(FORWARD), bytes);
    assert.equal(peers.get(1)!.appendRecordsCalls, 1);
  });

  it("interleaved destinations keep each destination's order and bytes", () => {
    // local 2, remote 3, local 5, remote 4 (container 2), local 2, local 2, remote 6, ...
    const order = [2, 3, 5, 4, 2, 2, 3, 3, 6, 5, 7, 7, 4, 2, 3, 5, 5, 5, 6, 2];
    const records = order.map((dest, i) => emitRecord(0, S, [dest], Buffer.from(`tuple ${i}`)));
    const bytes = emits(...records);
    const input = slices(bytes);
    router.fromInstance(0, bytes);
    allQueued();
    const expect = (dests: number[]) =>
      Buffer.concat(input.filter((_, i) => dests.includes(order[i]!)));
    assert.deepEqual(local.get(2)!.bytes(DELIVER), expect([2]));
    assert.deepEqual(local.get(5)!.bytes(DELIVER), expect([5]));
    assert.deepEqual(peers.get(1)!.bytes(FORWARD), expect([3, 6]));
    assert.deepEqual(peers.get(2)!.bytes(FORWARD), expect([4, 7]));
    assert.equal(router.routed, order.length);
    // Consecutive records for one outlet were copied together: 2,2 and 3,3,6 and 7,7 ...
    assert.equal(local.get(2)!.appendRecordsCalls, 4);
    assert.equal(peers.get(1)!.appendRecordsCalls, 4);
    for (const outlet of outlets()) assert.ok(outlet.queuedCalls <= 1);
  });

  it("a multi-destination record in a run is split in its place", () => {
    const p = (i: number) => Buffer.from([i]);
    const records = [
      emitRecord(0, S, [3], p(0)),
      emitRecord(0, S, [2], p(1)),
      emitRecord(0, S, [2], p(2)),
      emitRecord(0, S, [2, 3, 4, 5], p(3)),
      emitRecord(0, S, [2], p(4)),
      emitRecord(0, S, [3], p(5)),
      emitRecord(0, S, [6, 5, 3, 2], p(6)),
      emitRecord(0, S, [3], p(7)),
    ];
    router.fromInstance(0, emits(...records));
    allQueued();
    const deliver2 = [1, 2, 3, 4, 6].map((i) => deliverRecord(0, S, 2, p(i)));
    assert.deepEqual(delivered(2), deliver2);
    assert.deepEqual(local.get(2)!.bytes(DELIVER), Buffer.concat(deliver2.map(layoutBytes)));
    assert.deepEqual(delivered(5), [deliverRecord(0, S, 5, p(3)), deliverRecord(0, S, 5, p(6))]);
    const forward1 = [
      forwardRecord(0, S, [3], p(0)),
      forwardRecord(0, S, [3], p(3)),
      forwardRecord(0, S, [3], p(5)),
      forwardRecord(0, S, [6, 3], p(6)),
      forwardRecord(0, S, [3], p(7)),
    ];
    assert.deepEqual(forwarded(1), forward1);
    assert.deepEqual(peers.get(1)!.bytes(FORWARD), Buffer.concat(forward1.map(layoutBytes)));
    assert.deepEqual(forwarded(2), [forwardRecord(0, S, [4], p(3))]);
    assert.equal(router.routed, 14);
  });

  it("records dropped inside a run do not corrupt the records after them", () => {
    router.remoteRunning.delete(6); // container 1 is connected, task 6 is down
    router.local.delete(5); // no outlet: 5 is down
    // 3 and 6 share the peer outlet of container 1; 2 and 5 are local.
    const order = [3, 3, 6, 3, 3, 6, 6, 3, 2, 2, 5, 2, 5, 5, 2, 3, 6];
    const records = order.map((dest, i) =>
      emitRecord(0, S, [dest], Buffer.alloc(10 + i, 0x40 + i)),
    );
    const bytes = emits(...records);
    const input = slices(bytes);
    router.fromInstance(0, bytes);
    allQueued();
    const expect = (dest: number) => Buffer.concat(input.filter((_, i) => order[i] === dest));
    assert.deepEqual(peers.get(1)!.bytes(FORWARD), expect(3));
    assert.deepEqual(local.get(2)!.bytes(DELIVER), expect(2));
    assert.deepEqual(
      forwarded(1),
      records.filter((r) => r.dests[0] === 3),
    );
    assert.equal(router.dropped, order.filter((d) => d === 5 || d === 6).length);
    assert.equal(router.routed, order.filter((d) => d === 2 || d === 3).length);
    // From a peer: a local task without an outlet in the middle of a run.
    const fromPeer = [2, 5, 2, 2, 5, 2].map((dest, i) =>
      forwardRecord(1, S, [dest], Buffer.from([i])),
    );
    const peerBytes = forwards(...fromPeer);
    const peerInput = slices(peerBytes);
    router.fromPeer(peerBytes);
    allQueued();
    assert.deepEqual(
      local.get(2)!.bytes(DELIVER),
      Buffer.concat([expect(2), ...peerInput.filter((_, i) => fromPeer[i]!.dests[0] === 2)]),
    );
  });

  it("a run ends with its frame: the next frame's records follow it", () => {
    const first = emits(
      emitRecord(0, S, [3], Buffer.from("1")),
      emitRecord(0, S, [3], Buffer.from("2")),
    );
    const second = emits(emitRecord(0, S, [3], Buffer.from("3")));
    router.fromInstance(0, first);
    allQueued();
    assert.equal(peers.get(1)!.queuedCalls, 1, "queued at the end of the first frame");
    router.fromInstance(0, second);
    router.fromPeer(forward(1, S, [2]));
    allQueued();
    assert.deepEqual(peers.get(1)!.bytes(FORWARD), Buffer.concat([first, second]));
    assert.deepEqual(delivered(2), [deliverRecord(1, S, 2, payload)]);
  });

  it("delivers a peer's records before one that fails validation, nothing of that one", () => {
    const records = [
      forwardRecord(1, S, [2], Buffer.from("a")),
      forwardRecord(1, S, [2], Buffer.from("b")),
      forwardRecord(1, S, [2, 5], Buffer.from("c")),
      forwardRecord(1, S, [5], Buffer.from("d")),
      forwardRecord(1, S, [2, 5, 8], Buffer.from("bad")), // 8 does not consume s
      forwardRecord(1, S, [2], Buffer.from("after")),
    ];
    assert.throws(() => router.fromPeer(forwards(...records)), invalid(/task 8 does not/));
    allQueued();
    assert.deepEqual(
      delivered(2),
      ["a", "b", "c"].map((s) => deliverRecord(1, S, 2, Buffer.from(s))),
    );
    assert.deepEqual(
      delivered(5),
      ["c", "d"].map((s) => deliverRecord(1, S, 5, Buffer.from(s))),
    );
    assert.equal(router.routed, 5);
  });

  it("property: long frames with runs match a reference model, byte for byte", () => {
    withSeed("router runs", (random) => {
      const consumersOf = new Map<string, number[]>([
        ["0/0", [2, 3, 4, 5, 6, 7]],
        ["0/1", [8]],
        ["2/0", [5, 6, 7]],
      ]);
      for (let round = 0; round < 200; round++) {
        const r = new Router(plan, 0);
        const localOutlets = new Map<number, RecordingOutlet>();
        for (const task of [0, 2, 5, 8]) {
          if (random() < 0.8) localOutlets.set(task, new RecordingOutlet());
        }
        const peerOutlets = new Map<number, RecordingOutlet>();
        for (const container of [1, 2]) {
          if (random() < 0.8) peerOutlets.set(container, new RecordingOutlet());
        }
        for (const [task, outlet] of localOutlets) r.local.set(task, outlet);
        for (const [container, outlet] of peerOutlets) r.peers.set(container, outlet);
        r.remoteRunning = new Set([1, 3, 4, 6, 7].filter(() => random() < 0.7));

        const expectLocal = new Map<number, TupleRecord[]>();
        const expectPeer = new Map<number, TupleRecord[]>();
        const push = (map: Map<number, TupleRecord[]>, key: number, record: TupleRecord) => {
          map.set(key, [...(map.get(key) ?? []), record]);
        };
        let routed = 0;
        let dropped = 0;
        let sequence = 0;
        for (let frame = 0; frame < 4; frame++) {
          const src = random() < 0.6 ? 0 : 2;
          const fromPeer = random() < 0.25;
          const records: TupleRecord[] = [];
          let last: TupleRecord | undefined;
          for (let i = int(random, 1, 60); i > 0; i--) {
            // Distinct payloads: a counter, then a random fill.
            const bytes = Buffer.alloc(pick(random, [0, 1, 5, 40, 300, 5000]), int(random, 0, 255));
            if (bytes.length >= 4) bytes.writeUInt32LE(++sequence, 0);
            // Mostly the last record's destinations again (a run), else fresh ones.
            let stream: number;
            let dests: number[];
            if (last && random() < 0.6) {
              stream = last.stream;
              dests = last.dests;
            } else {
              stream = src === 0 ? pick(random, [S, OTHER]) : X;
              let all = consumersOf.get(`${src}/${stream}`)!;
              if (fromPeer) all = all.filter((t) => plan.tasks[t]!.container === 0);
              dests = random() < 0.7 ? [pick(random, all)] : all.filter(() => random() < 0.5);
              if (dests.length === 0) dests = [pick(random, all)];
            }
            const record = emitRecord(src, stream, dests, bytes);
            records.push(record);
            last = record;

            const byContainer = new Map<number, number[]>();
            for (const dest of dests) {
              const container = plan.tasks[dest]!.container;
              if (container === 0) {
                if (localOutlets.has(dest)) {
                  push(expectLocal, dest, deliverRecord(src, stream, dest, bytes));
                  routed++;
                } else dropped++;
              } else if (!r.remoteRunning.has(dest) || !peerOutlets.has(container)) {
                dropped++;
              } else {
                byContainer.set(container, [...(byContainer.get(container) ?? []), dest]);
                routed++;
              }
            }
            for (const [container, live] of byContainer) {
              push(expectPeer, container, forwardRecord(src, stream, live, bytes));
            }
          }
          if (fromPeer) r.fromPeer(forwards(...records));
          else r.fromInstance(src, emits(...records));
          for (const outlet of [...localOutlets.values(), ...peerOutlets.values()]) {
            assert.equal(outlet.unqueued, 0, `round ${round}: appends not queued`);
          }
        }
        for (const [task, outlet] of localOutlets) {
          const expected = expectLocal.get(task) ?? [];
          assert.deepEqual(
            outlet.bytes(DELIVER),
            Buffer.concat(expected.map(layoutBytes)),
            `round ${round}, task ${task}`,
          );
        }
        for (const [container, outlet] of peerOutlets) {
          const expected = expectPeer.get(container) ?? [];
          assert.deepEqual(
            outlet.bytes(FORWARD),
            Buffer.concat(expected.map(layoutBytes)),
            `round ${round}, peer ${container}`,
          );
        }
        assert.equal(r.routed, routed, `round ${round} routed`);
        assert.equal(r.dropped, dropped, `round ${round} dropped`);
      }
    });
  });

  it("property: matches a reference model on random frames of emits", () => {
    withSeed("router model", (random) => {
      const consumersOf = new Map<string, number[]>([
        ["0/0", [2, 3, 4, 5, 6, 7]],
        ["0/1", [8]],
        ["2/0", [5, 6, 7]],
      ]);
      const streamsOf = new Map<number, number[]>([
        [0, [S, OTHER]],
        [2, [X]],
      ]);
      for (let round = 0; round < 300; round++) {
        const r = new Router(plan, 0);
        const localOutlets = new Map<number, RecordingOutlet>();
        for (const task of [0, 2, 5, 8]) {
          if (random() < 0.8) {
            localOutlets.set(task, new RecordingOutlet());
            r.local.set(task, localOutlets.get(task)!);
          }
        }
        const peerOutlets = new Map<number, RecordingOutlet>();
        for (const container of [1, 2]) {
          if (random() < 0.8) {
            peerOutlets.set(container, new RecordingOutlet());
            r.peers.set(container, peerOutlets.get(container)!);
          }
        }
        r.remoteRunning = new Set([1, 3, 4, 6, 7].filter(() => random() < 0.7));

        const expectLocal = new Map<number, TupleRecord[]>();
        const expectPeer = new Map<number, TupleRecord[]>();
        const push = (map: Map<number, TupleRecord[]>, key: number, record: TupleRecord) => {
          map.set(key, [...(map.get(key) ?? []), record]);
        };
        let routed = 0;
        let dropped = 0;
        for (let frame = 0; frame < 8; frame++) {
          const src = random() < 0.6 ? 0 : 2;
          const streams = streamsOf.get(src)!;
          const records: TupleRecord[] = [];
          for (let i = int(random, 1, 5); i > 0; i--) {
            const stream = streams[int(random, 0, streams.length - 1)]!;
            const all = consumersOf.get(`${src}/${stream}`)!;
            let dests = all.filter(() => random() < 0.5);
            if (dests.length === 0) dests = [all[int(random, 0, all.length - 1)]!];
            const bytes = Buffer.from([frame, i, round & 0xff]);
            records.push(emitRecord(src, stream, dests, bytes));

            const byContainer = new Map<number, number[]>();
            for (const dest of dests) {
              const container = plan.tasks[dest]!.container;
              if (container === 0) {
                if (localOutlets.has(dest)) {
                  push(expectLocal, dest, deliverRecord(src, stream, dest, bytes));
                  routed++;
                } else dropped++;
              } else if (!r.remoteRunning.has(dest) || !peerOutlets.has(container)) {
                dropped++;
              } else {
                byContainer.set(container, [...(byContainer.get(container) ?? []), dest]);
                routed++;
              }
            }
            for (const [container, live] of byContainer) {
              push(expectPeer, container, forwardRecord(src, stream, live, bytes));
            }
          }
          r.fromInstance(src, emits(...records));
          for (const outlet of [...localOutlets.values(), ...peerOutlets.values()]) {
            assert.equal(outlet.unqueued, 0, `round ${round}: appends not queued`);
          }
        }
        for (const [task, outlet] of localOutlets) {
          assert.deepEqual(
            outlet.records(DELIVER),
            expectLocal.get(task) ?? [],
            `round ${round}, task ${task}`,
          );
        }
        for (const [container, outlet] of peerOutlets) {
          assert.deepEqual(
            outlet.records(FORWARD),
            expectPeer.get(container) ?? [],
            `round ${round}, peer ${container}`,
          );
        }
        assert.equal(r.routed, routed, `round ${round} routed`);
        assert.equal(r.dropped, dropped, `round ${round} dropped`);
      }
    });
  });
});

describe("Router (container 1)", () => {
  it("sees the plan from its own container", () => {
    const router = new Router(plan, 1);
    const mine = new RecordingOutlet();
    const peer0 = new RecordingOutlet();
    router.local.set(3, mine);
    router.peers.set(0, peer0);
    router.remoteRunning = new Set([2, 5]);
    router.fromInstance(1, emit(1, S, [3, 2, 5]));
    assert.deepEqual(mine.records(DELIVER), [deliverRecord(1, S, 3, payload)]);
    assert.deepEqual(peer0.records(FORWARD), [forwardRecord(1, S, [2, 5], payload)]);
    router.fromPeer(forward(0, S, [2])); // not here: dropped
    assert.equal(router.dropped, 1);
    router.fromPeer(forward(0, S, [3]));
    assert.deepEqual(mine.records(DELIVER), [
      deliverRecord(1, S, 3, payload),
      deliverRecord(0, S, 3, payload),
    ]);
  });
});
