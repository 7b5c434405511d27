import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pack as msgpack } from "msgpackr";
import type { Tuple } from "../../src/platform/api/stage.js";
import {
  grouping,
  TopologyBuilder,
  TopologyError,
  type Grouping,
} from "../../src/platform/api/topology.js";
import { pack, type PhysicalPlan } from "../../src/platform/plan/physical-plan.js";
import { fieldsHash, RoutingTable } from "../../src/platform/plan/routing.js";
import { int, pick, withSeed, type Random } from "./helpers/random.js";
import { noopSource, noopStage, sub } from "./helpers/topologies.js";

/**
 * src (2 replicas) emits on:
 *   s:      a (3, shuffle), b (4, fields k), c (2, all)
 *   d:      e (3, direct), f (2, direct), g (2, shuffle)
 *   lonely: nobody
 * mid (2) emits on m: b (fields j, k)
 */
function buildPlan(): PhysicalPlan {
  const topology = new TopologyBuilder("routing")
    .source("src", { parallelism: 2, outputs: ["s", "d", "lonely"] }, noopSource)
    .source("mid", { parallelism: 2, outputs: ["m"] }, noopSource)
    .stage("a", { parallelism: 3, inputs: [sub("src", "s", grouping.shuffle())] }, noopStage)
    .stage(
      "b",
      {
        parallelism: 4,
        inputs: [sub("src", "s", grouping.fields("k")), sub("mid", "m", grouping.fields("j", "k"))],
      },
      noopStage,
    )
    .stage("c", { parallelism: 2, inputs: [sub("src", "s", grouping.all())] }, noopStage)
    .stage("e", { parallelism: 3, inputs: [sub("src", "d", grouping.direct())] }, noopStage)
    .stage("f", { parallelism: 2, inputs: [sub("src", "d", grouping.direct())] }, noopStage)
    .stage("g", { parallelism: 2, inputs: [sub("src", "d", grouping.shuffle())] }, noopStage)
    .build();
  return pack(topology, { containers: 4 });
}

const plan = buildPlan();

function tasksOf(stage: string): number[] {
  return plan.tasks.filter((t) => t.stage === stage).map((t) => t.task);
}

const A = tasksOf("a");
const B = tasksOf("b");
const C = tasksOf("c");
const E = tasksOf("e");
const F = tasksOf("f");
const G = tasksOf("g");

/** FNV-1a 32 over bytes, written independently of the code under test. */
function fnv1a(bytes: Uint8Array): number {
  let hash = 2166136261n;
  for (const byte of bytes) {
    hash ^= BigInt(byte);
    hash = (hash * 16777619n) % 2n ** 32n;
  }
  return Number(hash);
}

/** murmur3's 32-bit finaliser, also written independently (BigInt arithmetic). */
function fmix32(h: number): number {
  const m = 2n ** 32n;
  let x = BigInt(h);
  x ^= x >> 16n;
  x = (x * 0x85ebca6bn) % m;
  x ^= x >> 13n;
  x = (x * 0xc2b2ae35n) % m;
  x ^= x >> 16n;
  return Number(x);
}

/** What fieldsHash must compute over the msgpack encoding of the field values. */
const keyHash = (bytes: Uint8Array) => fmix32(fnv1a(bytes));

/**
 * The reference: for each consumer of (emitter, stream), in declaration order, all -> every
 * replica, shuffle -> its own round robin starting at shuffleStart, fields -> keyHash of the
 * msgpack encoding of the field values mod parallelism, direct -> nothing.
 */
class ReferenceRouting {
  private readonly counters = new Map<string, number>();
  constructor(
    private readonly plan: PhysicalPlan,
    private readonly emitter: string,
    private readonly shuffleStart = 0,
  ) {}

  destinations(stream: string, tuple: Tuple): number[] {
    const out: number[] = [];
    for (const spec of this.plan.topology.stages) {
      for (const input of spec.inputs) {
        if (input.stage !== this.emitter || input.stream !== stream) continue;
        const tasks = this.plan.tasks.filter((t) => t.stage === spec.name).map((t) => t.task);
        const g: Grouping = input.grouping;
        if (g.kind === "all") out.push(...tasks);
        if (g.kind === "shuffle") {
          const n = this.counters.get(spec.name) ?? this.shuffleStart;
          this.counters.set(spec.name, n + 1);
          out.push(tasks[n % tasks.length]!);
        }
        if (g.kind === "fields") {
          const record = tuple as Record<string, unknown>;
          const hash = keyHash(msgpack(g.fields.map((f) => record[f] ?? null)));
          out.push(tasks[hash % tasks.length]!);
        }
      }
    }
    return out;
  }
}

