/**
 * The checkpoint core (InstanceLog, group checkpoints) on a hand-driven virtual clock: no
 * promise is involved, so every step happens exactly when its callback or timer runs.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { unpack } from "msgpackr";
import type { CheckpointEvent } from "../../src/platform/api/stage.js";
import {
  sinkOf,
  type CheckpointChannel,
  type CheckpointSink,
} from "../../src/platform/checkpoint/channel.js";
import { PersistedGroupCheckpoints } from "../../src/platform/checkpoint/group-checkpoints.js";
import { InstanceLog } from "../../src/platform/checkpoint/instance-log.js";
import {
  CheckpointChainBroken,
  type RecoveredChain,
} from "../../src/platform/checkpoint/store/recovery.js";
import type { CheckpointOwner, EntryRef } from "../../src/platform/checkpoint/store/store.js";

const owner: CheckpointOwner = { topology: "t", stage: "s", replica: 0 };
const quiet = { warn: () => undefined, info: () => undefined };

function clock() {
  let now = 0;
  let timers: { at: number; fire: () => void; cancelled: boolean }[] = [];
  return {
    now: () => now,
    setTimer: (delayMs: number, fire: () => void) => {
      const timer = { at: now + delayMs, fire, cancelled: false };
      timers.push(timer);
      return { cancel: () => void (timer.cancelled = true) };
    },
    advance(to: number) {
      for (;;) {
        const due = timers.filter((t) => !t.cancelled && t.at <= to).sort((a, b) => a.at - b.at);
        if (due.length === 0) break;
        const next = due[0]!;
        timers = timers.filter((t) => t !== next);
        now = next.at;
        next.fire();
      }
      now = to;
    },
  };
}

/** A sink whose puts the test completes (or fails) by hand. */
function manualSink() {
  const puts: { ref: EntryRef; data: Uint8Array; done: (error?: Error) => void }[] = [];
  const prunes: number[] = [];
  const sink: CheckpointSink = {
    style: "callbacks",
    description: "manual",
    put: (ref, data, done) => void puts.push({ ref, data, done }),
    loadLatest: () => assert.fail("not used"),
    prune: (_owner, keepFromId, done) => {
      prunes.push(keepFromId);
      done();
    },
  };
  return { sink, puts, prunes };
}

describe("InstanceLog on a virtual clock", () => {
  function log(options: { batchFactor?: number; batchDelayMs?: number; compactEvery?: number }) {
    const c = clock();
    const s = manualSink();
    let durableCalls = 0;
    let state: number[] = [];
    const instance = new InstanceLog({
      owner,
      channel: s.sink,
      snapshot: () => state,
      batchFactor: options.batchFactor ?? 1,
      batchDelayMs: options.batchDelayMs ?? 0,
      compactEvery: options.compactEvery ?? 1000,
      nextId: 1,
      baseId: undefined,
      deltasSinceBase: 0,
      now: c.now,
      setTimer: c.setTimer,
      onDurable: () => durableCalls++,
      log: quiet,
    });
    const record = (n: number) => {
      state = [...state, n];
      instance.record(n);
    };
    return { c, s, instance, record, durableCalls: () => durableCalls };
  }

  it("group commit: one write in flight, what is recorded meanwhile goes in the next", () => {
    const { s, instance, record } = log({});
    record(1);
    record(2);
    record(3);
    assert.equal(s.puts.length, 1);
    assert.deepEqual(unpack(s.puts[0]!.data), [1]);
    assert.equal(instance.hasUndurable, true);
    s.puts[0]!.done();
    assert.equal(instance.durable, 1);
    assert.deepEqual(unpack(s.puts[1]!.data), [2, 3]);
    s.puts[1]!.done();
    assert.equal(instance.durable, 3);
    assert.equal(instance.hasUndurable, false);
    assert.deepEqual(
      s.puts.map((p) => `${p.ref.id}.${p.ref.kind}`),
      ["1.delta", "2.delta"],
    );
  });

  it("a batch factor waits for F updates or the batch delay, exactly", () => {
    const { c, s, record } = log({ batchFactor: 3, batchDelayMs: 2 });
    c.advance(0.1);
    record(1);
    c.advance(0.7);
    record(2);
    c.advance(2.0999);
    assert.equal(s.puts.length, 0);
    // The timer fires at 0.1 + 2, whatever rounding makes of `now - since` then.
    c.advance(2.1);
    assert.equal(s.puts.length, 1);
    assert.deepEqual(unpack(s.puts[0]!.data), [1, 2]);
    s.puts[0]!.done();
    record(3);
    record(4);
    record(5);
    assert.equal(s.puts.length, 2, "three updates: written at once");
  });

  it("a failed write is retried with backoff until it succeeds; the log says it stalled", () => {
    const { c, s, instance, record } = log({});
    record(1);
    s.puts[0]!.done(new Error("store away"));
    assert.equal(instance.stats.stalled, "store away");
    c.advance(49);
    assert.equal(s.puts.length, 1);
    c.advance(50);
    assert.equal(s.puts.length, 2, "retried after 50 ms");
    s.puts[1]!.done(new Error("store away"));
    c.advance(149);
    assert.equal(s.puts.length, 2);
    c.advance(150);
    assert.equal(s.puts.length, 3, "then after 100 ms more");
    assert.equal(s.puts[2]!.ref.id, 1, "the same entry");
    s.puts[2]!.done();
    assert.equal(instance.durable, 1);
    assert.equal(instance.stats.stalled, null);
  });

  it("compacts into a base after compactEvery deltas and prunes one generation back", () => {
    const { s, record } = log({ compactEvery: 2 });
    for (let n = 1; n <= 7; n++) {
      record(n);
      s.puts.at(-1)!.done();
    }
    assert.deepEqual(
      s.puts.map((p) => `${p.ref.id}.${p.ref.kind}`),
      ["1.delta", "2.delta", "3.base", "4.delta", "5.delta", "6.base", "7.delta"],
    );
    assert.deepEqual(unpack(s.puts[2]!.data), [1, 2, 3], "a base is the whole state");
    assert.deepEqual(s.prunes, [3], "once base 6 is durable, what is below base 3 goes");
  });

  it("close stops writes, retries and callbacks", () => {
    const { c, s, instance, record, durableCalls } = log({});
    record(1);
    s.puts[0]!.done(new Error("away"));
    instance.close();
    c.advance(10_000);
    assert.equal(s.puts.length, 1);
    assert.equal(durableCalls(), 0);
  });
});

