import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type {
  CheckpointEvent,
  InstanceState,
  ReplicaId,
  Source,
  Stage,
  StageContext,
} from "../../src/platform/api/stage.js";
import { grouping, TopologyBuilder, TopologyError } from "../../src/platform/api/topology.js";
import { replicaName } from "../../src/platform/plan/physical-plan.js";
import { Random } from "../../src/sim/random.js";
import { Simulator, type NetworkModel, type SimCheckpointing } from "../../src/sim/simulator.js";
import { int, mulberry32, pick } from "./helpers/random.js";
import { sub } from "./helpers/topologies.js";

const id = (stage: string, index: number): ReplicaId => ({ stage, index });
const name = replicaName;

interface Counted {
  readonly from: number;
  readonly n: number;
  readonly sentAt: number;
  readonly inc: number;
}

interface Received {
  readonly t: number;
  readonly from: string;
  readonly to: string;
  readonly tuple: Counted;
}

/**
 * `src` (2 replicas) emits a counter every `tickMs` on `count` (limit `ticks` per incarnation);
 * `sink` (3 replicas) reads it with `all` grouping and records what it receives.
 */
function counterTopology(options: { tickMs?: number; ticks?: number } = {}) {
  const { tickMs = 1, ticks = 50 } = options;
  const received: Received[] = [];
  const ticked: { t: number; replica: string; inc: number; timer: string }[] = [];
  const started: { replica: string; inc: number; object: object }[] = [];
  const source = (index: number): Source => {
    let n = 0;
    const self: Source = {
      onStart(ctx) {
        started.push({ replica: name(ctx.self), inc: ctx.incarnation, object: self });
        ctx.timers.set("tick", tickMs);
        if (ctx.incarnation === 1) ctx.timers.set("late", 1000);
      },
      onTimer(timer, ctx) {
        ticked.push({ t: ctx.clock.now(), replica: name(ctx.self), inc: ctx.incarnation, timer });
        if (timer !== "tick") return;
        const tuple: Counted = {
          from: index,
          n: n++,
          sentAt: ctx.clock.now(),
          inc: ctx.incarnation,
        };
        ctx.emit("count", tuple);
        if (n < ticks) ctx.timers.set("tick", tickMs);
      },
    };
    return self;
  };
  const sink = (): Stage => ({
    onTuple(input, ctx) {
      received.push({
        t: ctx.clock.now(),
        from: name(input.source),
        to: name(ctx.self),
        tuple: input.tuple as Counted,
      });
    },
  });
  const topology = new TopologyBuilder("counter")
    .source("src", { parallelism: 2, outputs: ["count"] }, source)
    .stage("sink", { parallelism: 3, inputs: [sub("src", "count", grouping.all())] }, sink)
    .build();
  return { topology, received, ticked, started };
}

function runCounter(seed: number, network?: Partial<NetworkModel>, untilMs = 200) {
  const t = counterTopology();
  const sim = new Simulator({ seed, topology: t.topology, ...(network ? { network } : {}) });
  sim.start();
  sim.runUntil(untilMs);
  return { ...t, sim };
}

const trace = (received: readonly Received[]) =>
  received.map((r) => `${r.t}|${r.from}|${r.to}|${JSON.stringify(r.tuple)}`);

describe("Random", () => {
  it("is the helpers' mulberry32 sequence, with inclusive int, pick and chance", () => {
    for (const seed of [0, 1, 42, 2 ** 32 - 1]) {
      const a = new Random(seed);
      const b = mulberry32(seed);
      for (let i = 0; i < 100; i++) {
        const x = a.next();
        assert.equal(x, b());
        assert.ok(x >= 0 && x < 1);
      }
      assert.equal(new Random(seed).int(3, 9), int(mulberry32(seed), 3, 9));
      assert.equal(new Random(seed).pick(["a", "b", "c"]), pick(mulberry32(seed), ["a", "b", "c"]));
    }
    const random = new Random(7);
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) seen.add(random.int(-2, 2));
    assert.deepEqual([...seen].sort(), [-1, -2, 0, 1, 2]);
    for (let i = 0; i < 100; i++) {
      assert.equal(random.chance(0), false);
      assert.equal(random.chance(1), true);
    }
    assert.throws(() => random.pick([]), RangeError);
    assert.throws(() => random.int(2, 1), RangeError);
  });
});