function randomTuple(random: Random): Record<string, unknown> {
  const key = pick<unknown>(random, [
    int(random, -1000, 1000),
    `key-${int(random, 0, 500)}`,
    random() * 1e6,
    null,
    [int(random, 0, 9), "x"],
    true,
  ]);
  return { k: key, j: int(random, 0, 50), noise: random() };
}

const sorted = (list: number[]) => [...list].sort((x, y) => x - y);

describe("fieldsHash", () => {
  it("is FNV-1a, then murmur3's finaliser, over the msgpack encoding of the field values", () => {
    // msgpack(["a"]) = 91 a1 61; FNV-1a("") = 0x811c9dc5 is the offset basis.
    assert.equal(fnv1a(new Uint8Array()), 0x811c9dc5);
    assert.equal(fnv1a(Buffer.from("a")), 0xe40c292c);
    assert.equal(fnv1a(Buffer.from("foobar")), 0xbf9cf968);
    assert.equal(fieldsHash({ k: "a" }, ["k"]), keyHash(Buffer.from([0x91, 0xa1, 0x61])));
    assert.equal(fieldsHash({ k: 1, j: "x" }, ["k", "j"]), keyHash(msgpack([1, "x"])));
  });

  it("depends only on the named fields, in the named order; missing fields are null", () => {
    assert.equal(fieldsHash({ k: 7, x: 1 }, ["k"]), fieldsHash({ x: 2, k: 7 }, ["k"]));
    assert.equal(fieldsHash({}, ["k"]), fieldsHash({ k: null }, ["k"]));
    assert.equal(
      fieldsHash({}, ["k"]),
      keyHash(Buffer.from([0x91, 0xc0])),
      "missing is msgpack nil",
    );
    assert.equal(fieldsHash({ k: undefined }, ["k"]), fieldsHash({ k: null }, ["k"]));
    assert.notEqual(fieldsHash({ a: 1, b: 2 }, ["a", "b"]), fieldsHash({ a: 1, b: 2 }, ["b", "a"]));
  });

  it("rejects a tuple that is not an object", () => {
    for (const tuple of [1, "k", null, undefined, true]) {
      assert.throws(() => fieldsHash(tuple, ["k"]), TopologyError, String(tuple));
    }
  });
});

