import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { RecoveredChain } from "../../src/platform/checkpoint/store/recovery.js";
import {
  CheckpointRejected,
  type CheckpointOwner,
  type EntryRef,
} from "../../src/platform/checkpoint/store/store.js";
import { Random } from "../../src/sim/random.js";
import { SimStore, type SimStoreModel } from "../../src/sim/sim-store.js";

const owner: CheckpointOwner = { topology: "t", stage: "committer", replica: 0 };
const ref = (id: number, kind: "base" | "delta" = "delta"): EntryRef => ({ owner, id, kind });
const bytes = (text: string) => new TextEncoder().encode(text);
const text = (data: Uint8Array) => new TextDecoder().decode(data);

/** A store on a hand-driven virtual clock. */
function harness(model: Partial<SimStoreModel> = {}, seed = 1) {
  let now = 0;
  let queue: { at: number; order: number; action: () => void }[] = [];
  let order = 0;
  const warnings: string[] = [];
  const store = new SimStore({
    random: new Random(seed),
    schedule: (delayMs, action) => queue.push({ at: now + delayMs, order: order++, action }),
    now: () => now,
    model: { slowChance: 0, ...model },
    log: { warn: (_obj, msg) => warnings.push(msg ?? "") },
  });
  const runUntil = (t: number) => {
    for (;;) {
      queue.sort((a, b) => a.at - b.at || a.order - b.order);
      const next = queue[0];
      if (!next || next.at > t) break;
      queue = queue.slice(1);
      now = next.at;
      next.action();
    }
    now = t;
  };
  const load = (writer = "reader"): RecoveredChain | Error => {
    let result: RecoveredChain | Error | undefined;
    store.sink(writer).loadLatest(owner, (r) => (result = r));
    runUntil(now + 100);
    assert.ok(result, "the load answered");
    return result;
  };
  return { store, runUntil, load, warnings, now: () => now };
}

const summary = (chain: RecoveredChain | Error) => {
  if (chain instanceof Error) return chain.name;
  return {
    base: chain.base ? `${chain.base.id}:${text(chain.base.data)}` : null,
    deltas: chain.deltas.map((d) => `${d.id}:${text(d.data)}`),
  };
};

