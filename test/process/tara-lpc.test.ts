/**
 * Full crash recovery under LPC-CS and LPC-CM on real processes (`tara start --mechanism lpc-*
 * --instance-checkpoints`, 3 containers, f=1): under closed-loop load a request source, a
 * non-leader proposer, the leader, a committer (with the leader again while it recovers, so a
 * view change runs while it rejoins) and an executor are SIGKILLed.
 * The platform restarts each; the committer recovers exactly the accepts it sent (checked
 * against what executors received from it before the crash) and votes again (the test then
 * kills another committer, so progress needs its vote); the executor loads the latest group
 * checkpoint from the store. Every acknowledged request is applied exactly once, and every
 * executor ends in the same state.
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
const TRACED = 1;
/** Every cluster started here (one per mechanism), stopped at the end whatever happened. */
const clusters: TestCluster[] = [];
after(async () => {
  await abortLoads();
  await Promise.all(clusters.splice(0).map((c) => c.stop()));
});

/** What the executors received from the traced committer up to `until` (epoch ms): per seq. */
function tracedAccepts(cluster: TestCluster, until: number): Map<number, { v: number; d: string }> {
  const latest = new Map<number, { v: number; d: string }>();
  for (let e = 0; e < 3; e++) {
    for (const line of cluster.logLines(`instance-executor-${e}`)) {
      if (line.event !== "traced-accept" || (line.time as number) >= until) continue;
      const { s, v, d } = line as unknown as { s: number; v: number; d: string };
      const known = latest.get(s);
      if (!known || v > known.v) latest.set(s, { v, d });
    }
  }
  return latest;
}

for (const mechanism of ["lpc-cs", "lpc-cm"]) {
  describe(`replicated key-value service, ${mechanism} with instance checkpoints`, () => {
    it("recovers each SIGKILLed replica exactly: no request lost or applied twice", async () => {
      const cluster = await TestCluster.start([
        "--topology",
        "kv",
        "--gateway-port",
        "0",
        "--mechanism",
        mechanism,
        "--instance-checkpoints",
        "--param",
        "checkpointInterval=100",
        "--param",
        "viewChangeMs=300",
        "--param",
        `traceCommitter=${TRACED}`,
      ]);
      clusters.push(cluster);
      const load = startLoad(await connectClients(cluster, CLIENTS));
      await progress(load, "before any crash", 300);

      await cluster.kill({ replica: "request-source:0" });
      await progress(load, "after a request source's crash");

      let proposers = instances(await cluster.status(), "proposer");
      const follower = proposers.find((p) => !p.status.leader)!;
      await cluster.kill({ replica: `proposer:${follower.index}` });
      await progress(load, "after a non-leader proposer's crash");

      proposers = instances(await cluster.status(), "proposer");
      const leader = proposers.find((p) => p.status.leader);
      assert.ok(leader, "no leader proposer");
      await cluster.kill({ replica: `proposer:${leader.index}` });
      await progress(load, "after the leader's crash");
      await waitFor("a new leader in a later view", async () =>
        instances(await cluster.status(), "proposer").some(
          (p) => p.status.leader && (p.status.view as number) > 0,
        ),
      );

      // The committer crashes, and while it recovers the leader crashes too: the view change
      // runs while the recovered committer rejoins.
      const killedAt = Date.now();
      await cluster.kill({ replica: `committer:${TRACED}` });
      const current = instances(await cluster.status(), "proposer").find((p) => p.status.leader);
      assert.ok(current, "no leader proposer");
      const view = current.status.view as number;
      await cluster.kill({ replica: `proposer:${current.index}` });
      await progress(load, "after a committer's and the leader's crash");
      await waitFor("a newer view", async () =>
        instances(await cluster.status(), "proposer").some(
          (p) => p.status.leader && (p.status.view as number) > view,
        ),
      );
      await waitFor("the committer restarted from its instance checkpoint", async () => {
        const committer = await cluster.instance("committer", TRACED);
        return committer.incarnation > 1 && committer.status.restored === true;
      });
      // It recovered every accept that left it before the crash (the latest per sequence
      // number; entries at or below its stable checkpoint are collected on purpose).
      const restored = cluster
        .logLines(`instance-committer-${TRACED}`)
        .find(
          (line) => line.event === "restored" && (line.time as number) > killedAt,
        ) as unknown as {
        lw: number;
        accepted: [number, number, string][];
      };
      assert.ok(restored, "no restored line after the restart");
      const recovered = new Map(restored.accepted.map(([s, v, d]) => [s, { v, d }]));
      const sent = tracedAccepts(cluster, killedAt);
      assert.ok(sent.size > 0, "the trace saw accepts from the committer");
      for (const [s, { v, d }] of sent) {
        if (s <= restored.lw) continue;
        const entry = recovered.get(s);
        assert.ok(entry, `accept for ${s} sent before the crash, not recovered`);
        assert.ok(entry.v > v || (entry.v === v && entry.d === d), `accept for ${s} differs`);
      }

      // It votes again: with another committer down, nothing commits without it.
      await cluster.kill({ replica: "committer:2" });
      await progress(load, "with the recovered committer's votes needed");

      await cluster.kill({ replica: "executor:2" });
      await progress(load, "after an executor's crash", 300);
      await stopAndCheck(cluster, load, 0);
      const executor = await cluster.instance("executor", 2);
      assert.ok(executor.incarnation > 1);
      const checkpoints = executor.status.checkpoints as { group: { loaded: number | null } };
      assert.ok(
        (checkpoints.group.loaded ?? 0) >= 100,
        "it loaded a group checkpoint from the store",
      );
      // The checkpoint metrics: committers' group commits, executors' group saves.
      const metrics = await (await fetch(`${cluster.info.adminUrl}/metrics`)).text();
      const value = (name: string, stage: string, index: number) =>
        Number(
          metrics
            .split("\n")
            .find((l) => l.startsWith(`${name}{stage="${stage}",index="${index}"`))
            ?.split(" ")
            .at(-1),
        );
      assert.ok(value("tara_checkpoint_writes_total", "committer", 0) > 0);
      assert.ok(value("tara_checkpoint_updates_total", "committer", 0) > 0);
      assert.ok(value("tara_checkpoint_group_saves_total", "executor", 0) > 0);
      // Done with it: the next mechanism's cluster gets the machine to itself.
      clusters.splice(clusters.indexOf(cluster), 1);
      await cluster.stop();
    });
  });
}
