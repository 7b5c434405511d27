/**
 * LPC on real processes, with the counter topology (test/fixtures): a counter whose state is
 * the number of ticks it got, with instance checkpoints, emitting each count to two sinks that
 * check the numbers come exactly 1, 2, 3, ... The same scenario runs under LPC-CM (through the
 * stream manager and the container's checkpoint manager) and LPC-CS (the store straight from
 * the replica): the mechanisms are interchangeable. LPC-CM then also loses its checkpoint
 * manager (frozen, then SIGKILLed) and is sent garbage on the manager's port.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { unpack } from "msgpackr";
import { FsCheckpointStore } from "../../src/platform/checkpoint/store/fs-store.js";
import { loadLatest } from "../../src/platform/checkpoint/store/recovery.js";
import { decodeBody, encodeFrame, FrameDecoder } from "../../src/platform/wire/frames.js";
import { clientProof, newNonce } from "../../src/platform/wire/handshake.js";
import type { CounterStatus, SinkStatus } from "../fixtures/counter-topology.js";
import { fixture, isAlive, TestCluster, waitFor } from "./harness.js";

/** Ticks of the ticker's first life: the counter goes idle at exactly this count. */
const FIRST_TICKS = 150;
/** Padding of the counter's snapshot: every base checkpoint is a few MB (many frame parts). */
const PAD_BYTES = 3 * 1024 * 1024;

const clusters: TestCluster[] = [];
afterEach(async () => {
  await Promise.all(clusters.splice(0).map((c) => c.stop()));
});

async function start(mechanism: "lpc-cm" | "lpc-cs"): Promise<TestCluster> {
  const dir = mkdtempSync(join(tmpdir(), "tara-lpc-"));
  const config = join(dir, "checkpoints.json");
  // Compact often, so that bases (large, with the padding) and pruning are exercised too.
  writeFileSync(config, JSON.stringify({ compactEvery: 40 }));
  const cluster = await TestCluster.start([
    "--topology",
    fixture("counter-topology"),
    "--containers",
    "2",
    "--mechanism",
    mechanism,
    "--instance-checkpoints",
    "--checkpoint-config",
    config,
    "--param",
    `firstTicks=${FIRST_TICKS}`,
    "--param",
    `pad=${PAD_BYTES}`,
  ]);
  clusters.push(cluster);
  return cluster;
}

async function counter(cluster: TestCluster) {
  const instance = await cluster.instance("counter", 0);
  const checkpoints = instance.status.checkpoints as
    { instance: { held: number; stalled: string | null } | null } | undefined;
  return { instance, status: instance.status as unknown as CounterStatus, checkpoints };
}

async function sinks(cluster: TestCluster): Promise<SinkStatus[]> {
  const status = await cluster.status();
  return status.instances
    .filter((i) => i.stage === "sink")
    .map((i) => ({ received: 0, last: 0, repeats: 0, gaps: 0, anomalies: [], ...i.status }));
}

/** Waits until every sink got every number up to at least `n`; fails on any anomaly. */
async function sinksReach(cluster: TestCluster, n: number): Promise<SinkStatus[]> {
  const reached = await waitFor(`every sink at ${n}`, async () => {
    const all = await sinks(cluster);
    return all.every((s) => s.last >= n) ? all : undefined;
  });
  for (const s of reached) {
    assert.deepEqual(s.anomalies, [], "a sink saw a number twice or missed one");
    assert.equal(s.received, s.last, "every number exactly once");
  }
  return reached;
}

/** The counter's state as the store holds it: its latest base plus the deltas after it. */
async function storedCount(cluster: TestCluster): Promise<{ n: number; bases: number }> {
  const root = join(cluster.dataDir, "checkpoints");
  const namespaces = readdirSync(root).filter((name) => name.startsWith("counter."));
  assert.equal(namespaces.length, 1, "one run's checkpoints");
  const files = readdirSync(join(root, namespaces[0]!, "counter", "0"));
  const bases = files.filter((f) => f.endsWith(".base")).length;
  assert.ok(
    files.some((f) => f.endsWith(".log")),
    `delta segments in ${files.join(" ")}`,
  );
  const store = new FsCheckpointStore(root);
  const owner = { topology: namespaces[0]!, stage: "counter", replica: 0 };
  const chain = await loadLatest(store, owner, { warn: () => undefined });
  let n = chain.base ? (unpack(chain.base.data) as { n: number }).n : 0;
  for (const delta of chain.deltas) {
    for (const update of unpack(delta.data) as { n: number }[]) {
      assert.equal(update.n, n + 1, "stored updates continue each other");
      n = update.n;
    }
  }
  return { n, bases };
}

/**
 * The part both mechanisms share: the counter's updates reach the store; SIGKILLed while idle,
 * it comes back with exactly its count, and counts on from there (no number twice or missed).
 */
async function killAndRecoverCounter(cluster: TestCluster): Promise<void> {
  await sinksReach(cluster, FIRST_TICKS);
  assert.equal((await counter(cluster)).status.checkpointed, true);
  const stored = await storedCount(cluster);
  assert.equal(stored.n, FIRST_TICKS, "the store holds exactly the state the sinks saw");
  assert.ok(stored.bases >= 1, "compaction wrote a (large) base");

  const before = await counter(cluster);
  const [killed] = await cluster.kill({ replica: "counter:0" });
  assert.equal(killed, before.instance.pid);
  const back = await waitFor("counter:0 back, restored", async () => {
    const c = await counter(cluster);
    return c.instance.incarnation === 2 && c.instance.state === "running" && c.status.restored
      ? c
      : undefined;
  });
  assert.equal(back.status.restored, FIRST_TICKS, "recovered exactly its count");
  assert.equal(back.status.chainErrors, 0);
  assert.equal(back.status.padOk, true, "the multi-MB base came back intact");
  assert.equal(isAlive(killed!), false);

  // The ticker's next life ticks on: the counter must continue at FIRST_TICKS + 1.
  await cluster.kill({ replica: "ticker:0" });
  await sinksReach(cluster, FIRST_TICKS + 100);
}

