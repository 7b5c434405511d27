/**
 * The client path on real processes: `tara start` with the echo topology (test/fixtures) runs a
 * gateway in each of 3 containers; TaraClients talk to them over TCP; a gateway is SIGKILLed.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { TaraClient } from "../../src/client/tara-client.js";
import type { ClusterFile } from "../../src/platform/runtime/launcher.js";
import { readGatewayFile } from "../../src/platform/runtime/gateway-file.js";
import { fixture, isAlive, taraBin, TestCluster, waitFor, type Status } from "./harness.js";

const clusters: TestCluster[] = [];
const clients: TaraClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(clusters.splice(0).map((c) => c.stop()));
});

function client(gateways: string[], timeoutMs = 2000, firstGateway = 0): TaraClient {
  const created = new TaraClient({ gateways, timeoutMs, firstGateway });
  clients.push(created);
  return created;
}

/** `n` round trips; each reply must be its op. */
async function roundTrips(taraClient: TaraClient, n: number, tag: string): Promise<void> {
  for (let i = 0; i < n; i++) {
    const op = Buffer.from(`${tag} ${i}`);
    const reply = await taraClient.submit(op);
    assert.equal(Buffer.from(reply).toString(), op.toString());
  }
}

/** Requests source `index` got through each gateway (its `byGateway` status). */
function byGateway(status: Status, index: number): Record<string, number> {
  const source = status.instances.find((i) => i.stage === "requests" && i.index === index)!;
  return (source.status.byGateway ?? {}) as Record<string, number>;
}

/** Requests every source together got through gateway `g`. */
function through(status: Status, g: number): number {
  return [0, 1, 2].reduce((sum, index) => sum + (byGateway(status, index)[String(g)] ?? 0), 0);
}

function gatewaySpawns(cluster: TestCluster, container: number): number[] {
  return cluster
    .logLines(`supervisor-${container}`)
    .filter((l) => l.event === "spawned" && l.process === "gateway")
    .map((l) => l.pid as number);
}

describe("gateways on real processes", () => {
  it("clients round-trip through every container's gateway; a SIGKILLed gateway comes back at its address", async () => {
    const cluster = await TestCluster.start([
      "--topology",
      fixture("echo-topology"),
      "--gateway-port",
      "0",
    ]);
    clusters.push(cluster);
    const clusterFile = join(cluster.dataDir, "cluster.json");
    const gateways = await waitFor("the gateways in cluster.json", () => {
      const info = JSON.parse(readFileSync(clusterFile, "utf8")) as ClusterFile;
      return info.gateways?.length === 3 ? info.gateways : undefined;
    });
    const runDir = join(cluster.dataDir, "run");
    const published = [0, 1, 2].map((c) => readGatewayFile(runDir, c)!);
    assert.deepEqual(
      published.map((p) => `${p.host}:${p.clientPort}`),
      gateways,
    );
    const status = spawnSync(
      process.execPath,
      [taraBin, "status", "--json", "--data-dir", cluster.dataDir],
      { encoding: "utf8" },
    );
    assert.equal(status.status, 0, status.stderr);
    assert.deepEqual((JSON.parse(status.stdout) as { gateways: string[] }).gateways, gateways);

    // Every source and sink port connects to every gateway.
    await waitFor("every port at every gateway", () =>
      [0, 1, 2].every(
        (c) =>
          cluster.logLines(`gateway-${c}`).filter((l) => l.event === "port-connected").length === 6,
      ),
    );

    // One client per gateway, each starting there.
    for (let g = 0; g < 3; g++) {
      const c = client(gateways, 2000, g);
      await roundTrips(c, 20, `via ${g}`);
      assert.equal(c.stats.retries, 0);
      assert.equal(c.gateway, g, "stayed on its first gateway");
    }
    // Gateway g hands its requests to source g (g mod 3 sources).
    await waitFor("each source to report its gateway's requests", async () => {
      const s = await cluster.status();
      return [0, 1, 2].every((g) => byGateway(s, g)[String(g)] === 20);
    });

    // SIGKILL container 0's gateway: a client on it continues through the next one.
    const [gatewayPid] = gatewaySpawns(cluster, 0);
    assert.ok(gatewayPid && isAlive(gatewayPid));
    const failover = client(gateways, 500);
    await roundTrips(failover, 5, "before");
    assert.equal(failover.gateway, 0);
    process.kill(gatewayPid, "SIGKILL");
    await roundTrips(failover, 20, "after");
    assert.ok(failover.stats.connectionsLost >= 1, "the client saw its gateway go");
    assert.equal(failover.gateway, 1, "and moved on to the next one");
    await waitFor("gateway 1 to pass on the failed-over requests", async () => {
      return through(await cluster.status(), 1) >= 20 + 20;
    });

    // The supervisor restarts it, at the address it had.
    const spawns = await waitFor("a new gateway in container 0", () => {
      const pids = gatewaySpawns(cluster, 0);
      return pids.length === 2 ? pids : undefined;
    });
    assert.notEqual(spawns[1], gatewayPid);
    assert.equal(isAlive(gatewayPid), false);
    const died = cluster
      .logLines("supervisor-0")
      .filter((l) => l.event === "died" && l.process === "gateway");
    assert.deepEqual(
      died.map((l) => [l.pid, l.signal]),
      [[gatewayPid, "SIGKILL"]],
    );
    assert.deepEqual(readGatewayFile(runDir, 0), published[0]);
    const onlyGateway0 = client([gateways[0]!], 1000);
    await roundTrips(onlyGateway0, 10, "back");
    // (To whichever source is connected to it: source 0 may not be back yet.)
    await waitFor("the sources to see requests through the restarted gateway", async () => {
      return through(await cluster.status(), 0) >= 20 + 5 + 10;
    });

    // Stopping the cluster stops the gateways.
    assert.equal(await cluster.stop(), 0);
    const gatewayPids = [0, 1, 2].map((c) => gatewaySpawns(cluster, c).at(-1)!);
    await waitFor("every gateway to exit", () => gatewayPids.every((pid) => !isAlive(pid)), 10_000);
  });
});