describe("PersistedGroupCheckpoints on a virtual clock", () => {
  it("saves, reports, prunes, loads; a broken chain is 'none', not retried forever", () => {
    const c = clock();
    const events: CheckpointEvent[] = [];
    const puts: { id: number; done: (error?: Error) => void }[] = [];
    const prunes: number[] = [];
    let chain: RecoveredChain | Error = new Error("store away");
    let loads = 0;
    const group = new PersistedGroupCheckpoints(
      { ...owner, replica: "group" },
      {
        style: "callbacks",
        description: "manual",
        put: (ref, _data, done) => void puts.push({ id: ref.id, done }),
        loadLatest: (_owner, done) => {
          loads++;
          done(chain);
        },
        prune: (_owner, keepFromId, done) => {
          prunes.push(keepFromId);
          done();
        },
      },
      { now: c.now, setTimer: c.setTimer, deliver: (e) => events.push(e), log: quiet },
    );
    group.save(10, Uint8Array.of(1));
    group.save(20, Uint8Array.of(2));
    puts[1]!.done(new Error("away"));
    c.advance(50);
    puts[0]!.done();
    puts[2]!.done();
    assert.deepEqual(events, [
      { t: "group-saved", seq: 10 },
      { t: "group-saved", seq: 20 },
    ]);
    assert.deepEqual(prunes, [10]);

    group.loadLatest();
    assert.equal(loads, 1);
    chain = { base: { id: 20, data: Uint8Array.of(2) }, deltas: [] };
    c.advance(100);
    assert.equal(loads, 2, "retried while the store was away");
    assert.deepEqual(events.at(-1), { t: "group-loaded", seq: 20, snapshot: Uint8Array.of(2) });

    chain = new CheckpointChainBroken({ ...owner, replica: "group" }, ["torn"]);
    group.loadLatest();
    assert.deepEqual(events.at(-1), { t: "group-none" });
  });
});

describe("sinkOf: a promise-based channel as a sink", () => {
  it("calls back once each operation settles", async () => {
    const seen: string[] = [];
    const channel: CheckpointChannel = {
      description: "promises",
      put: async (ref) => {
        if (ref.id === 2) throw new Error("full");
      },
      loadLatest: () => Promise.resolve({ deltas: [] }),
      prune: () => Promise.reject(new Error("nope")),
    };
    const sink = sinkOf(channel);
    assert.equal(sink.description, "promises");
    await new Promise<void>((resolve) => {
      sink.put({ owner, id: 1, kind: "delta" }, Uint8Array.of(), (e) =>
        seen.push(`1:${e?.message}`),
      );
      sink.put({ owner, id: 2, kind: "delta" }, Uint8Array.of(), (e) =>
        seen.push(`2:${e?.message}`),
      );
      sink.loadLatest(owner, (r) => seen.push(`load:${JSON.stringify(r)}`));
      sink.prune(owner, 3, (e) => {
        seen.push(`prune:${e?.message}`);
        resolve();
      });
    });
    assert.deepEqual(seen.sort(), ["1:undefined", "2:full", 'load:{"deltas":[]}', "prune:nope"]);
  });
});
