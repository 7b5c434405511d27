/**
 * GpcReplica on a hand-driven host: a store in memory that answers at once, no timers run.
 * The simulator runs it under faults (test/sim); these pin single behaviours down.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { unpack } from "msgpackr";
import type { InstanceState } from "../../src/platform/api/stage.js";
import type { CheckpointSink } from "../../src/platform/checkpoint/channel.js";
import { GpcReplica, type Delivery } from "../../src/platform/checkpoint/gpc-replica.js";

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** What a replica stored, by checkpoint id. */
type Stored = Map<number, { kind: string; data: Uint8Array }>;

/**
 * A replica with forward inputs from tasks 0 and 1 (and back edges from `back`), and a stage
 * whose state is the list of items delivered, each recorded as an update (kept only if the
 * stage is `incremental`). The store keeps bases and deltas as the real ones do (`loadLatest`:
 * the newest base up to `upTo` and the deltas after it) and puts complete at once unless
 * `holdPuts` holds them. A replica given a store that holds checkpoints awaits its restore.
 * With `unrecorded`, the stage's unrecorded state is the text "seen <number of items>".
 */
function replica(
  options: { back?: number[]; incremental?: boolean; unrecorded?: boolean; stored?: Stored } = {},
) {
  const stored: Stored = options.stored ?? new Map();
  const sent: string[] = [];
  const reported: number[] = [];
  const state = { items: [] as number[] };
  const deferred: (() => void)[] = [];
  let defer = false;
  let restarted: InstanceState | undefined;
  const channel: CheckpointSink = {
    style: "callbacks",
    description: "memory",
    put: (ref, data, done) => {
      const write = () => {
        stored.set(ref.id, { kind: ref.kind, data: data.slice() });
        done();
      };
      if (defer) deferred.push(write);
      else write();
    },
    loadLatest: (_owner, done, upTo) => {
      const ids = [...stored.keys()].filter((id) => upTo === undefined || id <= upTo).sort();
      const base = Math.max(-1, ...ids.filter((id) => stored.get(id)!.kind === "base"));
      const deltas = ids
        .filter((id) => id > base && stored.get(id)!.kind === "delta")
        .map((id) => ({ id, data: stored.get(id)!.data }));
      done(base >= 0 ? { base: { id: base, data: stored.get(base)!.data }, deltas } : { deltas });
    },
    prune: (_owner, _keep, done) => done(),
  };
  const gpc: GpcReplica = new GpcReplica(
    {
      self: { stage: "s", index: 0 },
      owner: { topology: "t", stage: "s", replica: 0 },
      channel,
      forward: [0, 1],
      back: options.back ?? [],
      snapshot: () => state,
      unrecorded: () => (options.unrecorded ? `seen ${state.items.length}` : undefined),
      incremental: options.incremental ?? false,
      emitMarker: (i) => sent.push(`marker ${i}`),
      deliver: (delivery: Delivery) => {
        const item = delivery.tuple as number;
        state.items.push(item);
        gpc.record(item);
        gpc.output(() => sent.push(`tuple ${item}`));
      },
      quiesce: () => undefined,
      restart: (restoredState) => {
        restarted = restoredState;
        const base = (restoredState.snapshot as { items: number[] } | undefined)?.items ?? [];
        const items = restoredState.updates.filter((u): u is number => typeof u === "number");
        state.items = [...base, ...items];
      },
      saved: (i) => reported.push(i),
      restored: () => undefined,
      setTimer: () => undefined,
      alignTimeoutMs: 1000,
      log: quiet,
    },
    () => 0,
    stored.size > 0,
  );
  /** Checkpoint i's markers on both inputs, after `items` on input 0. */
  const checkpoint = (i: number, ...items: number[]) => {
    for (const item of items) gpc.onDelivery({ src: 0, stream: 0, tuple: item }, undefined);
    gpc.onDelivery({ src: 0, stream: 0, tuple: null }, i);
    gpc.onDelivery({ src: 1, stream: 0, tuple: null }, i);
  };
  const kinds = () => [...stored].sort(([a], [b]) => a - b).map(([id, e]) => `${id}:${e.kind}`);
  return {
    gpc,
    sent,
    state,
    stored,
    reported,
    checkpoint,
    kinds,
    restarted: () => restarted,
    holdPuts: (on: boolean) => (defer = on),
    releasePuts: () => deferred.splice(0).forEach((write) => write()),
  };
}

