/**
 * GpcReplica on a hand-driven host: a store in memory that answers at once, no timers run.
 * The simulator runs it under faults (test/sim); these pin single behaviours down.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { unpack } from "msgpackr";
import type { Tuple } from "../../src/platform/api/stage.js";
import type { CheckpointSink } from "../../src/platform/checkpoint/channel.js";
import { GpcReplica, type Delivery } from "../../src/platform/checkpoint/gpc-replica.js";

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

/**
 * A replica with forward inputs from tasks 0 and 1 (and back edges from `back`), and a stage
 * whose state is a list of the items delivered.
 */
function replica(options: { awaitRestore?: boolean; back?: number[] } = {}) {
  const stored = new Map<number, Uint8Array>();
  const sent: string[] = [];
  const state = { items: [] as number[] };
  const channel: CheckpointSink = {
    style: "callbacks",
    description: "memory",
    put: (ref, data, done) => {
      stored.set(ref.id, data.slice());
      done();
    },
    loadLatest: (_owner, done, upTo) => {
      const ids = [...stored.keys()].filter((id) => upTo === undefined || id <= upTo);
      const id = Math.max(0, ...ids);
      done(id > 0 ? { base: { id, data: stored.get(id)! }, deltas: [] } : { deltas: [] });
    },
    prune: (_owner, _keep, done) => done(),
  };
  let restarted: Tuple | undefined;
  const gpc: GpcReplica = new GpcReplica(
    {
      self: { stage: "s", index: 0 },
      owner: { topology: "t", stage: "s", replica: 0 },
      channel,
      forward: [0, 1],
      back: options.back ?? [],
      snapshot: () => state,
      emitMarker: (i) => sent.push(`marker ${i}`),
      deliver: (delivery: Delivery) => {
        const item = delivery.tuple as number;
        state.items.push(item);
        gpc.output(() => sent.push(`tuple ${item}`));
      },
      quiesce: () => undefined,
      restart: (restoredState) => {
        restarted = restoredState;
        state.items = [...((restoredState as { items: number[] } | undefined)?.items ?? [])];
      },
      saved: () => undefined,
      restored: () => undefined,
      setTimer: () => undefined,
      alignTimeoutMs: 1000,
      log: quiet,
    },
    () => 0,
    options.awaitRestore ?? false,
  );
  return { gpc, sent, state, stored, restarted: () => restarted };
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
    const saved = unpack(stored.get(1)!) as { state: Uint8Array; channel: unknown[] };
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
    const saved = unpack(stored.get(1)!) as { state: Uint8Array; channel: unknown[] };
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
    const restarted = replica({ awaitRestore: true });
    for (const [id, data] of first.stored) restarted.stored.set(id, data);
    assert.equal(restarted.gpc.waiting, true);
    restarted.gpc.onRestore(1, 1);
    assert.equal(restarted.gpc.waiting, false);
    assert.deepEqual(restarted.restarted(), { items: [7] });
  });
});
