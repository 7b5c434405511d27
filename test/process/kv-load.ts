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
  /** Compare-and-sets that failed: each means an acknowledged write was lost. */
  readonly failedCas: string[];
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

/** Closed-loop clients, each writing increasing values to its own key. */
export function startLoad(clients: KvClient[]): Load {
  let running = true;
  const load: Load = {
    acked: 0,
    submitted: 0,
    clients,
    lastAcked: new Map(),
    failedCas: [],
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
  // Compare-and-set from each acknowledged value to the next: a write acknowledged and then
  // lost (or applied twice) makes the following one fail.
  const loops = clients.map(async (client, i) => {
    let previous: string | null = null;
    for (let n = 1; running; n++) {
      const value = `${n}`;
      load.submitted++;
      if (!(await client.cas(`key-${i}`, previous, value))) {
        load.failedCas.push(`key-${i}: ${JSON.stringify(previous)} -> ${value}`);
      }
      previous = value;
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
 * executor named applied each submitted request exactly once, and every key
 * holds its last acknowledged value. Returns the executors' final status.
 */
export async function stopAndCheck(
  cluster: TestCluster,
  load: Load,
  neverCrashedExecutor: number,
): Promise<Record<string, unknown>[]> {
  await load.stop();
  // Status reports are periodic: the state counts as final once every executor shows the same
  // state in reports spanning a whole second (several report periods) without change.
  let since: { s: unknown; at: number } | undefined;
  const final = await waitFor("every executor at the same state, settled", async () => {
    const executors = instances(await cluster.status(), "executor").map((e) => e.status);
    const s = executors[0]!.lastExecuted;
    const settled = executors.every(
      (e) => e.lastExecuted === s && e.digestAt === s && e.digest === executors[0]!.digest,
    );
    if (!settled || since?.s !== s) {
      since = settled ? { s, at: Date.now() } : undefined;
      return undefined;
    }
    return Date.now() - since!.at >= 1000 ? executors : undefined;
  });
  // Each key holds its last acknowledged value (nothing lost, nothing replayed late), and the
  // executor that never crashed applied each submitted request exactly once.
  assert.deepEqual(load.failedCas, []);
  const reader = load.clients[0]!;
  for (const [key, value] of load.lastAcked) assert.equal(await reader.get(key), value, key);
  assert.equal(load.acked, load.submitted);
  assert.equal(final[neverCrashedExecutor]!.applied, load.submitted);
  await Promise.all(load.clients.map((c) => c.client.close()));
  return final;
}