describe("GpcReplica", () => {
  it("saves the state as it was at the snapshot, not as it is when the save completes", () => {
    const { gpc, state, stored } = replica({ back: [2] });
    gpc.onDelivery({ src: 0, stream: 0, tuple: 1 }, undefined);
    gpc.onDelivery({ src: 0, stream: 0, tuple: null }, 1);
    gpc.onDelivery({ src: 1, stream: 0, tuple: null }, 1);
    // Snapshotted; the back edge is recorded until its marker comes, then the save starts.
    state.items.push(99); // the stage goes on changing what its snapshot returned
    gpc.onDelivery({ src: 2, stream: 0, tuple: 5 }, undefined);
    assert.equal(stored.has(1), false);
    gpc.onDelivery({ src: 2, stream: 0, tuple: null }, 1);
    const saved = unpack(stored.get(1)!.data) as { state: Uint8Array; channel: unknown[] };
    assert.deepEqual(unpack(saved.state), { items: [1] });
    assert.deepEqual(saved.channel, [[2, 0, 5]]);
  });

  it("sends a marker after the outputs it held between a restore and the resume", () => {
    const { gpc, sent, stored } = replica();
    // Checkpoint 1 with one item, then a rollback to it.
    gpc.onDelivery({ src: 0, stream: 0, tuple: 1 }, undefined);
    gpc.onDelivery({ src: 0, stream: 0, tuple: null }, 1);
    gpc.onDelivery({ src: 1, stream: 0, tuple: null }, 1);
    assert.ok(stored.has(1));
    gpc.onGlobal(1);
    sent.length = 0;
    gpc.onRestore(1, 1);
    assert.equal(gpc.waiting, false);
    // Restored, not resumed: its outputs are held; then checkpoint 2's markers come.
    gpc.onDelivery({ src: 0, stream: 0, tuple: 2 }, undefined);
    gpc.onDelivery({ src: 0, stream: 0, tuple: null }, 2);
    gpc.onDelivery({ src: 1, stream: 0, tuple: null }, 2);
    assert.deepEqual(sent, []);
    gpc.onResume(1);
    // Its snapshot 2 includes tuple 2 as sent: downstream must get the tuple before the marker.
    assert.deepEqual(sent, ["tuple 2", "marker 2"]);
  });

  it("blocks no input: a tuple behind a marker is processed at once and recorded on the others", () => {
    const { gpc, sent, stored } = replica();
    gpc.onDelivery({ src: 0, stream: 0, tuple: null }, 1); // snapshot: items []
    gpc.onDelivery({ src: 0, stream: 0, tuple: 1 }, undefined); // after the cut on input 0
    gpc.onDelivery({ src: 1, stream: 0, tuple: 2 }, undefined); // before the cut on input 1
    assert.deepEqual(sent, ["marker 1", "tuple 1", "tuple 2"]);
    gpc.onDelivery({ src: 1, stream: 0, tuple: null }, 1);
    const saved = unpack(stored.get(1)!.data) as { state: Uint8Array; channel: unknown[] };
    assert.deepEqual(unpack(saved.state), { items: [] });
    // Input 1's tuple was in flight at the cut: its channel's state, replayed on a restore.
    assert.deepEqual(saved.channel, [[1, 0, 2]]);
  });

  it("abandons a checkpoint whose marker an input skipped (lost upstream)", () => {
    const { gpc, stored } = replica();
    gpc.onDelivery({ src: 0, stream: 0, tuple: null }, 1);
    // Input 1 sends checkpoint 2's marker without 1's: checkpoint 1 can never complete here.
    gpc.onDelivery({ src: 1, stream: 0, tuple: null }, 2);
    assert.equal(gpc.stats.abandoned, 1);
    gpc.onDelivery({ src: 0, stream: 0, tuple: null }, 2);
    assert.deepEqual([...stored.keys()], [2]);
  });

  it("on a rollback to g sends what left before g's snapshot, and drops what left after", () => {
    const { gpc, sent } = replica();
    const checkpoint = (i: number) => {
      gpc.onDelivery({ src: 0, stream: 0, tuple: null }, i);
      gpc.onDelivery({ src: 1, stream: 0, tuple: null }, i);
    };
    checkpoint(1);
    gpc.external(() => sent.push("reply a")); // after snapshot 1: covered by checkpoint 2
    checkpoint(2);
    gpc.external(() => sent.push("reply b")); // after snapshot 2: the rolled-back run's
    sent.length = 0;
    // Checkpoint 2 became global, but the rollback to it comes before "global 2" does.
    gpc.onRestore(1, 2);
    assert.deepEqual(sent, ["reply a"]);
  });

  it("restarts a replica that waits for its restore in the global checkpoint's state", () => {
    const first = replica();
    first.gpc.onDelivery({ src: 0, stream: 0, tuple: 7 }, undefined);
    first.gpc.onDelivery({ src: 0, stream: 0, tuple: null }, 1);
    first.gpc.onDelivery({ src: 1, stream: 0, tuple: null }, 1);
    // A later checkpoint saved but never global: the rollback must ignore it.
    first.gpc.onDelivery({ src: 0, stream: 0, tuple: 8 }, undefined);
    first.gpc.onDelivery({ src: 0, stream: 0, tuple: null }, 2);
    first.gpc.onDelivery({ src: 1, stream: 0, tuple: null }, 2);
    const restarted = replica({ stored: first.stored });
    assert.equal(restarted.gpc.waiting, true);
    restarted.gpc.onRestore(1, 1);
    assert.equal(restarted.gpc.waiting, false);
    assert.deepEqual(restarted.restarted()!.snapshot, { items: [7] });
  });
});

