/**
 * Closed-loop key-value load against a `tara start` cluster, and the end-of-run checks the
 * crash tests share: every executor at one state, each submitted request applied exactly once,
 * each key holding its last acknowledged value.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { KvClient } from "../../src/client/kv-client.js";
import type { ClusterFile } from "../../src/platform/runtime/launcher.js";
import { waitFor, type Status, type TestCluster } from "./harness.js";

export interface Load {
  acked: number;
  submitted: number;
  readonly clients: KvClient[];
  readonly lastAcked: Map<string, string>;
  stop(): Promise<void>;
  /** Closes the clients at once, whatever they were waiting for. */
  abort(): Promise<void>;
}

export async function connectClients(cluster: TestCluster, count: number): Promise<KvClient[]> {
  const info = JSON.parse(
    readFileSync(join(cluster.dataDir, "cluster.json"), "utf8"),
  ) as ClusterFile & {
    gateways: string[];
  };
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const client = new KvClient({
        gateways: info.gateways,
        timeoutMs: 1000,
        firstGateway: i % info.gateways.length,
      });
      await client.connect();
      return client;
    }),
  );
}

/** Loads still running: a failed test must not leave their clients retrying forever. */
const loads = new Set<Load>();

/** Stops every load and closes its clients (call it in `after`). */
export async function abortLoads(): Promise<void> {
  await Promise.all([...loads].map((load) => load.abort()));
}

/** Closed-loop clients, each putting increasing values to its own key. */
export function startLoad(clients: KvClient[]): Load {
  let running = true;
  const load: Load = {
    acked: 0,
    submitted: 0,
    clients,
    lastAcked: new Map(),
    stop: async () => {
      running = false;
      await Promise.all(loops);
      loads.delete(load);
    },
    abort: async () => {
      running = false;
      loads.delete(load);
      await Promise.all(clients.map((c) => c.client.close()));
      await Promise.allSettled(loops);
    },
  };
  loads.add(load);
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

export function instances(status: Status, stage: string) {
  return status.instances.filter((i) => i.stage === stage);
}

export async function progress(load: Load, what: string, count = 100): Promise<void> {
  const target = load.acked + count;
  await waitFor(`${count} more acknowledged requests ${what}`, () => load.acked >= target);
}

/**
 * Stops the load and checks the outcome: every executor reaches the same state digest, the
 * executor that never crashed applied each submitted request exactly once, and every key
 * holds its last acknowledged value. Returns the executors' final status.
 */
export async function stopAndCheck(
  cluster: TestCluster,
  load: Load,
  neverCrashedExecutor: number,
): Promise<Record<string, unknown>[]> {
  await load.stop();
  const final = await waitFor("every executor at the same state", async () => {
    const executors = instances(await cluster.status(), "executor").map((e) => e.status);
    const s = executors[0]!.lastExecuted;
    const settled = executors.every(
      (e) => e.lastExecuted === s && e.digestAt === s && e.digest === executors[0]!.digest,
    );
    return settled ? executors : undefined;
  });
  assert.equal(final[neverCrashedExecutor]!.applied, load.submitted);
  assert.equal(load.acked, load.submitted);
  const reader = load.clients[0]!;
  for (const [key, value] of load.lastAcked) assert.equal(await reader.get(key), value);
  await Promise.all(load.clients.map((c) => c.client.close()));
  return final;
}