describe("Simulator: determinism and the network", () => {
  it("the same seed gives the same trace, another seed a different one", () => {
    const a = runCounter(1);
    const b = runCounter(1);
    const c = runCounter(2);
    assert.equal(a.received.length, 2 * 3 * 50, "every tick reaches every sink");
    assert.deepEqual(trace(a.received), trace(b.received));
    assert.deepEqual(a.sim.stats, b.sim.stats);
    assert.notDeepEqual(trace(a.received), trace(c.received));
  });

  it("a scenario's draws from random do not shift the network's", () => {
    const plain = runCounter(5);
    const t = counterTopology();
    const sim = new Simulator({ seed: 5, topology: t.topology });
    sim.start();
    for (let i = 0; i < 10; i++) sim.random.next();
    sim.runUntil(200);
    assert.deepEqual(trace(t.received), trace(plain.received));
  });

  it("delays are in [min, max] and each link is FIFO; different links reorder", () => {
    let reordered = 0;
    for (let seed = 1; seed <= 10; seed++) {
      const { received } = runCounter(seed, { minDelayMs: 0.5, maxDelayMs: 10 });
      assert.equal(received.length, 300);
      const lastOnLink = new Map<string, number>();
      const lastAt = new Map<string, Received>();
      for (const r of received) {
        const delay = r.t - r.tuple.sentAt;
        assert.ok(delay >= 0.5, `delay ${delay}`);
        const link = `${r.from}->${r.to}`;
        const previous = lastOnLink.get(link) ?? -1;
        assert.equal(r.tuple.n, previous + 1, `link ${link} out of order (seed ${seed})`);
        lastOnLink.set(link, r.tuple.n);
        // Cross-link: a sink gets a later send from one source before an earlier from the other.
        const other = lastAt.get(r.to);
        if (other && other.from !== r.from && other.tuple.sentAt > r.tuple.sentAt) reordered++;
        lastAt.set(r.to, r);
      }
      // FIFO holds a message back at most until its link's previous one: within max delay.
      for (const r of received) assert.ok(r.t - r.tuple.sentAt <= 10, "bounded lateness");
    }
    assert.ok(reordered > 0, "some message overtook an earlier one on another link");
  });

  it("fixed delays: a message arrives exactly that long after it was sent", () => {
    const { received } = runCounter(3, { minDelayMs: 2, maxDelayMs: 2 });
    assert.equal(received.length, 300);
    for (const r of received) assert.equal(r.t, r.tuple.sentAt + 2);
    // ticks at 1, 2, ...: the first arrivals are at 3.
    assert.equal(received[0]!.t, 3);
  });

  it("events at one time run in the order they were scheduled; runUntil sets the clock", () => {
    const t = counterTopology();
    const sim = new Simulator({ seed: 1, topology: t.topology });
    const order: string[] = [];
    sim.schedule(5, () => order.push(`a@${sim.now}`));
    sim.schedule(2, () => order.push(`b@${sim.now}`));
    sim.schedule(5, () => order.push(`c@${sim.now}`));
    sim.schedule(2, () => sim.schedule(3, () => order.push(`d@${sim.now}`)));
    sim.runUntil(4);
    assert.deepEqual(order, ["b@2"]);
    assert.equal(sim.now, 4);
    sim.runUntil(10);
    assert.deepEqual(order, ["b@2", "a@5", "c@5", "d@5"]);
    assert.equal(sim.now, 10);
    assert.equal(sim.step(), false);
    assert.throws(() => sim.schedule(-1, () => undefined), RangeError);
  });
});

describe("Simulator: routing as the platform routes", () => {
  it("shuffle rotates from the replica's index, fields by hash, direct to the index", () => {
    const emitted: { from: string; stream: string; to: string[] }[] = [];
    let ctxOf: StageContext | undefined;
    const topology = new TopologyBuilder("routing")
      .source("src", { parallelism: 2, outputs: ["s", "d"] }, (index) => ({
        onStart(ctx) {
          if (index === 1) ctxOf = ctx;
        },
      }))
      .stage("a", { parallelism: 3, inputs: [sub("src", "s", grouping.shuffle())] }, () => ({
        onTuple() {},
      }))
      .stage("b", { parallelism: 2, inputs: [sub("src", "d", grouping.direct())] }, () => ({
        onTuple() {},
      }))
      .build();
    const sim = new Simulator({
      seed: 1,
      topology,
      onEmit: (from, stream, _tuple, to) =>
        emitted.push({ from: name(from), stream, to: to.map((r) => name(r)) }),
    });
    sim.start();
    assert.deepEqual(sim.replicasOf("a").map(name), ["a:0", "a:1", "a:2"]);
    assert.equal(sim.replicas().length, 7);
    const ctx = ctxOf!;
    ctx.emit("s", 1);
    ctx.emit("s", 2);
    ctx.emit("s", 3);
    ctx.emitDirect("d", 1, 4);
    ctx.emit("d", 5); // direct consumers get nothing from emit
    assert.deepEqual(emitted, [
      { from: "src:1", stream: "s", to: ["a:1"] },
      { from: "src:1", stream: "s", to: ["a:2"] },
      { from: "src:1", stream: "s", to: ["a:0"] },
      { from: "src:1", stream: "d", to: ["b:1"] },
      { from: "src:1", stream: "d", to: [] },
    ]);
    assert.throws(() => ctx.emitDirect("d", 2, 6), TopologyError);
    assert.throws(() => ctx.emit("nope", 6), /undeclared stream nope/);
    assert.equal(ctx.parallelism("a"), 3);
    assert.throws(() => ctx.parallelism("zz"), TopologyError);
    sim.runUntil(100);
    assert.equal(sim.stats.delivered, 4);
  });

  it("a received tuple is a copy: bytes arrive as a fresh Uint8Array per receiver", () => {
    const got: Uint8Array[] = [];
    const sent = new Uint8Array([1, 2, 3]);
    const emitted: unknown[] = [];
    const topology = new TopologyBuilder("bytes")
      .source("src", { parallelism: 1, outputs: ["b"] }, () => ({
        onStart(ctx) {
          ctx.emit("b", { payload: sent });
          sent[0] = 99; // the sender reuses its buffer right away
        },
      }))
      .stage("sink", { parallelism: 2, inputs: [sub("src", "b", grouping.all())] }, () => ({
        onTuple(input) {
          got.push((input.tuple as { payload: Uint8Array }).payload);
        },
      }))
      .build();
    const sim = new Simulator({
      seed: 9,
      topology,
      onEmit: (_from, _stream, tuple) => emitted.push(tuple),
    });
    sim.start();
    sim.runUntil(10);
    assert.equal(got.length, 2);
    for (const bytes of got) {
      assert.ok(bytes instanceof Uint8Array);
      assert.notEqual(bytes, sent);
      assert.deepEqual([...bytes], [1, 2, 3]);
    }
    got[0]![1] = 77;
    assert.deepEqual([...got[1]!], [1, 2, 3], "receivers do not share bytes");
    assert.deepEqual([...(emitted[0] as { payload: Uint8Array }).payload], [1, 2, 3]);
  });
});

