/**
 * The replicated key-value service on real processes (`tara start`, 3 containers, f=1, PDC):
 * under closed-loop load the leader proposer, then a committer, then an executor are
 * SIGKILLed one at a time; every acknowledged request is applied exactly once, every executor
 * ends in the same state, and the killed executor catches up through a peer's checkpoint.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { TestCluster, waitFor } from "./harness.js";
import {
  abortLoads,
  connectClients,
  instances,
  progress,
  startLoad,
  stopAndCheck,
} from "./kv-load.js";

const CLIENTS = 8;
let cluster: TestCluster | undefined;
after(async () => {
  await abortLoads();
  await cluster?.stop();
});

describe("replicated key-value service on real processes", () => {
  it("survives SIGKILL of the leader proposer, a committer and an executor: no request lost or applied twice", async () => {
    cluster = await TestCluster.start([
      "--topology",
      "kv",
      "--gateway-port",
      "0",
      "--param",
      "checkpointInterval=100",
      "--param",
      "viewChangeMs=300",
    ]);
    const clients = await connectClients(cluster, CLIENTS);
    const load = startLoad(clients);
    await progress(load, "before any crash", 300);

    const leader = instances(await cluster.status(), "proposer").find((p) => p.status.leader);
    assert.ok(leader, "no leader proposer");
    await cluster.kill({ replica: `proposer:${leader.index}` });
    await progress(load, "after the leader's crash");
    await waitFor("a new leader in a later view", async () =>
      instances(await cluster!.status(), "proposer").some(
        (p) => p.status.leader && (p.status.view as number) > 0,
      ),
    );

    await cluster.kill({ replica: "committer:1" });
    await progress(load, "after a committer's crash");
    // Restarted without an instance checkpoint (PDC), it must not vote again.
    await waitFor("the committer restarted, passive", async () => {
      const committer = await cluster!.instance("committer", 1);
      return committer.incarnation > 1 && committer.status.active === false;
    });

    await cluster.kill({ replica: "executor:2" });
    await progress(load, "after an executor's crash", 400);
    await stopAndCheck(cluster, load, 0);
    const restarted = await cluster.instance("executor", 2);
    assert.ok(restarted.incarnation > 1);
    assert.ok((restarted.status.checkpoint as number) >= 100, "it caught up from a checkpoint");
  });
});