function ckptmgrOf(cluster: TestCluster, container: number): { pid: number; port: number } {
  const started = cluster
    .logLines(`ckptmgr-${container}`)
    .filter((l) => l.event === "started")
    .at(-1);
  assert.ok(started, `checkpoint manager ${container} started`);
  return { pid: started.pid as number, port: started.port as number };
}

describe("LPC on real processes", () => {
  it("LPC-CM: checkpoints through the checkpoint manager survive instance and manager loss", async () => {
    const cluster = await start("lpc-cm");
    const container = (await counter(cluster)).instance.container!;
    await killAndRecoverCounter(cluster);

    // The writes went through this container's checkpoint manager.
    const owner = cluster
      .logLines(`ckptmgr-${container}`)
      .filter((l) => l.event === "owner-served")
      .map((l) => String(l.owner));
    assert.ok(
      owner.some((o) => o.endsWith("/counter/0")),
      `the manager served counter:0 (${owner.join(", ")})`,
    );

    // Freeze the manager: writes stall, so the counter's outputs are held...
    const manager = ckptmgrOf(cluster, container);
    process.kill(manager.pid, "SIGSTOP");
    let killedAt = 0;
    try {
      const stalled = await waitFor("the counter's outputs held", async () => {
        const c = await counter(cluster);
        return (c.checkpoints?.instance?.held ?? 0) >= 50 ? c : undefined;
      });
      killedAt = stalled.status.n;
    } finally {
      // ...then kill it: it is restarted, and the writes resume.
      process.kill(manager.pid, "SIGKILL");
    }
    const restarted = await waitFor("a new checkpoint manager", () => {
      const m = ckptmgrOf(cluster, container);
      return m.pid !== manager.pid ? m : undefined;
    });
    await sinksReach(cluster, killedAt + 100);
    const after = await counter(cluster);
    assert.equal(after.instance.incarnation, 2, "the counter itself was not restarted");
    const died = cluster
      .logLines(`supervisor-${container}`)
      .filter((l) => l.event === "died" && l.process === "ckptmgr");
    assert.equal(died.length, 1);
    const events = cluster.logLines("instance-counter-0").map((l) => l.event);
    assert.ok(events.includes("checkpoint-stalled") && events.includes("checkpoint-resumed"));

    // Garbage, and authenticated peers other than its stream manager, are turned away; the
    // manager stays up and keeps serving.
    const rejectedBefore = cluster
      .logLines(`ckptmgr-${container}`)
      .filter((l) => l.event === "frame-rejected" || l.event === "link-refused").length;
    await rawSession(restarted.port, () => [Buffer.from([0, 0, 0, 3, 0xc1, 0xc1, 0xc1])]);
    await rawSession(restarted.port, (nonce) => [hello(cluster, nonce, "instance", "counter:0")]);
    await rawSession(restarted.port, (nonce) => [hello(cluster, nonce, "stmgr", "7")]);
    const rejected = cluster
      .logLines(`ckptmgr-${container}`)
      .filter((l) => l.event === "frame-rejected" || l.event === "link-refused")
      .slice(rejectedBefore)
      .map((l) => `${String(l.event)} ${String(l.code ?? l.role)}`);
    assert.deepEqual(rejected, [
      "frame-rejected FRAME_MALFORMED",
      "link-refused instance",
      "link-refused stmgr",
    ]);
    const mark = (await counter(cluster)).status.n;
    await sinksReach(cluster, mark + 50);
    assert.equal(ckptmgrOf(cluster, container).pid, restarted.pid, "the manager stayed up");
    assert.ok(isAlive(restarted.pid));
    assert.equal(isAlive(manager.pid), false);

    // The manager goes with its cluster.
    assert.equal(await cluster.stop(), 0);
    await waitFor("the checkpoint manager to exit", () => !isAlive(restarted.pid), 10_000);
  });

  it("LPC-CS: the same counter, checkpointed from its own process", async () => {
    const cluster = await start("lpc-cs");
    await killAndRecoverCounter(cluster);
    const logs = readdirSync(join(cluster.dataDir, "logs"));
    assert.deepEqual(
      logs.filter((name) => name.startsWith("ckptmgr")),
      [],
      "no checkpoint manager under LPC-CS",
    );
  });
});

/** A handshake hello with the cluster secret, as `role` `id`. */
function hello(cluster: TestCluster, serverNonce: Uint8Array, role: string, id: string): Buffer {
  const secret = Buffer.from(cluster.info.secret, "hex");
  const nonce = newNonce();
  const proof = clientProof(secret, serverNonce, nonce, role, id);
  return encodeFrame({ t: "hello", role, id, nonce, proof });
}

/** Connects, reads the challenge, sends what `script` returns, waits for the server to close. */
function rawSession(port: number, script: (serverNonce: Uint8Array) => Buffer[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(port, "127.0.0.1");
    const decoder = new FrameDecoder();
    let sent = false;
    socket.on("data", (chunk) => {
      for (const body of decoder.push(chunk)) {
        if (sent) continue;
        const challenge = decodeBody(body) as { t: string; nonce: Uint8Array };
        if (challenge.t !== "challenge") return reject(new Error(`got ${challenge.t}`));
        sent = true;
        for (const frame of script(challenge.nonce)) socket.write(frame);
      }
    });
    socket.on("error", () => undefined);
    socket.on("close", () => resolve());
  });
}