describe("Simulator: crashes and restarts", () => {
  it("a crash drops the replica's timers and the deliveries to it; a restart is a fresh object", () => {
    const t = counterTopology({ ticks: 1000 });
    const sim = new Simulator({ seed: 11, topology: t.topology });
    sim.start();
    const src0 = id("src", 0);
    const sink0 = id("sink", 0);
    const first = sim.stage<object>(src0);
    assert.equal(sim.incarnation(src0), 1);
    sim.runUntil(20.5);
    sim.crash(src0);
    sim.crash(sink0);
    assert.equal(sim.isAlive(src0), false);
    assert.throws(() => sim.stage(src0), /not alive/);
    assert.throws(() => sim.crash(src0), /not alive/);
    const droppedBefore = sim.stats.dropped;
    sim.runUntil(40.5);
    // No tick of src:0 while it is dead, nothing handled by sink:0.
    assert.ok(!t.ticked.some((x) => x.replica === "src:0" && x.t > 20.5 && x.t <= 40.5));
    assert.ok(!t.received.some((r) => r.to === "sink:0" && r.t > 20.5));
    assert.ok(sim.stats.dropped > droppedBefore, "src:1's ticks to the dead sink:0 are dropped");
    assert.ok(
      t.ticked.some((x) => x.replica === "src:1" && x.t > 20.5),
      "others go on",
    );

    sim.restart(src0);
    sim.restart(sink0);
    assert.throws(() => sim.restart(src0), /is alive/);
    assert.equal(sim.incarnation(src0), 2);
    assert.equal(sim.isAlive(src0), true);
    const second = sim.stage<object>(src0);
    assert.notEqual(second, first);
    assert.deepEqual(
      t.started.filter((s) => s.replica === "src:0").map((s) => [s.inc, s.object === second]),
      [
        [1, false],
        [2, true],
      ],
    );
    sim.runUntil(2000);
    // The new incarnation counts from 0 again (fresh state), on its own timer.
    const fromNew = t.received.filter((r) => r.from === "src:0" && r.tuple.inc === 2);
    assert.equal(fromNew[0]!.tuple.n, 0);
    assert.ok(fromNew.every((r) => r.tuple.sentAt > 40.5));
    // The old incarnation's "late" timer (due at 1000) never fired; src:1's did.
    const late = t.ticked.filter((x) => x.timer === "late").map((x) => x.replica);
    assert.deepEqual(late, ["src:1"]);
    // The restarted sink gets the new src:0 and src:1 again.
    assert.ok(t.received.some((r) => r.to === "sink:0" && r.from === "src:1" && r.t > 40.5));
    assert.ok(t.received.some((r) => r.to === "sink:0" && r.from === "src:0" && r.t > 40.5));
  });

  it("tuples addressed to an old incarnation never reach the new one", () => {
    // client -(all)-> echo -(direct, to back n % 2)-> back, which sends it out.
    interface Msg {
      n: number;
      repliedAt?: number;
    }
    const requests: { at: string; inc: number; msg: Msg }[] = [];
    const replies: { to: string; inc: number; msg: Msg }[] = [];
    const sentReplies: { to: string; msg: Msg }[] = [];
    const outputs: { from: string; msg: Msg }[] = [];
    const topology = new TopologyBuilder("echo")
      .source("client", { parallelism: 1, outputs: ["req"] }, () => {
        let n = 0;
        return {
          onExternal(input, ctx) {
            assert.equal(input, "go");
            ctx.emit("req", { n: n++ });
          },
        };
      })
      .stage(
        "echo",
        { parallelism: 2, outputs: ["rep"], inputs: [sub("client", "req", grouping.all())] },
        () => ({
          onTuple(input, ctx) {
            const msg = input.tuple as Msg;
            requests.push({ at: name(ctx.self), inc: ctx.incarnation, msg });
            ctx.emitDirect("rep", msg.n % 2, { n: msg.n, repliedAt: ctx.clock.now() });
          },
        }),
      )
      .stage("back", { parallelism: 2, inputs: [sub("echo", "rep", grouping.direct())] }, () => ({
        onTuple(input, ctx) {
          const msg = input.tuple as Msg;
          replies.push({ to: name(ctx.self), inc: ctx.incarnation, msg });
          ctx.external.send(msg);
        },
      }))
      .build();
    const sim = new Simulator({
      seed: 21,
      topology,
      network: { minDelayMs: 1, maxDelayMs: 5 },
      onExternalOutput: (from, output) => outputs.push({ from: name(from), msg: output as Msg }),
      onEmit: (_from, stream, tuple, to) => {
        if (stream === "rep") sentReplies.push({ to: name(to[0]!), msg: tuple as Msg });
      },
    });
    sim.start();
    const client = id("client", 0);
    const echo0 = id("echo", 0);
    const back0 = id("back", 0);
    // A request every 0.5 ms; echo:0 crashes and restarts at 10, back:0 at 20.
    for (let i = 0; i < 60; i++) sim.schedule(i * 0.5, () => sim.deliverExternal(client, "go"));
    sim.schedule(10, () => {
      sim.crash(echo0);
      sim.restart(echo0);
    });
    sim.schedule(20, () => {
      sim.crash(back0);
      sim.restart(back0);
    });
    sim.runUntil(100);
    assert.equal(sim.stats.externalDropped, 0);

    // Requests 18 and 19 were in flight to echo:0 at 10: dropped, not handed to incarnation 2.
    const echoed = requests.filter((r) => r.inc === 2).map((r) => r.msg.n);
    const before = requests.filter((r) => r.at === "echo:0" && r.inc === 1).map((r) => r.msg.n);
    assert.deepEqual(
      echoed,
      [...Array(40).keys()].map((i) => i + 20),
    );
    assert.deepEqual(before, [...before.keys()]);
    assert.ok(before.length < 20, "some requests were in flight to echo:0 when it crashed");
    assert.equal(requests.filter((r) => r.at === "echo:1").length, 60);

    // Replies to back:0 sent before 20 and in flight then were dropped.
    const toNew = replies.filter((r) => r.to === "back:0" && r.inc === 2);
    assert.ok(toNew.length > 0);
    assert.ok(
      toNew.every((r) => r.msg.repliedAt! >= 20),
      JSON.stringify(toNew[0]),
    );
    const received = new Set(replies.map((r) => JSON.stringify(r.msg)));
    const lostInFlight = sentReplies.filter(
      (r) => r.to === "back:0" && r.msg.repliedAt! < 20 && !received.has(JSON.stringify(r.msg)),
    );
    assert.ok(lostInFlight.length > 0, "some replies to back:0 were in flight at its crash");
    assert.ok(sim.stats.dropped >= lostInFlight.length + 2);
    // back:1 got every reply to it: 30 odd requests from each of the two echo replicas,
    // less those echo:0 missed.
    assert.ok(replies.filter((r) => r.to === "back:1").length > 50);

    // Outputs came out synchronously, one per reply, as copies.
    assert.equal(outputs.length, replies.length);
    assert.deepEqual(
      outputs.map((o) => o.msg),
      replies.map((r) => r.msg),
    );
    assert.notEqual(outputs[0]!.msg, replies[0]!.msg);
    sim.crash(client);
    sim.deliverExternal(client, "go");
    assert.equal(sim.stats.externalDropped, 1);
  });

  it("links start afresh after a crash of either end", () => {
    // src sends a burst of 20 at each start and another 5 ms later; delays 1..50, so a burst is
    // in flight for up to 50 ms.
    let overtaken = 0;
    let notHeldBack = 0;
    for (let seed = 1; seed <= 10; seed++) {
      const got: { t: number; inc: number; n: number; sinkInc: number }[] = [];
      const topology = new TopologyBuilder("fresh")
        .source("src", { parallelism: 1, outputs: ["x"] }, () => {
          let n = 0;
          const burst = (ctx: StageContext) => {
            for (let i = 0; i < 20; i++) ctx.emit("x", { inc: ctx.incarnation, n: n++ });
          };
          return {
            onStart(ctx) {
              burst(ctx);
              ctx.timers.set("again", 5);
            },
            onTimer: (_timer, ctx) => burst(ctx),
          };
        })
        .stage("sink", { parallelism: 1, inputs: [sub("src", "x", grouping.all())] }, () => ({
          onTuple(input, ctx) {
            const tuple = input.tuple as { inc: number; n: number };
            got.push({ t: ctx.clock.now(), ...tuple, sinkInc: ctx.incarnation });
          },
        }))
        .build();
      const network = { minDelayMs: 1, maxDelayMs: 50, lossOnCrash: 0 };
      const src = id("src", 0);
      const sink = id("sink", 0);

      // The source crashes and restarts at 0.5: its old burst still arrives (no loss), and the
      // new incarnation's is not queued behind it.
      const sim = new Simulator({ seed, topology, network });
      sim.start();
      sim.schedule(0.5, () => {
        sim.crash(src);
        sim.restart(src);
      });
      sim.runUntil(0.9);
      sim.crash(src); // before its second burst
      sim.runUntil(100);
      assert.equal(got.length, 40);
      const lastOld = Math.max(...got.filter((g) => g.inc === 1).map((g) => g.t));
      if (got.some((g) => g.inc === 2 && g.t < lastOld)) overtaken++;

      // The sink crashes and restarts at 2, while the first burst is in flight: the second
      // burst (at 5) reaches the new sink without waiting behind the dropped first one.
      got.length = 0;
      const sim2 = new Simulator({ seed, topology, network });
      sim2.start();
      sim2.schedule(2, () => {
        sim2.crash(sink);
        sim2.restart(sink);
      });
      sim2.runUntil(100);
      const fresh = got.filter((g) => g.sinkInc === 2);
      assert.deepEqual(
        fresh.map((g) => g.n),
        [...Array(20).keys()].map((i) => i + 20),
      );
      if (fresh[0]!.t < 5 + 20) notHeldBack++;
    }
    assert.ok(overtaken > 0, "a new incarnation's tuple overtook an old one's");
    assert.ok(notHeldBack > 0, "a restarted sink got a tuple without waiting for the old link");
  });

  function burst(lossOnCrash: number, seed: number) {
    const got: { to: string; n: number }[] = [];
    const topology = new TopologyBuilder("burst")
      .source("src", { parallelism: 1, outputs: ["x"] }, () => ({
        onStart(ctx) {
          for (let n = 0; n < 20; n++) ctx.emit("x", n);
        },
      }))
      .stage("sink", { parallelism: 3, inputs: [sub("src", "x", grouping.all())] }, () => ({
        onTuple(input, ctx) {
          got.push({ to: name(ctx.self), n: input.tuple as number });
        },
      }))
      .build();
    const sim = new Simulator({
      seed,
      topology,
      network: { minDelayMs: 5, maxDelayMs: 10, lossOnCrash },
    });
    sim.start();
    sim.schedule(1, () => sim.crash(id("src", 0)));
    sim.runUntil(100);
    return { got, sim };
  }

  it("lossOnCrash 0 delivers what a crashed replica had in flight; 1 loses it all", () => {
    const none = burst(0, 1);
    assert.equal(none.got.length, 60);
    assert.equal(none.sim.stats.lost, 0);
    const all = burst(1, 1);
    assert.equal(all.got.length, 0);
    assert.equal(all.sim.stats.lost, 60);
    assert.equal(all.sim.stats.dropped, 60);
  });

  it("lossOnCrash in between loses a suffix of each link, differently per link", () => {
    let partial = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const { got, sim } = burst(0.1, seed);
      assert.equal(got.length + sim.stats.lost, 60);
      const bySink = new Map<string, number[]>();
      for (const g of got) bySink.set(g.to, [...(bySink.get(g.to) ?? []), g.n]);
      for (const ns of bySink.values()) {
        // A prefix of 0..19, in order.
        assert.deepEqual(
          ns,
          ns.map((_, i) => i),
        );
      }
      const lengths = ["sink:0", "sink:1", "sink:2"].map((s) => bySink.get(s)?.length ?? 0);
      if (lengths.some((l) => l > 0 && l < 20)) partial++;
    }
    assert.ok(partial > 0, "some link lost only part of its queue");
  });

  it("dropInFlight loses what a live replica has in flight, and nothing it sends later", () => {
    const got: number[] = [];
    const topology = new TopologyBuilder("drop")
      .source("src", { parallelism: 1, outputs: ["x"] }, () => ({
        onStart(ctx) {
          for (let n = 0; n < 10; n++) ctx.emit("x", n);
          ctx.timers.set("later", 20);
        },
        onTimer(_name, ctx) {
          for (let n = 10; n < 15; n++) ctx.emit("x", n);
        },
      }))
      .stage("sink", { parallelism: 1, inputs: [sub("src", "x", grouping.all())] }, () => ({
        onTuple(input) {
          got.push(input.tuple as number);
        },
      }))
      .build();
    const sim = new Simulator({ seed: 3, topology, network: { minDelayMs: 5, maxDelayMs: 10 } });
    sim.start();
    sim.schedule(1, () => sim.dropInFlight(id("src", 0)));
    sim.runUntil(100);
    assert.deepEqual(got, [10, 11, 12, 13, 14]);
    assert.equal(sim.stats.lost, 10);
    assert.ok(sim.isAlive(id("src", 0)));
  });
});

