/**
 * `tara bench throughput`: closed-loop clients (one request outstanding each, 128-byte values)
 * against the replicated key-value service on a fresh local cluster (3 containers, f=1), swept
 * over client counts. Per count: requests per second, latency percentiles (HDR histogram), and
 * CPU and RSS of every process of the cluster and of the load generator.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { KvClient } from "../client/kv-client.js";
import { round, withBenchCluster, type ClusterStatus } from "./bench-cluster.js";
import { latencyHistogram, summarize, type LatencySummary } from "./latency.js";
import type { Mechanism } from "../platform/api/stage.js";
import type { CheckpointConfig } from "../platform/runtime/config.js";

export interface ThroughputOptions {
  checkpoints: CheckpointConfig;
  clients: number[];
  durationS: number;
  warmupS: number;
  valueBytes: number;
  params: Record<string, string>;
  progress: (line: string) => void;
}

export interface ProcessUse {
  /** Share of one core over the measured window. */
  cpu: number;
  rssMb: number;
}

export interface ThroughputPoint extends LatencySummary {
  mechanism: Mechanism;
  /** Instance checkpoints on (full crash recovery). */
  instance: boolean;
  clients: number;
  requestsPerSec: number;
  windowS: number;
  /** Per process of the cluster (stream managers, replicas) and the load generator. */
  processes: Record<string, ProcessUse>;
}

type Status = ClusterStatus;

const CONTAINERS = 3;

export function runThroughputBench(options: ThroughputOptions): Promise<ThroughputPoint[]> {
  const launch = {
    topology: "kv",
    params: options.params,
    containers: CONTAINERS,
    allowColocation: false,
    gatewayPort: 0,
    checkpoints: options.checkpoints,
  };
  const label = options.checkpoints.mechanism + (options.checkpoints.instance ? "+instance" : "");
  return withBenchCluster(launch, options.progress, label, async (bench) => {
    await bench.waitFor("every replica running", (s) =>
      s.instances.every((i) => i.state === "running"),
    );
    const points: ThroughputPoint[] = [];
    const clients: KvClient[] = [];
    try {
      for (const count of options.clients) {
        while (clients.length < count) {
          const client = new KvClient({
            gateways: bench.cluster.gateways,
            timeoutMs: 2000,
            firstGateway: clients.length % bench.cluster.gateways.length,
          });
          await client.connect();
          clients.push(client);
        }
        options.progress(
          `${count} clients: warming up ${options.warmupS}s, measuring ${options.durationS}s`,
        );
        const point = await measure(options, clients.slice(0, count), bench.status);
        points.push(point);
        options.progress(
          `${count} clients: ${point.requestsPerSec} req/s, p50 ${point.p50Ms} ms, p99 ${point.p99Ms} ms`,
        );
      }
    } finally {
      await Promise.all(clients.map((c) => c.client.close()));
    }
    return points;
  });
}

async function measure(
  options: ThroughputOptions,
  clients: KvClient[],
  status: () => Promise<Status>,
): Promise<ThroughputPoint> {
  const value = "v".repeat(options.valueBytes);
  const histogram = latencyHistogram();
  let recording = false;
  let running = true;
  let completed = 0;
  const loops = clients.map(async (client, i) => {
    const key = `key-${i}`;
    while (running) {
      const start = performance.now();
      await client.put(key, value);
      if (recording) {
        histogram.recordValue(Math.max(1, Math.round((performance.now() - start) * 1000)));
        completed++;
      }
    }
  });
  await sleep(options.warmupS * 1000);
  const before = await status();
  const ownBefore = process.cpuUsage();
  const began = performance.now();
  recording = true;
  await sleep(options.durationS * 1000);
  recording = false;
  const windowS = (performance.now() - began) / 1000;
  const own = process.cpuUsage(ownBefore);
  const after = await status();
  running = false;
  await Promise.all(loops);
  const processes = processUse(before, after, windowS);
  processes["load-generator"] = {
    cpu: round((own.user + own.system) / 1e6 / windowS, 2),
    rssMb: round(process.memoryUsage().rss / 2 ** 20, 0),
  };
  return {
    mechanism: options.checkpoints.mechanism,
    instance: options.checkpoints.instance || options.checkpoints.mechanism === "gpc",
    clients: clients.length,
    requestsPerSec: Math.round(completed / windowS),
    windowS: round(windowS, 2),
    ...summarize(histogram),
    processes,
  };
}

function processUse(before: Status, after: Status, windowS: number): Record<string, ProcessUse> {
  const use: Record<string, ProcessUse> = {};
  const add = (name: string, a: number | null, b: number | null, rss: number | null) => {
    if (a === null || b === null) return;
    use[name] = { cpu: round((b - a) / windowS, 2), rssMb: round((rss ?? 0) / 2 ** 20, 0) };
  };
  for (const c of after.containers) {
    const start = before.containers.find((x) => x.container === c.container);
    add(`stmgr-${c.container}`, start?.cpuSeconds ?? null, c.cpuSeconds, c.rssBytes);
  }
  for (const i of after.instances) {
    const start = before.instances.find((x) => x.stage === i.stage && x.index === i.index);
    add(`${i.stage}:${i.index}`, start?.cpuSeconds ?? null, i.cpuSeconds, i.rssBytes);
  }
  return use;
}