describe("RoutingTable", () => {
  it("knows which streams have consumers", () => {
    const table = new RoutingTable(plan, "src");
    assert.equal(table.hasStream("s"), true);
    assert.equal(table.hasStream("d"), true);
    assert.equal(table.hasStream("lonely"), false);
    assert.equal(table.hasStream("m"), false);
    assert.deepEqual(table.destinations("lonely", { k: 1 }), []);
    assert.equal(new RoutingTable(plan, "mid").hasStream("m"), true);
    assert.equal(new RoutingTable(plan, "a").hasStream("s"), false);
  });

  it("all: every replica of the consumer, on every emit", () => {
    const table = new RoutingTable(plan, "src");
    for (let i = 0; i < 50; i++) {
      const dests = table.destinations("s", { k: i });
      assert.deepEqual(
        dests.filter((t) => C.includes(t)),
        C,
      );
    }
  });

  it("shuffle: round robin over every replica, evenly", () => {
    for (const start of [0, 1, 2, 5]) {
      const table = new RoutingTable(plan, "src", start);
      const picks: number[] = [];
      for (let i = 0; i < A.length * 300; i++) {
        const dests = table.destinations("s", { k: i }).filter((t) => A.includes(t));
        assert.equal(dests.length, 1, "exactly one replica of a shuffle consumer");
        picks.push(dests[0]!);
      }
      assert.equal(picks[0], A[start % A.length], `start ${start}`);
      // Every window of |A| consecutive emits covers every replica once.
      for (let i = 0; i + A.length <= picks.length; i += A.length) {
        assert.deepEqual(sorted(picks.slice(i, i + A.length)), A, `window at ${i}, start ${start}`);
      }
      for (const task of A) assert.equal(picks.filter((t) => t === task).length, 300);
    }
  });

  it("fields: the same values go to the same task, in any routing table instance", () => {
    withSeed("fields determinism", (random) => {
      const one = new RoutingTable(plan, "src", 0);
      const two = new RoutingTable(plan, "src", 1);
      const chosen = new Map<string, number>();
      for (let i = 0; i < 2000; i++) {
        const tuple = randomTuple(random);
        const key = JSON.stringify(tuple.k);
        const d1 = one.destinations("s", tuple).filter((t) => B.includes(t));
        // Same key, different other fields, different table.
        const d2 = two
          .destinations("s", { ...tuple, noise: random(), j: -1 })
          .filter((t) => B.includes(t));
        assert.equal(d1.length, 1);
        assert.deepEqual(d1, d2, `key ${key}`);
        const before = chosen.get(key);
        if (before !== undefined) assert.equal(d1[0], before, `key ${key} moved`);
        chosen.set(key, d1[0]!);
      }
    });
  });

  it("fields: many different keys spread over every replica", () => {
    const table = new RoutingTable(plan, "src");
    const counts = new Map<number, number>(B.map((t) => [t, 0]));
    const keys = 4000;
    for (let i = 0; i < keys; i++) {
      for (const task of table.destinations("s", { k: `user-${i}` }).filter((t) => B.includes(t))) {
        counts.set(task, counts.get(task)! + 1);
      }
    }
    const fair = keys / B.length;
    for (const [task, count] of counts) {
      assert.ok(count > fair * 0.8 && count < fair * 1.2, `task ${task} got ${count} of ${keys}`);
    }
    // Integer keys too.
    const intTargets = new Set<number>();
    for (let i = 0; i < 200; i++) {
      intTargets.add(table.destinations("s", { k: i }).find((t) => B.includes(t))!);
    }
    assert.deepEqual(sorted([...intTargets]), B);
  });

  it("fields grouping on a tuple that is not an object throws", () => {
    const table = new RoutingTable(plan, "src");
    assert.throws(() => table.destinations("s", 42), TopologyError);
    // A stream without a fields consumer does not look at the tuple.
    assert.deepEqual(
      new RoutingTable(plan, "src").destinations("d", 42).filter((t) => G.includes(t)).length,
      1,
    );
  });

  it("direct: nothing through destinations, replica `index` of every direct consumer through directDestinations", () => {
    const table = new RoutingTable(plan, "src");
    for (let i = 0; i < 10; i++) {
      const dests = table.destinations("d", { k: i });
      assert.equal(dests.length, 1, "only the shuffle consumer g");
      assert.ok(G.includes(dests[0]!));
    }
    assert.deepEqual(table.directDestinations("d", 0), [E[0], F[0]]);
    assert.deepEqual(table.directDestinations("d", 1), [E[1], F[1]]);
    // Streams without a direct consumer give nothing, whatever the index.
    assert.deepEqual(table.directDestinations("s", 0), []);
    assert.deepEqual(table.directDestinations("s", 99), []);
    assert.deepEqual(table.directDestinations("lonely", 0), []);
  });

  it("direct: an index some direct consumer does not have throws", () => {
    const table = new RoutingTable(plan, "src");
    // f has 2 replicas: index 2 exists in e but not in f.
    assert.throws(
      () => table.directDestinations("d", 2),
      (error: unknown) =>
        error instanceof TopologyError &&
        /f has no replica 2 \(parallelism 2\)/.test(error.message),
    );
    for (const index of [3, -1, 0.5, Number.NaN]) {
      assert.throws(() => table.directDestinations("d", index), TopologyError, String(index));
    }
  });

  it("one stream, consumers with different groupings: each gets what its grouping says", () => {
    const table = new RoutingTable(plan, "src");
    for (let i = 0; i < 100; i++) {
      const dests = table.destinations("s", { k: `k${i % 7}` });
      assert.equal(dests.filter((t) => A.includes(t)).length, 1);
      assert.equal(dests.filter((t) => B.includes(t)).length, 1);
      assert.deepEqual(
        dests.filter((t) => C.includes(t)),
        C,
      );
      assert.equal(dests.length, 1 + 1 + C.length, "no other destination");
      assert.ok(!dests.some((t) => [...E, ...F, ...G].includes(t)));
    }
  });

  it("property: matches the reference implementation", () => {
    withSeed("routing reference", (random) => {
      for (const [emitter, stream] of [
        ["src", "s"],
        ["src", "d"],
        ["mid", "m"],
      ] as const) {
        const start = int(random, 0, 10);
        const table = new RoutingTable(plan, emitter, start);
        const reference = new ReferenceRouting(plan, emitter, start);
        for (let i = 0; i < 3000; i++) {
          const tuple = randomTuple(random);
          assert.deepEqual(
            sorted(table.destinations(stream, tuple)),
            sorted(reference.destinations(stream, tuple)),
            `${emitter}/${stream} emit ${i}: ${JSON.stringify(tuple)}`,
          );
        }
      }
    });
  });
});