describe("Simulator: pause and resume", () => {
  function paused(cancelOn?: number) {
    const seen: string[] = [];
    const topology = new TopologyBuilder("pause")
      .source("src", { parallelism: 1, outputs: ["x"] }, () => {
        let n = 0;
        return {
          onStart: (ctx) => ctx.timers.set("tick", 1),
          onTimer(_name, ctx) {
            ctx.emit("x", n++);
            if (n <= 12) ctx.timers.set("tick", 1);
          },
        };
      })
      .stage("sink", { parallelism: 1, inputs: [sub("src", "x", grouping.all())] }, () => ({
        onStart: (ctx) => ctx.timers.set("t", 3),
        onTuple(input, ctx) {
          seen.push(`${ctx.clock.now()}:n${String(input.tuple)}`);
          if (input.tuple === cancelOn) ctx.timers.cancel("t");
        },
        onTimer(timer, ctx) {
          seen.push(`${ctx.clock.now()}:${timer}`);
        },
      }))
      .build();
    // Ticks at 1, 2, ...: tuple n sent at n + 1, arrives at n + 1.5; the sink's timer at 3.
    const sim = new Simulator({ seed: 1, topology, network: { minDelayMs: 0.5, maxDelayMs: 0.5 } });
    const sink = id("sink", 0);
    sim.start();
    sim.schedule(2, () => sim.pause(sink));
    // At 9.5 the resume runs before n8 arrives (scheduled earlier), which must wait its turn.
    sim.schedule(9.5, () => sim.resume(sink));
    sim.runUntil(11);
    return seen;
  }

  it("holds deliveries and timers while paused and runs them in arrival order on resume", () => {
    assert.deepEqual(paused(), [
      "1.5:n0",
      "9.5:n1",
      "9.5:t",
      "9.5:n2",
      "9.5:n3",
      "9.5:n4",
      "9.5:n5",
      "9.5:n6",
      "9.5:n7",
      "9.5:n8",
      "10.5:n9",
    ]);
  });

  it("a held timer that is cancelled before it runs never fires", () => {
    assert.deepEqual(paused(1), [
      "1.5:n0",
      "9.5:n1",
      "9.5:n2",
      "9.5:n3",
      "9.5:n4",
      "9.5:n5",
      "9.5:n6",
      "9.5:n7",
      "9.5:n8",
      "10.5:n9",
    ]);
  });

  it("a crash of a paused replica drops what it held", () => {
    const t = counterTopology({ ticks: 10 });
    const sim = new Simulator({ seed: 2, topology: t.topology });
    const sink = id("sink", 1);
    sim.start();
    sim.pause(sink);
    assert.equal(sim.isPaused(sink), true);
    sim.runUntil(30);
    assert.equal(sim.stats.dropped, 0);
    assert.ok(!t.received.some((r) => r.to === "sink:1"));
    sim.crash(sink);
    assert.equal(sim.isPaused(sink), false);
    assert.equal(sim.stats.dropped, 20, "both sources' 10 ticks, held");
    sim.restart(sink);
    sim.resume(sink); // not paused any more: nothing to release
    sim.runUntil(100);
    assert.ok(!t.received.some((r) => r.to === "sink:1"));
    assert.equal(t.received.length, 40);
  });
});

