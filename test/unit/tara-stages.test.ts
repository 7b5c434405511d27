/**
 * TARA's stages on the deterministic simulator, one behaviour at a time: exactly-once
 * execution of retried requests, catch-up of a restarted executor through a peer's checkpoint,
 * garbage collection keeping every stage's memory bounded, leader failover.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ReplicaId } from "../../src/platform/api/stage.js";
import { Simulator } from "../../src/sim/simulator.js";
import { parseTaraConfig } from "../../src/tara/config.js";
import {
  decodeKvReply,
  encodeKvOp,
  KvStateMachine,
  type KvOp,
} from "../../src/tara/kv/kv-state-machine.js";
import {
  streams,
  type Checkpointed,
  type ClientReply,
  type Promise,
} from "../../src/tara/messages.js";
import type { Committer } from "../../src/tara/stages/committer.js";
import type { Executor } from "../../src/tara/stages/executor.js";
import type { Proposer } from "../../src/tara/stages/proposer.js";
import { stages, taraTopology } from "../../src/tara/topology.js";

function cluster(seed: number, config: Record<string, number> = {}) {
  const replies: ClientReply[] = [];
  const checkpoints: { from: ReplicaId; report: Checkpointed }[] = [];
  const promises: Promise[] = [];
  const topology = taraTopology({
    name: "tara-test",
    config: parseTaraConfig({ f: 1, checkpointInterval: 5, heartbeatMs: 10, ...config }),
    createMachine: () => new KvStateMachine(),
  });
  const sim = new Simulator({
    seed,
    topology,
    // Every reply sink forwards each reply (the gateway keeps one): count sink 0's.
    onExternalOutput: (from, output) => {
      if (from.index === 0) replies.push(output as ClientReply);
    },
    onEmit: (from, stream, tuple) => {
      if (stream === streams.checkpointed)
        checkpoints.push({ from, report: tuple as Checkpointed });
      if (stream === streams.votes && (tuple as Promise).t === "promise") {
        promises.push(tuple as Promise);
      }
    },
  });
  sim.start();
  const id = (stage: string, index: number): ReplicaId => ({ stage, index });
  const submit = (c: number, r: number, op: KvOp, source = 0) =>
    sim.deliverExternal(id(stages.requestSource, source), { c, r, g: 0, op: encodeKvOp(op) });
  const executors = () => sim.replicasOf(stages.executor).map((e) => sim.stage<Executor>(e));
  return { sim, replies, checkpoints, promises, id, submit, executors };
}

/**
 * A client that runs `count` puts one after another, each after the previous reply, and
 * retries a request (same id, the other request source) after 200 ms without a reply.
 */
function closedLoop(
  t: ReturnType<typeof cluster>,
  c: number,
  count: number,
  value = (r: number) => `${r}`,
): () => boolean {
  let r = 0;
  let sentAt = 0;
  let attempt = 0;
  const send = () => {
    sentAt = t.sim.now;
    t.submit(c, r, { type: "put", key: `k${c}`, value: value(r) }, attempt++ % 2);
  };
  const done = () => t.replies.some((reply) => reply.c === c && reply.r === count);
  r = 1;
  send();
  const step = () => {
    if (done()) return;
    if (t.replies.some((reply) => reply.c === c && reply.r === r)) {
      r++;
      send();
    } else if (t.sim.now - sentAt > 200) send();
    t.sim.schedule(1, step);
  };
  t.sim.schedule(1, step);
  return () => !done();
}

test("a retried request is executed once; the retry gets the cached reply again", () => {
  const t = cluster(1);
  t.submit(7, 1, { type: "put", key: "a", value: "1" });
  assert.ok(t.sim.runWhile(() => t.replies.length === 0, 1000));
  // The same request again, through the other request source (a client's retry).
  t.submit(7, 1, { type: "put", key: "a", value: "1" }, 1);
  assert.ok(t.sim.runWhile(() => t.replies.length < 2, 1000));
  assert.deepEqual(
    t.replies.map((reply) => [reply.c, reply.r, decodeKvReply(reply.res).type]),
    [
      [7, 1, "put"],
      [7, 1, "put"],
    ],
  );
  t.sim.runUntil(t.sim.now + 100);
  for (const executor of t.executors()) assert.equal(executor.applied, 1);
  // An older request than the last one is ignored: no reply, no effect.
  t.submit(7, 2, { type: "put", key: "a", value: "2" });
  assert.ok(t.sim.runWhile(() => t.replies.length < 3, 1000));
  t.submit(7, 1, { type: "put", key: "a", value: "1" });
  t.sim.runUntil(t.sim.now + 200);
  assert.equal(t.replies.length, 3);
  for (const executor of t.executors()) assert.equal(executor.applied, 2);
});