describe("GpcReplica, incremental (a stage that records every update)", () => {
  it("saves the updates since the previous checkpoint, and restores base + deltas exactly", () => {
    const first = replica({ incremental: true });
    // A base big enough that several deltas fit under its size.
    first.checkpoint(1, ...Array.from({ length: 50 }, (_, k) => 1000 + k));
    first.checkpoint(2, 7);
    first.checkpoint(3, 8, 9);
    assert.deepEqual(first.kinds(), ["1:base", "2:delta", "3:delta"]);
    const delta = unpack(first.stored.get(3)!.data) as { prev: number; updates: Uint8Array };
    assert.equal(delta.prev, 2);
    assert.deepEqual(unpack(delta.updates), [8, 9]);
    // A replica restarted into checkpoint 3 gets its base and the deltas up to 3, in order.
    const restarted = replica({ incremental: true, stored: first.stored });
    restarted.gpc.onRestore(1, 3);
    assert.equal(restarted.gpc.waiting, false);
    assert.deepEqual(restarted.restarted()!.updates, [7, 8, 9]);
    assert.deepEqual(restarted.state.items, first.state.items);
    // Restored into 2, a delta's later entries are ignored.
    const older = replica({ incremental: true, stored: first.stored });
    older.gpc.onRestore(1, 2);
    assert.deepEqual(older.restarted()!.updates, [7]);
  });

  it("ends every delta with the stage's unrecorded state at the checkpoint", () => {
    const first = replica({ incremental: true, unrecorded: true });
    first.checkpoint(1, ...Array.from({ length: 50 }, (_, k) => 1000 + k));
    first.checkpoint(2, 7);
    first.checkpoint(3, 8, 9);
    const delta = unpack(first.stored.get(3)!.data) as { updates: Uint8Array };
    assert.deepEqual(unpack(delta.updates), [8, 9, "seen 53"]);
    const restarted = replica({ incremental: true, unrecorded: true, stored: first.stored });
    restarted.gpc.onRestore(1, 3);
    // Every delta's in order: the last one is the state at checkpoint 3.
    assert.deepEqual(restarted.restarted()!.updates, [7, "seen 51", 8, 9, "seen 53"]);
    assert.deepEqual(restarted.state.items, first.state.items);
  });

  it("writes a new base once the deltas add up to the last base's size, and after a rollback", () => {
    const { gpc, checkpoint, kinds, state } = replica({ incremental: true });
    const ten = Array.from({ length: 10 }, (_, k) => k);
    checkpoint(1); // a tiny base: the first delta already outweighs it
    checkpoint(2, ...ten);
    checkpoint(3, 10);
    assert.deepEqual(kinds(), ["1:base", "2:delta", "3:base"]);
    gpc.onGlobal(3);
    checkpoint(4, 11);
    gpc.onRestore(1, 3);
    assert.deepEqual(state.items, [...ten, 10]);
    // The first checkpoint after the rollback starts a new chain: never one through 4.
    checkpoint(5, 12);
    assert.deepEqual(kinds(), ["1:base", "2:delta", "3:base", "4:delta", "5:base"]);
  });

  it("reports a delta saved only once every entry back to its base is durable", () => {
    const { checkpoint, reported, holdPuts, releasePuts } = replica({ incremental: true });
    holdPuts(true);
    checkpoint(1, ...Array.from({ length: 50 }, (_, k) => k));
    holdPuts(false);
    checkpoint(2, 99); // durable at once, but its base is not yet
    assert.deepEqual(reported, []);
    releasePuts();
    assert.deepEqual(reported, [1, 2]);
  });

  it("saves an abandoned checkpoint later deltas build on, without reporting it", () => {
    const { gpc, checkpoint, reported, kinds, stored } = replica({ incremental: true });
    checkpoint(1, ...Array.from({ length: 50 }, (_, k) => k));
    gpc.onDelivery({ src: 0, stream: 0, tuple: 7 }, undefined);
    gpc.onDelivery({ src: 0, stream: 0, tuple: null }, 2); // snapshot 2: a delta holding 7
    // Input 1 skips marker 2: checkpoint 2 is abandoned, then 3 is a delta on top of it.
    gpc.onDelivery({ src: 1, stream: 0, tuple: null }, 3);
    gpc.onDelivery({ src: 0, stream: 0, tuple: null }, 3);
    assert.equal(gpc.stats.abandoned, 1);
    assert.deepEqual(kinds(), ["1:base", "2:delta", "3:delta"]);
    assert.deepEqual(reported, [1, 3]);
    const restarted = replica({ incremental: true, stored });
    restarted.gpc.onRestore(1, 3);
    assert.deepEqual(restarted.restarted()!.updates, [7]);
  });

  it("refuses to rebuild a checkpoint whose chain does not lead back to the base", () => {
    const first = replica({ incremental: true });
    first.checkpoint(1, ...Array.from({ length: 50 }, (_, k) => k));
    first.checkpoint(2, 7);
    first.checkpoint(3, 8);
    first.stored.delete(2);
    const restarted = replica({ incremental: true, stored: first.stored });
    restarted.gpc.onRestore(1, 3);
    assert.equal(restarted.gpc.waiting, true);
    assert.equal(restarted.restarted(), undefined);
  });
});
