import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";
import { grouping, TopologyBuilder } from "../../src/platform/api/topology.js";
import { pack, type PhysicalPlan } from "../../src/platform/plan/physical-plan.js";
import { Router, type Outlet } from "../../src/platform/stmgr/router.js";
import { WireError } from "../../src/platform/wire/errors.js";
import { decodeBody, FrameDecoder } from "../../src/platform/wire/frames.js";
import {
  DELIVER,
  EMIT,
  FORWARD,
  type Emit,
  type Forward,
} from "../../src/platform/wire/messages.js";
import { int, withSeed } from "./helpers/random.js";
import { noopSource, noopStage, sub } from "./helpers/topologies.js";

/**
 * Three containers.
 *   src (2): outputs s, other, nobody         tasks 0 (c0), 1 (c1)
 *   a   (3): reads src/s shuffle; outputs x   tasks 2 (c0), 3 (c1), 4 (c2)
 *   b   (3): reads src/s all, a/x fields      tasks 5 (c0), 6 (c1), 7 (c2)
 *   c   (1): reads src/other                  task  8 (c0)
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

/** An outlet that records the frames it is given. */
class FakeOutlet implements Outlet {
  readonly frames: Buffer[] = [];
  sendFrame(frame: Buffer): void {
    this.frames.push(frame);
  }
  /** The frames as decoded messages; every frame holds exactly one body. */
  decoded(): unknown[] {
    return this.frames.map((frame) => {
      const bodies = new FrameDecoder().push(frame);
      assert.equal(bodies.length, 1, "one body per frame");
      return decodeBody(bodies[0]!);
    });
  }
}

const payload = Buffer.from("opaque tuple bytes");
const emit = (stream: string, dests: number[], bytes: Uint8Array = payload): Emit => [
  EMIT,
  stream,
  dests,
  bytes,
];
const forward = (src: number, stream: string, dests: number[]): Forward => [
  FORWARD,
  src,
  stream,
  dests,
  payload,
];

function invalid(pattern: RegExp) {
  return (error: unknown) =>
    error instanceof WireError && error.code === "FRAME_INVALID" && pattern.test(error.message);
}

