/**
 * GPC on real processes (`tara start --mechanism gpc`, 3 containers, f=1, a global checkpoint
 * every 100 ms): under closed-loop load a request source, a non-leader proposer, the leader, a
 * committer and an executor are SIGKILLed one at a time. Each crash rolls the whole topology
 * back to the last global checkpoint (a new restore attempt every time) and the sources'
 * logged tuples are replayed; clients see only replies a global checkpoint covers. Every
 * acknowledged request is applied exactly once and every executor ends in the same state.
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

/** The topology manager's rollbacks so far (restore attempts that completed). */
function rollbacks(cluster: TestCluster): number {
  return cluster.logLines("tmaster").filter((line) => line.event === "gpc-resumed").length;
}

describe("replicated key-value service under GPC", () => {
  it("rolls back the whole topology after each SIGKILL: no request lost or applied twice", async () => {
    cluster = await TestCluster.start([
      "--topology",
      "kv",
      "--gateway-port",
      "0",
      "--mechanism",
      "gpc",
      "--gpc-interval-ms",
      "100",
      "--param",
      "checkpointInterval=100",
      "--param",
      "viewChangeMs=300",
    ]);
    const load = startLoad(await connectClients(cluster, CLIENTS));
    await progress(load, "before any crash", 200);
    const status = await cluster.status();
    const leader = instances(status, "proposer").find((p) => p.status.leader)!;
    const follower = instances(status, "proposer").find((p) => !p.status.leader)!;
    const victims = [
      "request-source:0",
      `proposer:${follower.index}`,
      `proposer:${leader.index}`,
      "committer:1",
      "executor:2",
    ];
    for (const [n, replica] of victims.entries()) {
      await cluster.kill({ replica });
      await waitFor(`rollback ${n + 1} after ${replica}'s crash`, () => rollbacks(cluster!) > n);
      try {
        await progress(load, `after ${replica}'s crash and the rollback`);
      } catch (error) {
        for (const i of (await cluster.status()).instances) {
          // What each replica was doing when progress stopped: the failure's evidence.
          const { checkpoints, ...rest } = i.status;
          const gpc = (checkpoints as { gpc: unknown }).gpc;
          console.error(`${i.stage}:${i.index}`, JSON.stringify(rest), JSON.stringify(gpc));
        }
        throw error;
      }
    }
    const final = await stopAndCheck(cluster, load, 0);
    // Every replica rolled back to the same global checkpoints, the restarted ones included.
    for (const i of (await cluster.status()).instances) {
      const gpc = (i.status.checkpoints as { gpc: { restores: number } }).gpc;
      assert.ok(gpc.restores >= 1, `${i.stage}:${i.index} never restored`);
    }
    assert.ok((final[0]!.lastExecuted as number) > 0);
  });
});
