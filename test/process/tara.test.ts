/**
 * The replicated key-value service on real processes (`tara start`, 3 containers, f=1, PDC):
 * under closed-loop load the leader proposer, then a committer, then an executor are
 * SIGKILLed one at a time; every acknowledged request is applied exactly once, every executor
 * ends in the same state, and the killed executor catches up through a peer's checkpoint.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { KvClient } from "../../src/client/kv-client.js";
import type { ClusterFile } from "../../src/platform/runtime/launcher.js";
import { TestCluster, waitFor, type Status } from "./harness.js";

const CLIENTS = 8;
let cluster: TestCluster | undefined;
after(async () => {
  await cluster?.stop();
});

interface Load {
  acked: number;
  submitted: number;
  lastAcked: Map<string, string>;
  stop(): Promise<void>;
}

/** Closed-loop clients, each putting increasing values to its own key. */
function startLoad(clients: KvClient[]): Load {
  let running = true;
  const load: Load = {
    acked: 0,
    submitted: 0,
    lastAcked: new Map(),
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
  const loops = clients.map(async (client, i) => {
    for (let n = 1; running; n++) {
      const value = `${n}`;
      load.submitted++;
      await client.put(`key-${i}`, value);
      load.acked++;
      load.lastAcked.set(`key-${i}`, value);
    }
  });
  return load;
}

function instances(status: Status, stage: string) {
  return status.instances.filter((i) => i.stage === stage);
}

async function progress(load: Load, what: string, count = 100): Promise<void> {
  const target = load.acked + count;
  await waitFor(`${count} more acknowledged requests ${what}`, () => load.acked >= target);
}

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
    const info = JSON.parse(
      readFileSync(join(cluster.dataDir, "cluster.json"), "utf8"),
    ) as ClusterFile & { gateways: string[] };
    const clients = await Promise.all(
      Array.from({ length: CLIENTS }, async (_, i) => {
        const client = new KvClient({
          gateways: info.gateways,
          timeoutMs: 1000,
          firstGateway: i % info.gateways.length,
        });
        await client.connect();
        return client;
      }),
    );
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
    await load.stop();

    // Every executor, the restarted one included, reaches the same state.
    const final = await waitFor("every executor at the same state", async () => {
      const executors = instances(await cluster!.status(), "executor").map((e) => e.status);
      const s = executors[0]!.lastExecuted;
      const settled = executors.every(
        (e) => e.lastExecuted === s && e.digestAt === s && e.digest === executors[0]!.digest,
      );
      return settled ? executors : undefined;
    });
    const restarted = await cluster.instance("executor", 2);
    assert.ok(restarted.incarnation > 1);
    assert.ok((restarted.status.checkpoint as number) >= 100, "it caught up from a checkpoint");
    // Executor 0 never crashed: it applied each submitted request exactly once.
    assert.equal(final[0]!.applied, load.submitted);
    assert.equal(load.acked, load.submitted);
    // And each key holds the last acknowledged value: nothing lost, nothing replayed late.
    const reader = clients[0]!;
    for (const [key, value] of load.lastAcked) assert.equal(await reader.get(key), value);
    await Promise.all(clients.map((c) => c.client.close()));
  });
});