describe("SimStore: fsync semantics", () => {
  it("a put is durable, and acknowledged, only after its latency", () => {
    const h = harness({ putMinMs: 5, putMaxMs: 5 });
    const acks: number[] = [];
    h.store.sink("w").put(ref(1), bytes("one"), (error) => {
      assert.equal(error, undefined);
      acks.push(h.now());
    });
    h.runUntil(4.9);
    assert.deepEqual(acks, []);
    assert.throws(() => h.store.get(ref(1)), CheckpointRejected);
    h.runUntil(5);
    assert.deepEqual(acks, [5]);
    assert.equal(text(h.store.get(ref(1))), "one");
  });

  it("a durable entry survives its writer's crash, and a torn rewrite of it", () => {
    const h = harness({ putMinMs: 1, putMaxMs: 1, tornOnCrash: 1, wholeOnCrash: 0 });
    const sink = h.store.sink("w");
    sink.put(ref(1), bytes("one"), () => undefined);
    h.runUntil(2);
    h.store.crashWriter("w");
    assert.equal(text(h.store.get(ref(1))), "one");
    // Rewriting the same entry and dying mid-way: the name still holds the durable one.
    const again = h.store.sink("w2");
    let acked = false;
    again.put(ref(1), bytes("uno"), () => (acked = true));
    h.store.crashWriter("w2");
    h.runUntil(10);
    assert.equal(acked, false, "a crashed writer gets no callback");
    assert.equal(text(h.store.get(ref(1))), "one");
    assert.equal(h.store.stats.torn, 1);
  });

  it("a put cut short by a crash leaves a torn entry that recovery rejects", () => {
    // Many seeds: truncations at every length and single corrupted bytes are all caught.
    for (let seed = 1; seed <= 200; seed++) {
      const h = harness({ putMinMs: 1, putMaxMs: 1, tornOnCrash: 1, wholeOnCrash: 0 }, seed);
      const sink = h.store.sink("w");
      sink.put(ref(1, "base"), bytes("base-1"), () => undefined);
      sink.put(ref(2), bytes("delta-2"), () => undefined);
      h.runUntil(1);
      sink.put(ref(3), bytes("delta-3"), () => undefined);
      h.store.crashWriter("w");
      const torn = h.store.raw(ref(3));
      assert.ok(torn, `seed ${seed}: torn bytes are stored`);
      assert.throws(() => h.store.get(ref(3)), CheckpointRejected, `seed ${seed}`);
      assert.deepEqual(summary(h.load()), { base: "1:base-1", deltas: ["2:delta-2"] });
      assert.equal(h.warnings.length, 1, `seed ${seed}: the rejection is logged`);
    }
  });

  it("a torn base falls back to the previous base and every delta after it", () => {
    const h = harness({ putMinMs: 1, putMaxMs: 1, tornOnCrash: 1, wholeOnCrash: 0 });
    const sink = h.store.sink("w");
    sink.put(ref(1, "base"), bytes("b1"), () => undefined);
    sink.put(ref(2), bytes("d2"), () => undefined);
    h.runUntil(1);
    sink.put(ref(3, "base"), bytes("b3"), () => undefined);
    h.store.crashWriter("w");
    assert.deepEqual(summary(h.load()), { base: "1:b1", deltas: ["2:d2"] });
    // The next incarnation carries on at id 3 (a delta): the torn base is never used.
    h.store.sink("w2").put(ref(3), bytes("d3"), () => undefined);
    h.runUntil(h.now() + 2);
    assert.deepEqual(summary(h.load()), { base: "1:b1", deltas: ["2:d2", "3:d3"] });
  });

  it("an only base torn breaks the chain rather than trusting deltas alone", () => {
    const h = harness({ putMinMs: 1, putMaxMs: 1, tornOnCrash: 1, wholeOnCrash: 0 });
    const sink = h.store.sink("w");
    sink.put(ref(1), bytes("d1"), () => undefined);
    h.runUntil(1);
    sink.put(ref(2, "base"), bytes("b2"), () => undefined);
    h.store.crashWriter("w");
    assert.equal(summary(h.load()), "CheckpointChainBroken");
  });

  it("a put cut short may also be absent, or whole though never acknowledged", () => {
    const absent = harness({ putMinMs: 1, putMaxMs: 1, tornOnCrash: 0, wholeOnCrash: 0 });
    absent.store.sink("w").put(ref(1), bytes("d1"), () => undefined);
    absent.store.crashWriter("w");
    assert.equal(absent.store.raw(ref(1)), undefined);
    assert.deepEqual(summary(absent.load()), { base: null, deltas: [] });

    const whole = harness({ putMinMs: 1, putMaxMs: 1, tornOnCrash: 0, wholeOnCrash: 1 });
    whole.store.sink("w").put(ref(1), bytes("d1"), () => undefined);
    whole.store.crashWriter("w");
    assert.deepEqual(summary(whole.load()), { base: null, deltas: ["1:d1"] });
  });

  it("in an outage operations fail and store nothing; afterwards they succeed", () => {
    const h = harness({ putMinMs: 1, putMaxMs: 1 });
    const results: string[] = [];
    h.store.outage(10);
    assert.equal(h.store.unavailable, true);
    h.store.sink("w").put(ref(1), bytes("d1"), (error) => results.push(error?.message ?? "ok"));
    h.runUntil(2);
    assert.match(results[0]!, /unavailable/);
    assert.equal(h.store.raw(ref(1)), undefined);
    assert.ok(h.load() instanceof Error);
    h.runUntil(200);
    assert.equal(h.store.unavailable, false);
    h.store.sink("w").put(ref(1), bytes("d1"), (error) => results.push(error?.message ?? "ok"));
    h.runUntil(202);
    assert.equal(results[1], "ok");
    assert.deepEqual(summary(h.load()), { base: null, deltas: ["1:d1"] });
  });

  it("prune deletes what a durable base covers", () => {
    const h = harness({ putMinMs: 1, putMaxMs: 1 });
    const sink = h.store.sink("w");
    for (const [id, kind] of [
      [1, "delta"],
      [2, "base"],
      [3, "delta"],
      [4, "base"],
    ] as const) {
      sink.put(ref(id, kind), bytes(`${kind}${id}`), () => undefined);
    }
    h.runUntil(1);
    sink.prune(owner, 2, (error) => assert.equal(error, undefined));
    h.runUntil(20);
    assert.deepEqual(
      h.store.list(owner).map((r) => r.id),
      [2, 3, 4],
    );
    assert.deepEqual(summary(h.load()), { base: "4:base4", deltas: [] });
  });
});