describe("Simulator: stage bugs and running", () => {
  it("an exception in a handler propagates out of step and runUntil", () => {
    const topology = new TopologyBuilder("boom")
      .source("src", { parallelism: 1, outputs: ["x"] }, () => ({
        onStart: (ctx) => ctx.timers.set("t", 5),
        onTimer: (_name, ctx) => ctx.emit("x", 3),
      }))
      .stage("sink", { parallelism: 1, inputs: [sub("src", "x", grouping.all())] }, () => ({
        onTuple(input) {
          if (input.tuple === 3) throw new Error("boom in the stage");
        },
      }))
      .build();
    const sim = new Simulator({ seed: 1, topology });
    sim.start();
    assert.throws(() => sim.runUntil(100), /boom in the stage/);
    assert.ok(sim.now > 5 && sim.now < 100);
    const again = new Simulator({ seed: 1, topology });
    again.start();
    assert.equal(again.step(), true); // the timer
    assert.throws(() => again.step(), /boom in the stage/);
  });

  it("runWhile stops when the condition turns false, or returns false at the limit", () => {
    const t = counterTopology({ ticks: 10 });
    const sim = new Simulator({ seed: 4, topology: t.topology });
    sim.start();
    assert.equal(
      sim.runWhile(() => t.received.length < 6, 1000),
      true,
    );
    assert.equal(t.received.length, 6);
    assert.ok(sim.now < 10);
    assert.equal(
      sim.runWhile(() => t.received.length < 1000, 500),
      false,
    );
    assert.equal(sim.now, 500);
    assert.equal(t.received.length, 60);
    // The limit passes even while events keep coming.
    const busy = counterTopology({ ticks: 1_000_000 });
    const sim2 = new Simulator({ seed: 4, topology: busy.topology });
    sim2.start();
    assert.equal(
      sim2.runWhile(() => true, 50),
      false,
    );
    assert.equal(sim2.now, 50);
    assert.ok(sim2.stats.events > 0);
  });

  it("a replica crashed in the middle of its handler has no further effect", () => {
    const events: string[] = [];
    const topology = new TopologyBuilder("midway")
      .source("src", { parallelism: 1, outputs: ["s"] }, () => ({
        onStart: (ctx) => ctx.setStatus({ started: ctx.incarnation }),
        onExternal(input, ctx) {
          ctx.external.send(input); // the scenario crashes the replica right here
          ctx.emit("s", 1);
          ctx.timers.set("t", 1);
          ctx.setStatus({ after: true });
          ctx.external.send("again");
        },
        onTimer: (timer) => void events.push(`timer ${timer}`),
      }))
      .stage("sink", { parallelism: 1, inputs: [sub("src", "s", grouping.all())] }, () => ({
        onTuple: (input) => void events.push(`tuple ${String(input.tuple)}`),
      }))
      .build();
    const src = id("src", 0);
    const sim: Simulator = new Simulator({
      seed: 1,
      topology,
      network: { minDelayMs: 0.5, maxDelayMs: 0.5 },
      onExternalOutput: (from, output) => {
        events.push(`output ${String(output)}`);
        if (output === "crash") sim.crash(from);
      },
    });
    sim.start();
    sim.deliverExternal(src, "crash");
    sim.runUntil(100);
    assert.deepEqual(events, ["output crash"]);
    assert.deepEqual(sim.status(src), { started: 1 });
    sim.restart(src);
    sim.deliverExternal(src, "ok");
    sim.runUntil(200);
    assert.deepEqual(events, ["output crash", "output ok", "output again", "tuple 1", "timer t"]);
    assert.deepEqual(sim.status(src), { after: true });
  });

  it("setting a timer replaces the pending one of that name; cancel removes it", () => {
    const fired: string[] = [];
    const topology = new TopologyBuilder("timers")
      .source("src", { parallelism: 1 }, () => ({
        onStart(ctx) {
          ctx.timers.set("a", 5);
          ctx.timers.set("a", 2);
          ctx.timers.set("b", 3);
          ctx.timers.set("c", 4);
          ctx.timers.cancel("b");
        },
        onTimer(timer, ctx) {
          fired.push(`${timer}@${ctx.clock.now()}`);
          if (timer === "a") ctx.timers.set("c", 10);
        },
      }))
      .build();
    const sim = new Simulator({ seed: 1, topology });
    sim.start();
    sim.runUntil(100);
    assert.deepEqual(fired, ["a@2", "c@12"]);
  });

  it("a livelock (events without end at one instant) throws instead of spinning", () => {
    const topology = new TopologyBuilder("spin")
      .source("src", { parallelism: 1 }, () => ({
        onStart: (ctx) => ctx.timers.set("again", 0),
        onTimer: (_timer, ctx) => ctx.timers.set("again", 0),
      }))
      .build();
    const sim = new Simulator({ seed: 1, topology, maxEventsPerInstant: 1000 });
    sim.start();
    assert.throws(() => sim.runUntil(10), /livelock: more than 1000 events at virtual time 0/);
  });

  it("setStatus, incarnation and a missing replica", () => {
    const topology = new TopologyBuilder("status")
      .source("src", { parallelism: 1 }, () => ({
        onStart: (ctx) => ctx.setStatus({ inc: ctx.incarnation }),
      }))
      .build();
    const sim = new Simulator({ seed: 1, topology });
    const src = id("src", 0);
    assert.equal(sim.isAlive(src), false);
    assert.equal(sim.incarnation(src), 0);
    sim.start();
    assert.deepEqual(sim.status(src), { inc: 1 });
    sim.crash(src);
    assert.deepEqual(sim.status(src), { inc: 1 });
    sim.restart(src);
    assert.deepEqual(sim.status(src), { inc: 2 });
    assert.throws(() => sim.isAlive(id("src", 1)), TopologyError);
    assert.throws(() => sim.replicasOf("nope"), TopologyError);
  });
});

