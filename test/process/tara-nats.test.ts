/**
 * The mechanisms that write checkpoints, with the checkpoints in a real NATS JetStream server
 * (`--checkpoint-store nats://...`): under LPC-CS with instance checkpoints a committer is
 * SIGKILLed and recovers its state from NATS (then progress needs its vote), and an executor
 * loads its group checkpoint from NATS; under GPC a committer's crash rolls the topology back
 * to a global checkpoint held in NATS; under LPC-CM a committer moves to another container
 * (`tara move`) and recovers there from NATS. Every acknowledged request is applied exactly once.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { isAlive, TestCluster, waitFor } from "./harness.js";
import { abortLoads, connectClients, progress, startLoad, stopAndCheck } from "./kv-load.js";
import { NatsServer } from "./nats-server.js";

const clusters: TestCluster[] = [];
let nats: NatsServer | undefined;
before(async () => {
  nats = await NatsServer.start();
});
after(async () => {
  await abortLoads();
  await Promise.all(clusters.splice(0).map((c) => c.stop()));
  await nats?.stop();
  nats?.cleanup();
});

async function start(bucket: string, args: string[]): Promise<TestCluster> {
  const cluster = await TestCluster.start([
    "--topology",
    "kv",
    "--gateway-port",
    "0",
    "--checkpoint-store",
    `nats://${nats!.address}/${bucket}`,
    "--param",
    "checkpointInterval=100",
    "--param",
    "viewChangeMs=300",
    ...args,
  ]);
  clusters.push(cluster);
  return cluster;
}

async function finish(cluster: TestCluster): Promise<void> {
  clusters.splice(clusters.indexOf(cluster), 1);
  await cluster.stop();
}

describe("checkpoints in NATS JetStream", () => {
  it("LPC-CS: a committer and an executor recover from NATS", async () => {
    const cluster = await start("lpc", ["--mechanism", "lpc-cs", "--instance-checkpoints"]);
    const load = startLoad(await connectClients(cluster, 8));
    await progress(load, "before any crash", 300);
    await cluster.kill({ replica: "committer:1" });
    await waitFor("the committer restored from NATS", async () => {
      const committer = await cluster.instance("committer", 1);
      const recovery = (committer.status.checkpoints as { recovery: { updates: number } | null })
        .recovery;
      return committer.incarnation > 1 && committer.status.restored === true && recovery;
    });
    await cluster.kill({ replica: "committer:2" });
    await progress(load, "with the recovered committer's votes needed");
    // Sequence numbers count batches, not requests: wait for a group checkpoint to exist.
    await waitFor("a group checkpoint saved in NATS", async () => {
      const executor = await cluster.instance("executor", 0);
      const group = (executor.status.checkpoints as { group: { last: { seq: number } | null } })
        .group;
      return (group.last?.seq ?? 0) >= 100;
    });
    await cluster.kill({ replica: "executor:2" });
    await progress(load, "after an executor's crash", 200);
    await stopAndCheck(cluster, load, 0);
    const executor = await cluster.instance("executor", 2);
    const group = (executor.status.checkpoints as { group: { loaded: number | null } }).group;
    const loadLog = cluster
      .logLines("instance-executor-2")
      .filter((l) => /checkpoint|catch|chain|rejected/i.test(JSON.stringify(l)))
      .map((l) => JSON.stringify(l));
    assert.ok(
      (group.loaded ?? 0) >= 100,
      `the executor loaded a group checkpoint from NATS; its log:\n${loadLog.join("\n")}`,
    );
    await finish(cluster);
  });

  it("LPC-CM: a committer moved to another container recovers its state there", async () => {
    // Four containers: the fourth runs nothing but its gateway until the committer moves in.
    const cluster = await start("move", [
      "--mechanism",
      "lpc-cm",
      "--instance-checkpoints",
      "--containers",
      "4",
    ]);
    const load = startLoad(await connectClients(cluster, 8));
    await progress(load, "before the move", 200);
    const before = await cluster.instance("committer", 2);
    assert.equal(before.container, 2);
    assert.match(await cluster.move("committer:2", 3), /from container 2 to container 3/);
    // `restored`: it got its state back from its instance checkpoint (else it would not vote).
    const moved = await waitFor("committer:2 restored in container 3", async () => {
      const committer = await cluster.instance("committer", 2);
      return committer.container === 3 && committer.status.restored === true && committer;
    });
    assert.ok(!isAlive(before.pid!), "its process in container 2 is gone");
    assert.ok(moved.incarnation > before.incarnation, "a higher incarnation than it had");
    assert.ok(
      cluster.logLines("supervisor-2").some((l) => l.event === "moved-away"),
      "container 2 stopped it",
    );
    assert.ok(
      cluster
        .logLines("ckptmgr-3")
        .some((l) => l.event === "owner-served" && String(l.owner).includes("committer")),
      "container 3's checkpoint manager served its checkpoints",
    );
    // Progress now needs the moved committer's vote.
    await cluster.kill({ replica: "committer:1" });
    await progress(load, "with the moved committer's votes needed");
    await stopAndCheck(cluster, load, 0);
    await finish(cluster);
  });

  it("GPC: a committer's crash rolls back to a global checkpoint kept in NATS", async () => {
    // 250 ms: a global checkpoint is a put per replica (12) and NATS shares the two cores.
    const cluster = await start("gpc", ["--mechanism", "gpc", "--gpc-interval-ms", "250"]);
    const load = startLoad(await connectClients(cluster, 8));
    await progress(load, "before any crash");
    await cluster.kill({ replica: "committer:1" });
    await waitFor("the rollback", () =>
      cluster.logLines("tmaster").some((line) => line.event === "gpc-resumed"),
    );
    await progress(load, "after the rollback");
    const committer = await cluster.instance("committer", 1);
    const gpc = (committer.status.checkpoints as { gpc: { lastRestore: { checkpoint: number } } })
      .gpc;
    assert.ok(gpc.lastRestore.checkpoint > 0, "restored from a global checkpoint, not the start");
    await stopAndCheck(cluster, load, 0);
    await finish(cluster);
  });
});
