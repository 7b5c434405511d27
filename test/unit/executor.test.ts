import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pack as msgpack, unpack } from "msgpackr";
import { pino } from "pino";
import type { Incoming, Source, Stage, StageContext } from "../../src/platform/api/stage.js";
import { grouping, TopologyBuilder, TopologyError } from "../../src/platform/api/topology.js";
import { Executor } from "../../src/platform/instance/executor.js";
import { pack } from "../../src/platform/plan/physical-plan.js";
import { fieldsHash } from "../../src/platform/plan/routing.js";
import { Inbox } from "./helpers/net.js";
import { sub } from "./helpers/topologies.js";
import { isWireError } from "./helpers/tuples.js";

/** What the stage code of one replica saw. */
class Probe {
  context: StageContext | undefined;
  readonly tuples: Incoming[] = [];
  readonly timers = new Inbox<string>();
  get ctx(): StageContext {
    assert.ok(this.context, "the replica was started");
    return this.context;
  }
}

const probes = new Map<string, Probe>();
function probeOf(stage: string, index: number): Probe {
  const key = `${stage}:${index}`;
  if (!probes.has(key)) probes.set(key, new Probe());
  return probes.get(key)!;
}

const sourceOf = (index: number): Source => {
  const probe = probeOf("src", index);
  return {
    onStart: (ctx) => (probe.context = ctx),
    onTimer: (name) => probe.timers.push(name),
  };
};

function stageOf(name: string) {
  return (index: number): Stage => {
    const probe = probeOf(name, index);
    return {
      onStart: (ctx) => (probe.context = ctx),
      onTuple: (input) => void probe.tuples.push(input),
      onTimer: (name) => probe.timers.push(name),
    };
  };
}

/**
 *   src (2): outputs s (0), d (1), lonely (2)                tasks 0, 1
 *   a   (2): reads src/s shuffle; outputs x (0)              tasks 2, 3
 *   b   (2): reads src/s all, src/d direct, a/x fields k     tasks 4, 5
 *   c   (1): reads src/d direct                              task  6
 */
const plan = pack(
  new TopologyBuilder("executor")
    .source("src", { parallelism: 2, outputs: ["s", "d", "lonely"] }, sourceOf)
    .stage(
      "a",
      { parallelism: 2, outputs: ["x"], inputs: [sub("src", "s", grouping.shuffle())] },
      stageOf("a"),
    )
    .stage(
      "b",
      {
        parallelism: 2,
        inputs: [
          sub("src", "s", grouping.all()),
          sub("src", "d", grouping.direct()),
          sub("a", "x", grouping.fields("k")),
        ],
      },
      stageOf("b"),
    )
    .stage("c", { parallelism: 1, inputs: [sub("src", "d", grouping.direct())] }, stageOf("c"))
    .build(),
  { containers: 2 },
);

interface Sent {
  streamIndex: number;
  dests: number | number[];
  tuple: unknown;
}

/** A started executor for replica `stage:index`, its probe and what it handed to `send`. */
function start(stage: string, index: number, accept = () => true) {
  probes.delete(`${stage}:${index}`);
  const sent: Sent[] = [];
  const executor = new Executor({
    plan,
    self: { stage, index },
    incarnation: 1,
    log: pino({ level: "silent" }),
    send: (streamIndex, dests, payload) => {
      sent.push({ streamIndex, dests: structuredClone(dests), tuple: unpack(payload) });
      return accept();
    },
  });
  executor.start();
  return { executor, probe: probeOf(stage, index), sent };
}

/** Delivers `payload` as a range inside a larger frame buffer, as the process shell does. */
function deliver(executor: Executor, srcTask: number, streamIndex: number, payload: Buffer): void {
  const bytes = Buffer.concat([Buffer.from([0xc1, 0x92]), payload, Buffer.from([0x01, 0xc1])]);
  executor.deliver(srcTask, streamIndex, bytes, 2, 2 + payload.length);
}

/**
 * Resolves once the timers of `delayMs` set before this call have fired: Node runs timers of
 * equal delay in the order they were set, so this is an ordering barrier, not a guess at how
 * long something takes.
 */
function afterTimersOf(delayMs: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, delayMs));
}