describe("Simulator: LPC checkpoints", () => {
  const lpc = (store: SimCheckpointing["store"]): SimCheckpointing => ({
    mechanism: "lpc-cs",
    batchFactor: 1,
    batchDelayMs: 0,
    compactEvery: 1000,
    store: { loadMinMs: 1, loadMaxMs: 1, slowChance: 0, ...store },
  });
  const fixedNetwork = { minDelayMs: 0.5, maxDelayMs: 0.5 };

  /**
   * `src` ticks every ms from its start (10 ticks) and emits tick n on `x` and out to the world;
   * odd ticks first record n (its instance state is the list of recorded n). `sink` logs.
   */
  function gated(store: SimCheckpointing["store"]) {
    const received: string[] = [];
    const external: string[] = [];
    const restored: { inc: number; recorded: number[] }[] = [];
    const topology = new TopologyBuilder("gate")
      .source("src", { parallelism: 1, outputs: ["x"] }, () => {
        let n = 0;
        let recorded: number[] = [];
        return {
          snapshot: () => recorded,
          restore(state: InstanceState, ctx) {
            const base = (state.snapshot as number[] | undefined) ?? [];
            recorded = [...base, ...(state.updates as number[])];
            restored.push({ inc: ctx.incarnation, recorded: [...recorded] });
          },
          onStart: (ctx) => ctx.timers.set("tick", 1),
          onTimer(_timer, ctx) {
            n++;
            if (n % 2 === 1) {
              recorded.push(n);
              ctx.checkpoints.instance!.record(n);
            }
            ctx.emit("x", n);
            ctx.external.send(n);
            if (n < 10) ctx.timers.set("tick", 1);
          },
        };
      })
      .stage("sink", { parallelism: 1, inputs: [sub("src", "x", grouping.all())] }, () => ({
        onTuple: (input, ctx) => void received.push(`${ctx.clock.now()}:${String(input.tuple)}`),
      }))
      .build();
    const sim: Simulator = new Simulator({
      seed: 1,
      topology,
      network: fixedNetwork,
      checkpoints: lpc(store),
      onExternalOutput: (_from, output) => external.push(`${sim.now}:${String(output)}`),
    });
    return { sim, received, external, restored };
  }

  it("holds what follows a record until the write is durable: tuples and external output", () => {
    const { sim, received, external, restored } = gated({ putMinMs: 10, putMaxMs: 10 });
    sim.start();
    // Recovery (an empty log) takes the load's 1 ms: src starts at 1, ticks n at n + 1.
    assert.equal(sim.isRecovering(id("src", 0)), true);
    sim.runUntil(12.4);
    assert.deepEqual(restored, [{ inc: 1, recorded: [] }]);
    assert.deepEqual(received, [], "n=1 was recorded at 2: nothing leaves before 12");
    sim.runUntil(100);
    // Write 1 (n=1) is durable at 12; write 2 (3, 5, 7, 9, queued meanwhile) at 22.
    assert.deepEqual(received, [
      "12.5:1",
      "12.5:2",
      ...[3, 4, 5, 6, 7, 8, 9, 10].map((n) => `22.5:${n}`),
    ]);
    assert.deepEqual(external, [
      "12:1",
      "12:2",
      ...[3, 4, 5, 6, 7, 8, 9, 10].map((n) => `22:${n}`),
    ]);
    const status = sim.checkpointStatus(id("src", 0))!;
    assert.equal(status.instance?.writes, 2);
    assert.equal(status.instance?.durable, 5);
  });

  it("a restarted replica restores what was durable; a torn write is rejected, a whole one kept", () => {
    for (const [model, expected] of [
      [{ tornOnCrash: 1, wholeOnCrash: 0 }, [1]],
      [{ tornOnCrash: 0, wholeOnCrash: 1 }, [1, 3, 5, 7, 9]],
    ] as const) {
      const { sim, received, restored } = gated({ putMinMs: 10, putMaxMs: 10, ...model });
      const src = id("src", 0);
      sim.start();
      sim.schedule(15, () => sim.crash(src)); // write 2 in flight since 12
      sim.schedule(20, () => sim.restart(src));
      sim.runUntil(21.5);
      assert.deepEqual(received, ["12.5:1", "12.5:2"], "what left before the crash");
      assert.deepEqual(restored[1], { inc: 2, recorded: expected });
      assert.equal(sim.store!.stats[model.tornOnCrash ? "torn" : "whole"], 1);
    }
  });

  it("deliveries that arrive while a replica recovers wait for its onStart, in order", () => {
    const seen: string[] = [];
    const topology = new TopologyBuilder("recovering")
      .source("src", { parallelism: 1, outputs: ["x"] }, () => {
        let n = 0;
        return {
          onStart: (ctx) => ctx.timers.set("tick", 1),
          onTimer(_timer, ctx) {
            ctx.emit("x", ++n);
            if (n < 15) ctx.timers.set("tick", 1);
          },
        };
      })
      .stage("sink", { parallelism: 1, inputs: [sub("src", "x", grouping.all())] }, () => ({
        snapshot: () => null,
        restore: () => undefined,
        onStart: (ctx) => void seen.push(`start@${ctx.clock.now()}`),
        onTuple: (input, ctx) => void seen.push(`${String(input.tuple)}@${ctx.clock.now()}`),
      }))
      .build();
    const sim = new Simulator({
      seed: 1,
      topology,
      network: fixedNetwork,
      checkpoints: lpc({ loadMinMs: 5, loadMaxMs: 5 }),
    });
    const sink = id("sink", 0);
    sim.start();
    sim.schedule(5.2, () => {
      sim.crash(sink);
      sim.restart(sink);
    });
    sim.runUntil(8);
    assert.equal(sim.isRecovering(sink), true);
    sim.runUntil(30);
    assert.equal(sim.isRecovering(sink), false);
    // Tick n is sent at n and arrives at n + 0.5. Both incarnations wait 5 ms for their load;
    // tick 5 was on its way to the crashed one.
    assert.deepEqual(seen, [
      "start@5",
      "1@5",
      "2@5",
      "3@5",
      "4@5",
      "start@10.2",
      "6@10.2",
      "7@10.2",
      "8@10.2",
      "9@10.2",
      "10@10.5",
      "11@11.5",
      "12@12.5",
      "13@13.5",
      "14@14.5",
      "15@15.5",
    ]);
    assert.equal(sim.stats.dropped, 1);
  });

  it("a paused replica does no platform work: its recovery completes once it resumes", () => {
    const started: number[] = [];
    const topology = new TopologyBuilder("paused-recovery")
      .source("s", { parallelism: 1 }, () => ({
        snapshot: () => null,
        restore: () => undefined,
        onStart: (ctx) => void started.push(ctx.clock.now()),
      }))
      .build();
    const sim = new Simulator({ seed: 1, topology, checkpoints: lpc({}) });
    const s = id("s", 0);
    sim.start();
    sim.pause(s);
    sim.runUntil(20);
    assert.deepEqual(started, []);
    assert.equal(sim.isRecovering(s), true);
    sim.resume(s);
    sim.runUntil(21);
    assert.deepEqual(started, [20]);
  });

  it("group checkpoints: saved after the latency, loaded by another replica", () => {
    const events: string[] = [];
    const topology = new TopologyBuilder("group")
      .source("g", { parallelism: 2 }, (index) => ({
        onStart(ctx) {
          assert.equal(ctx.checkpoints.mechanism, "lpc-cs");
          assert.equal(ctx.checkpoints.instance, undefined, "no snapshot/restore: no log");
          if (index === 0) ctx.checkpoints.group!.save(1, bytesOf("one"));
          else ctx.timers.set("load", 50);
        },
        onTimer: (_timer, ctx) => ctx.checkpoints.group!.loadLatest(),
        onCheckpoint(event: CheckpointEvent, ctx) {
          const at = `${index}@${ctx.clock.now()}`;
          if (event.t === "group-saved") {
            events.push(`${at} saved ${event.seq}`);
            if (event.seq === 1) ctx.checkpoints.group!.save(2, bytesOf("two"));
          } else if (event.t === "group-loaded") {
            events.push(`${at} loaded ${event.seq} ${new TextDecoder().decode(event.snapshot)}`);
          } else events.push(`${at} none`);
        },
      }))
      .build();
    const sim = new Simulator({
      seed: 1,
      topology,
      checkpoints: lpc({ putMinMs: 3, putMaxMs: 3, loadMinMs: 2, loadMaxMs: 2 }),
    });
    sim.start();
    sim.runUntil(100);
    assert.deepEqual(events, ["0@3 saved 1", "0@6 saved 2", "1@52 loaded 2 two"]);
  });

  it("PDC and none give no platform checkpoints and start at once", () => {
    for (const mechanism of ["pdc", "none"] as const) {
      const seen: unknown[] = [];
      const topology = new TopologyBuilder("pdc")
        .source("s", { parallelism: 1 }, () => ({
          snapshot: () => null,
          restore: () => assert.fail("no instance checkpoints"),
          onStart: (ctx) => void seen.push({ ...ctx.checkpoints }),
        }))
        .build();
      const sim = new Simulator({ seed: 1, topology, checkpoints: { mechanism } });
      sim.start();
      assert.deepEqual(seen, [{ mechanism, group: undefined, instance: undefined }]);
      assert.equal(sim.store, undefined);
    }
  });
});

function bytesOf(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}