describe("Router (container 0)", () => {
  let router: Router;
  let local: Map<number, FakeOutlet>;
  let peers: Map<number, FakeOutlet>;

  beforeEach(() => {
    router = new Router(plan, 0);
    local = new Map([0, 2, 5, 8].map((task) => [task, new FakeOutlet()]));
    peers = new Map([1, 2].map((container) => [container, new FakeOutlet()]));
    for (const [task, outlet] of local) router.local.set(task, outlet);
    for (const [container, outlet] of peers) router.peers.set(container, outlet);
    router.remoteRunning = new Set([1, 3, 4, 6, 7]);
  });

  const allFrames = () => [...local.values(), ...peers.values()].flatMap((o) => o.frames);

  it("delivers to local tasks with one DELIVER frame shared by all of them", () => {
    router.fromInstance(0, emit("s", [2, 5]));
    assert.equal(local.get(2)!.frames.length, 1);
    assert.equal(local.get(5)!.frames.length, 1);
    assert.equal(local.get(2)!.frames[0], local.get(5)!.frames[0], "the same encoded frame");
    assert.deepEqual(local.get(2)!.decoded(), [[DELIVER, 0, "s", payload]]);
    assert.equal(local.get(0)!.frames.length + local.get(8)!.frames.length, 0);
    assert.equal(peers.get(1)!.frames.length + peers.get(2)!.frames.length, 0);
    assert.equal(router.routed, 2);
    assert.equal(router.dropped, 0);
  });

  it("groups remote destinations into one FORWARD per container", () => {
    router.fromInstance(0, emit("s", [3, 6, 4, 7]));
    assert.deepEqual(peers.get(1)!.decoded(), [[FORWARD, 0, "s", [3, 6], payload]]);
    assert.deepEqual(peers.get(2)!.decoded(), [[FORWARD, 0, "s", [4, 7], payload]]);
    assert.equal(router.routed, 4);
    assert.equal(router.dropped, 0);
    for (const outlet of local.values()) assert.equal(outlet.frames.length, 0);
  });

  it("splits a mixed emit between local delivery and peers", () => {
    router.fromInstance(0, emit("s", [2, 3, 5, 6, 7]));
    assert.deepEqual(local.get(2)!.decoded(), [[DELIVER, 0, "s", payload]]);
    assert.deepEqual(local.get(5)!.decoded(), [[DELIVER, 0, "s", payload]]);
    assert.deepEqual(peers.get(1)!.decoded(), [[FORWARD, 0, "s", [3, 6], payload]]);
    assert.deepEqual(peers.get(2)!.decoded(), [[FORWARD, 0, "s", [7], payload]]);
    assert.equal(router.routed, 5);
    assert.equal(allFrames().length, 4);
  });

  it("passes the payload through untouched", () => {
    const bytes = Buffer.from([0x00, 0xc1, 0xff, 0x93]); // not even valid msgpack
    router.fromInstance(0, emit("s", [2, 3], bytes));
    const [, , , delivered] = local.get(2)!.decoded()[0] as [number, number, string, Buffer];
    const [, , , , forwarded] = peers.get(1)!.decoded()[0] as [
      number,
      number,
      string,
      number[],
      Buffer,
    ];
    assert.ok(bytes.equals(delivered));
    assert.ok(bytes.equals(forwarded));
  });

  it("drops and counts tuples for remote tasks that are not running", () => {
    router.remoteRunning = new Set([3, 4, 7]);
    router.fromInstance(0, emit("s", [3, 6]));
    assert.deepEqual(peers.get(1)!.decoded(), [[FORWARD, 0, "s", [3], payload]]);
    assert.equal(router.dropped, 1);
    assert.equal(router.routed, 1);

    router.remoteRunning = new Set();
    router.fromInstance(0, emit("s", [3, 6, 4]));
    assert.equal(peers.get(1)!.frames.length, 1, "no frame when no destination is running");
    assert.equal(peers.get(2)!.frames.length, 0);
    assert.equal(router.dropped, 4);
    assert.equal(router.routed, 1);
  });

  it("drops and counts tuples for containers without a peer outlet", () => {
    router.peers.delete(2);
    router.fromInstance(0, emit("s", [3, 4, 7]));
    assert.deepEqual(peers.get(1)!.decoded(), [[FORWARD, 0, "s", [3], payload]]);
    assert.equal(peers.get(2)!.frames.length, 0);
    assert.equal(router.dropped, 2);
    assert.equal(router.routed, 1);
    // Not running and no peer: each tuple counted once.
    router.remoteRunning.delete(7);
    router.fromInstance(0, emit("s", [4, 7]));
    assert.equal(router.dropped, 4);
  });

  it("drops and counts tuples for local tasks without an outlet", () => {
    router.local.delete(5);
    router.fromInstance(0, emit("s", [2, 5]));
    assert.equal(local.get(2)!.frames.length, 1);
    assert.equal(local.get(5)!.frames.length, 0);
    assert.equal(router.dropped, 1);
    assert.equal(router.routed, 1);
  });

  it("accepts an emit without destinations on a stream nobody consumes", () => {
    router.fromInstance(0, emit("nobody", []));
    router.fromInstance(2, emit("x", []));
    assert.equal(allFrames().length, 0);
    assert.equal(router.routed + router.dropped, 0);
  });

  it("rejects emits to tasks that do not consume the stream, before sending anything", () => {
    assert.throws(
      () => router.fromInstance(0, emit("s", [2, 8])),
      invalid(/task 8 does not consume s/),
    );
    assert.throws(
      () => router.fromInstance(0, emit("s", [2, 0])),
      invalid(/task 0 does not consume s/),
    );
    assert.throws(
      () => router.fromInstance(0, emit("other", [2])),
      invalid(/task 2 does not consume other/),
    );
    assert.throws(
      () => router.fromInstance(0, emit("nobody", [5])),
      invalid(/does not consume nobody/),
    );
    assert.throws(
      () => router.fromInstance(0, emit("s", [3, 99])),
      invalid(/task 99 does not consume s/),
    );
    // b consumes a/x, not src/x; a (task 2) emits x.
    assert.throws(
      () => router.fromInstance(2, emit("x", [2])),
      invalid(/task 2 does not consume x/),
    );
    assert.equal(allFrames().length, 0, "a rejected emit sends nothing");
    assert.equal(router.routed + router.dropped, 0);
  });

  it("rejects emits on a stream the task does not declare", () => {
    assert.throws(() => router.fromInstance(0, emit("x", [5])), invalid(/task 0 has no stream x/));
    assert.throws(() => router.fromInstance(5, emit("s", [2])), invalid(/task 5 has no stream s/));
    assert.throws(() => router.fromInstance(2, emit("s", [5])), invalid(/task 2 has no stream s/));
    assert.throws(
      () => router.fromInstance(99, emit("s", [2])),
      invalid(/task 99 has no stream s/),
    );
    assert.equal(allFrames().length, 0);
  });

  it("delivers a peer's forward to its local destinations", () => {
    router.fromPeer(forward(1, "s", [2, 5]));
    assert.deepEqual(local.get(2)!.decoded(), [[DELIVER, 1, "s", payload]]);
    assert.equal(local.get(2)!.frames[0], local.get(5)!.frames[0]);
    router.fromPeer(forward(3, "x", [5]));
    assert.deepEqual(local.get(5)!.decoded()[1], [DELIVER, 3, "x", payload]);
    assert.equal(router.routed, 3);
    assert.equal(
      peers.get(1)!.frames.length + peers.get(2)!.frames.length,
      0,
      "never re-forwarded",
    );
  });

  it("rejects a forward to tasks that are not local, or not consumers", () => {
    assert.throws(
      () => router.fromPeer(forward(1, "s", [2, 3])),
      invalid(/forward of s to task 3 not here/),
    );
    assert.throws(() => router.fromPeer(forward(1, "s", [6])), invalid(/task 6 not here/));
    assert.throws(() => router.fromPeer(forward(1, "s", [8])), invalid(/task 8 not here/));
    assert.throws(() => router.fromPeer(forward(1, "s", [99])), invalid(/task 99 not here/));
    assert.throws(() => router.fromPeer(forward(1, "x", [5])), invalid(/forward of x to task 5/));
    assert.throws(() => router.fromPeer(forward(1, "zzz", [5])), invalid(/forward of zzz/));
    assert.throws(
      () => router.fromPeer(forward(99, "s", [2])),
      invalid(/forward from unknown task 99/),
    );
    assert.equal(allFrames().length, 0, "a rejected forward delivers nothing");
  });

  it("property: matches a reference model on random emits", () => {
    withSeed("router model", (random) => {
      const consumersOf: Record<string, number[]> = {
        s: [2, 3, 4, 5, 6, 7],
        other: [8],
        x: [5, 6, 7],
      };
      const emitters: [number, string][] = [
        [0, "s"],
        [0, "other"],
        [2, "x"],
      ];
      for (let round = 0; round < 300; round++) {
        const r = new Router(plan, 0);
        const outlets = new Map<number, FakeOutlet>();
        for (const task of [0, 2, 5, 8]) {
          if (random() < 0.8) {
            outlets.set(task, new FakeOutlet());
            r.local.set(task, outlets.get(task)!);
          }
        }
        const peerOutlets = new Map<number, FakeOutlet>();
        for (const container of [1, 2]) {
          if (random() < 0.8) {
            peerOutlets.set(container, new FakeOutlet());
            r.peers.set(container, peerOutlets.get(container)!);
          }
        }
        r.remoteRunning = new Set([1, 3, 4, 6, 7].filter(() => random() < 0.7));

        const expectLocal = new Map<number, unknown[]>();
        const expectPeer = new Map<number, unknown[]>();
        let routed = 0;
        let dropped = 0;
        for (let i = 0; i < 20; i++) {
          const [src, stream] = emitters[int(random, 0, emitters.length - 1)]!;
          const dests = consumersOf[stream]!.filter(() => random() < 0.5);
          const bytes = Buffer.from([i, round & 0xff]);
          r.fromInstance(src, emit(stream, dests, bytes));
          const byContainer = new Map<number, number[]>();
          for (const dest of dests) {
            const container = plan.tasks[dest]!.container;
            if (container === 0) {
              if (outlets.has(dest)) {
                const list = expectLocal.get(dest) ?? [];
                list.push([DELIVER, src, stream, bytes]);
                expectLocal.set(dest, list);
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
            const list = expectPeer.get(container) ?? [];
            list.push([FORWARD, src, stream, live, bytes]);
            expectPeer.set(container, list);
          }
        }
        for (const [task, outlet] of outlets) {
          assert.deepEqual(
            outlet.decoded(),
            expectLocal.get(task) ?? [],
            `round ${round}, task ${task}`,
          );
        }
        for (const [container, outlet] of peerOutlets) {
          assert.deepEqual(
            outlet.decoded(),
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
    const mine = new FakeOutlet();
    const peer0 = new FakeOutlet();
    router.local.set(3, mine);
    router.peers.set(0, peer0);
    router.remoteRunning = new Set([2, 5]);
    router.fromInstance(1, emit("s", [3, 2, 5]));
    assert.deepEqual(mine.decoded(), [[DELIVER, 1, "s", payload]]);
    assert.deepEqual(peer0.decoded(), [[FORWARD, 1, "s", [2, 5], payload]]);
    assert.throws(() => router.fromPeer(forward(0, "s", [2])), invalid(/task 2 not here/));
    router.fromPeer(forward(0, "s", [3]));
    assert.deepEqual(mine.decoded()[1], [DELIVER, 0, "s", payload]);
  });
});