/** Fails after `ms` instead of hanging until the test's own timeout. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

const TEST_TIMEOUT = { timeout: 10_000 };

describe("Executor: emits", () => {
  it("emit sends the stream index and the grouped destinations", () => {
    const { executor, probe, sent } = start("src", 0);
    probe.ctx.emit("s", { n: 1 });
    probe.ctx.emit("s", { n: 2 });
    // a by shuffle (rotating from the replica's index), b by all.
    assert.deepEqual(sent, [
      { streamIndex: 0, dests: [2, 4, 5], tuple: { n: 1 } },
      { streamIndex: 0, dests: [3, 4, 5], tuple: { n: 2 } },
    ]);
    assert.equal(executor.tuplesOut, 2);
    assert.equal(executor.dropped, 0);

    const other = start("src", 1);
    other.probe.ctx.emit("s", "x");
    assert.deepEqual(other.sent, [{ streamIndex: 0, dests: [3, 4, 5], tuple: "x" }]);
  });

  it("a single destination is passed as a number", () => {
    const { probe, sent } = start("a", 0);
    const tuple = { k: "some key", v: [1, 2] };
    probe.ctx.emit("x", tuple);
    const expected = [4, 5][fieldsHash(tuple, ["k"]) % 2]!;
    assert.deepEqual(sent, [{ streamIndex: 0, dests: expected, tuple }]);
  });

  it("emitDirect sends to that replica of every direct consumer, on the stream's index", () => {
    const { probe, sent } = start("src", 1);
    probe.ctx.emitDirect("d", 0, [7]);
    assert.deepEqual(sent, [{ streamIndex: 1, dests: [4, 6], tuple: [7] }]);
    // c has one replica only.
    assert.throws(() => probe.ctx.emitDirect("d", 1, [8]), TopologyError);
    assert.equal(sent.length, 1);
  });

  it("emits on a stream without consumers send nothing", () => {
    const { executor, probe, sent } = start("src", 0);
    probe.ctx.emit("lonely", 1);
    probe.ctx.emitDirect("lonely", 0, 1);
    probe.ctx.emitDirect("s", 0, 1); // s has no direct consumer
    assert.deepEqual(sent, []);
    assert.equal(executor.tuplesOut, 0);
  });

  it("emits on an undeclared stream throw TopologyError and send nothing", () => {
    const { executor, probe, sent } = start("src", 0);
    assert.throws(() => probe.ctx.emit("x", 1), TopologyError);
    assert.throws(() => probe.ctx.emit("nope", 1), /undeclared stream nope/);
    assert.throws(() => probe.ctx.emitDirect("x", 0, 1), TopologyError);
    const b = start("b", 0);
    assert.throws(() => b.probe.ctx.emit("s", 1), TopologyError, "b declares no output");
    assert.deepEqual(sent, []);
    assert.deepEqual(b.sent, []);
    assert.equal(executor.tuplesOut, 0);
  });

  it("counts a tuple send() refuses as dropped", () => {
    let accept = true;
    const { executor, probe, sent } = start("src", 0, () => accept);
    probe.ctx.emit("s", 1);
    accept = false;
    probe.ctx.emit("s", 2);
    probe.ctx.emitDirect("d", 0, 3);
    assert.equal(sent.length, 3);
    assert.equal(executor.tuplesOut, 3);
    assert.equal(executor.dropped, 2);
  });
});

describe("Executor: deliver", () => {
  it("hands the stage the decoded tuple with its stream name and source replica", () => {
    const { executor, probe } = start("b", 0);
    deliver(executor, 0, 0, msgpack({ n: 1 }));
    deliver(executor, 1, 1, msgpack([1, "two"]));
    deliver(executor, 3, 0, msgpack({ k: "key" }));
    deliver(executor, 1, 0, msgpack(null));
    assert.deepEqual(probe.tuples, [
      { stream: "s", source: { stage: "src", index: 0 }, tuple: { n: 1 } },
      { stream: "d", source: { stage: "src", index: 1 }, tuple: [1, "two"] },
      { stream: "x", source: { stage: "a", index: 1 }, tuple: { k: "key" } },
      { stream: "s", source: { stage: "src", index: 1 }, tuple: null },
    ]);
    assert.equal(executor.tuplesIn, 4);
  });

  it("rejects an unknown source or stream with WireError FRAME_INVALID", () => {
    const { executor, probe } = start("b", 0);
    const payload = msgpack(1);
    for (const [src, stream] of [
      [99, 0],
      [7, 0], // one past the last task
      [0, 3], // src has three streams
      [0, 0xffff],
      [2, 1], // a has one stream
      [4, 0], // b has no output
    ] as const) {
      assert.throws(
        () => deliver(executor, src, stream, payload),
        isWireError("FRAME_INVALID"),
        `task ${src} stream ${stream}`,
      );
    }
    assert.deepEqual(probe.tuples, []);
    assert.equal(executor.tuplesIn, 0);
  });

  it("rejects a tuple for a source (no onTuple) with WireError FRAME_INVALID", () => {
    const { executor } = start("src", 0);
    assert.throws(() => deliver(executor, 1, 0, msgpack(1)), isWireError("FRAME_INVALID"));
  });

  it("rejects an undecodable payload with WireError FRAME_MALFORMED", () => {
    const { executor, probe } = start("b", 0);
    for (const bytes of [
      [], // nothing
      [0x92, 0x01], // an array of two with one element
      [0xd9], // a str8 without its length
      [0xc4, 0x05, 0x01], // a bin of 5 with 1 byte
      [0x01, 0x02], // two values
    ]) {
      assert.throws(
        () => deliver(executor, 0, 0, Buffer.from(bytes)),
        isWireError("FRAME_MALFORMED"),
        `payload ${JSON.stringify(bytes)}`,
      );
    }
    assert.deepEqual(probe.tuples, []);
    assert.equal(executor.tuplesIn, 0);
  });

  it("rejects the never-used msgpack byte 0xc1 as a payload", () => {
    const { executor, probe } = start("b", 0);
    assert.throws(
      () => deliver(executor, 0, 0, Buffer.from([0xc1])),
      isWireError("FRAME_MALFORMED"),
    );
    assert.deepEqual(probe.tuples, [], "the stage never sees the sentinel");
  });
});

describe("Executor: throttled sources", () => {
  it(
    "a source's timer that fires while throttled is held until every cause is released",
    TEST_TIMEOUT,
    async () => {
      const { executor, probe } = start("src", 0);
      executor.setThrottle("stmgr", true);
      assert.equal(executor.throttled, true);
      probe.ctx.timers.set("tick", 5);
      await afterTimersOf(5);
      assert.deepEqual(probe.timers.items, [], "held while throttled");

      executor.setThrottle("link", true);
      executor.setThrottle("stmgr", false);
      assert.equal(executor.throttled, true, "the link still throttles it");
      probe.ctx.timers.set("sentinel-1", 5);
      await afterTimersOf(5);
      assert.deepEqual(probe.timers.items, [], "still held: one cause remains");

      executor.setThrottle("link", false);
      assert.equal(executor.throttled, false);
      await within(probe.timers.count(2), 2_000, "held timers fire on release");
      assert.deepEqual([...probe.timers.items].sort(), ["sentinel-1", "tick"]);
      executor.stop();
    },
  );

  it("a held timer that is cancelled does not fire on release", TEST_TIMEOUT, async () => {
    const { executor, probe } = start("src", 0);
    executor.setThrottle("stmgr", true);
    probe.ctx.timers.set("tick", 5);
    await afterTimersOf(5);
    probe.ctx.timers.cancel("tick");
    executor.setThrottle("stmgr", false);
    probe.ctx.timers.set("sentinel", 5);
    await within(probe.timers.count(1), 2_000, "the sentinel fires");
    await afterTimersOf(5);
    assert.deepEqual(probe.timers.items, ["sentinel"]);
    executor.stop();
  });

  it("a held timer that is set again waits for its new delay", TEST_TIMEOUT, async () => {
    const { executor, probe } = start("src", 0);
    executor.setThrottle("stmgr", true);
    probe.ctx.timers.set("tick", 5);
    await afterTimersOf(5);
    probe.ctx.timers.set("tick", 40);
    probe.ctx.timers.set("sentinel", 5);
    executor.setThrottle("stmgr", false);
    await within(probe.timers.count(1), 2_000, "the sentinel fires");
    assert.deepEqual(
      probe.timers.items,
      ["sentinel"],
      "the replaced timer did not fire at release",
    );
    await within(probe.timers.count(2), 2_000, "the timer fires after its new delay");
    await afterTimersOf(40);
    assert.deepEqual(probe.timers.items, ["sentinel", "tick"], "once");
    executor.stop();
  });

  it(
    "a source's timer set while throttled fires on time if released before",
    TEST_TIMEOUT,
    async () => {
      const { executor, probe } = start("src", 0);
      executor.setThrottle("stmgr", true);
      probe.ctx.timers.set("tick", 5);
      executor.setThrottle("stmgr", false);
      await within(probe.timers.count(1), 2_000, "the timer fires");
      assert.deepEqual(probe.timers.items, ["tick"]);
      executor.stop();
    },
  );

  it("a stage that is not a source keeps its timers while throttled", TEST_TIMEOUT, async () => {
    const { executor, probe } = start("b", 1);
    executor.setThrottle("stmgr", true);
    probe.ctx.timers.set("tick", 5);
    await within(probe.timers.count(1), 2_000, "the timer fires");
    assert.deepEqual(probe.timers.items, ["tick"]);
    executor.stop();
  });

  it("stop() cancels pending timers", TEST_TIMEOUT, async () => {
    const { executor, probe } = start("src", 0);
    probe.ctx.timers.set("tick", 5);
    executor.stop();
    await afterTimersOf(5);
    assert.deepEqual(probe.timers.items, []);
  });
});