test("a restarted executor catches up from a peer's checkpoint and reports it", () => {
  const t = cluster(2);
  const e2 = t.id(stages.executor, 2);
  t.sim.crash(e2);
  const busy = closedLoop(t, 1, 60);
  assert.ok(t.sim.runWhile(busy, 5000));
  t.sim.restart(e2);
  const [first] = t.executors();
  const restarted = t.sim.stage<Executor>(e2);
  assert.ok(t.sim.runWhile(() => restarted.lastExecuted < first!.lastExecuted, t.sim.now + 2000));
  assert.equal(restarted.stateDigest(), first!.stateDigest());
  // It installed a checkpoint it did not take, and announced it like one it took.
  assert.ok(restarted.checkpoint !== null && restarted.checkpoint.s >= 5);
  const own = t.checkpoints.filter(
    (c) => c.from.index === 2 && c.report.s === restarted.checkpoint!.s,
  );
  assert.ok(own.length > 0, "the installed checkpoint was not reported");
});

test("garbage collection keeps every stage's memory bounded in a long run", () => {
  const K = 5;
  const t = cluster(3, { checkpointInterval: K, window: 12, batchMax: 2 });
  const busy = [1, 2, 3].map((c) => closedLoop(t, c, 400));
  const committers = t.sim.replicasOf(stages.committer).map((c) => t.sim.stage<Committer>(c));
  const proposers = t.sim.replicasOf(stages.proposer).map((p) => t.sim.stage<Proposer>(p));
  let maxAccepted = 0;
  const sample = () => {
    for (const c of committers) maxAccepted = Math.max(maxAccepted, c.accepted.size);
    t.sim.schedule(5, sample);
  };
  sample();
  assert.ok(t.sim.runWhile(() => busy.some((b) => b()), 60_000));
  const executed = t.executors()[0]!.lastExecuted;
  assert.ok(executed > 20 * K, `only ${executed} sequence numbers`);
  assert.ok(maxAccepted <= 12, `a committer held ${maxAccepted} entries`);
  for (const p of proposers) assert.ok(p.stableCheckpoint >= executed - 2 * K);
  for (const e of t.executors()) assert.ok(e.stableCheckpoint >= executed - 2 * K);
});

test("after the leader crashes the next proposer takes over and nothing is lost", () => {
  const t = cluster(4, { viewChangeMs: 50 });
  const busy = closedLoop(t, 1, 40);
  t.sim.runWhile(() => !t.replies.some((r) => r.r === 10), 5000);
  t.sim.crash(t.id(stages.proposer, 0));
  assert.ok(t.sim.runWhile(busy, t.sim.now + 10_000));
  const p1 = t.sim.stage<Proposer>(t.id(stages.proposer, 1));
  assert.equal(p1.role, "leader");
  assert.ok(p1.ownView >= 1);
  const digests = new Set(t.executors().map((e) => e.stateDigest()));
  assert.equal(digests.size, 1);
  for (const e of t.executors()) assert.equal(e.applied, 40);
});

test("a view change over more accepted bytes than one message should carry: promises go in parts", () => {
  // 24 values of 700 kB above the stable checkpoint: about 16 MiB per committer's promise.
  const t = cluster(5, { viewChangeMs: 50, checkpointInterval: 1000 });
  const big = (r: number) => `${r}`.padEnd(700_000, "x");
  const busy = closedLoop(t, 1, 30, big);
  t.sim.runWhile(() => !t.replies.some((r) => r.r === 24), 10_000);
  t.sim.crash(t.id(stages.proposer, 0));
  assert.ok(t.sim.runWhile(busy, t.sim.now + 20_000));
  const parts = Math.max(...t.promises.map((p) => p.parts));
  assert.ok(parts >= 4, `promises went in ${parts} part(s)`);
  for (const p of t.promises) {
    const bytes = p.accepted.reduce((n, e) => n + e.b.length, 0);
    assert.ok(bytes <= 4 * 1024 * 1024 || p.accepted.length === 1, `a part of ${bytes} bytes`);
  }
  assert.equal(t.sim.stage<Proposer>(t.id(stages.proposer, 1)).role, "leader");
  // The client saw its last reply: every executor gets there too.
  t.sim.runWhile(() => t.executors().some((e) => e.applied < 30), t.sim.now + 5000);
  for (const e of t.executors()) assert.equal(e.applied, 30);
});

test("proposals lost on their way to every committer are proposed again (gap repair)", () => {
  const t = cluster(5, { viewChangeMs: 100_000 }); // no view change can fill the hole
  const busy = [1, 2, 3, 4].map((c) => closedLoop(t, c, 60));
  const leader = t.id(stages.proposer, 0);
  let drops = 0;
  const drop = () => {
    t.sim.dropInFlight(leader);
    if (++drops < 20) t.sim.schedule(7, drop);
  };
  t.sim.schedule(5, drop);
  assert.ok(
    t.sim.runWhile(() => busy.some((b) => b()), 20_000),
    "the load did not complete",
  );
  assert.equal(t.sim.stage<Proposer>(leader).ownView, 0);
  assert.ok(t.sim.stats.lost > 0, "nothing was lost");
  const positions = () => new Set(t.executors().map((e) => e.lastExecuted)).size;
  assert.ok(t.sim.runWhile(() => positions() > 1, t.sim.now + 5000));
  const digests = new Set(t.executors().map((e) => e.stateDigest()));
  assert.equal(digests.size, 1);
});
