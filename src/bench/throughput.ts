/**
 * Closed-loop clients (one request outstanding each, `put` of a 128-byte value to the client's
 * own key) against the replicated key-value service on a fresh local cluster (3 containers,
 * f=1), swept over client counts: `tara bench throughput`, and each curve of `tara bench
 * figure4` and `figure5`. Per count: requests per second, latency percentiles (HDR histogram),
 * client retries, and CPU and RSS of every process of the cluster, of the load generator and
 * of the whole machine.
 *
 * A fresh cluster's ~20 Node processes take 10-20 s of JIT warm-up before their throughput is
 * steady on a 2-core machine, so a sweep can start with an unmeasured cluster warm-up at a
 * moderate load (`clusterWarmupS`); each point then has its own short warm-up (`warmupS`).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { KvClient } from "../client/kv-client.js";
import { round, withServiceCluster, type ClusterStatus } from "./bench-cluster.js";
import { latencyHistogram, summarize, type LatencySummary } from "./latency.js";
import { cpuShares, readCpuTimes } from "./report/machine.js";
import type { Mechanism } from "../platform/api/stage.js";
import type { CheckpointConfig } from "../platform/runtime/config.js";
import { cpus } from "node:os";

export interface ThroughputOptions {
  checkpoints: CheckpointConfig;
  /** Client counts, measured in this order on one cluster. */
  clients: number[];
  durationS: number;
  /** Unmeasured load before each point's window. */
  warmupS: number;
  valueBytes: number;
  params: Record<string, string>;
  progress: (line: string) => void;
  /** Names the cluster in progress lines (default: the mechanism). */
  label?: string;
  /** Unmeasured load before the first point (0 or absent: none). */
  clusterWarmupS?: number;
  /** Clients of the cluster warm-up (default 32, at most the sweep's largest count). */
  clusterWarmupClients?: number;
  /** How long a client waits for a reply before retrying at the next gateway (default 2000). */
  timeoutMs?: number;
  /** Called after each point. */
  onPoint?: (point: ThroughputPoint) => void;
  /** Asked after each point: true ends the sweep (the remaining client counts are skipped). */
  stopWhen?: (points: readonly ThroughputPoint[]) => boolean;
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
  /** Requests sent again during the window (a reply took longer than `timeoutMs`). */
  retries: number;
  /** Per process of the cluster (stream managers, replicas) and the load generator. */
  processes: Record<string, ProcessUse>;
  /** The whole machine over the window, in cores (null off Linux). */
  machine: { busyCores: number; stealCores: number } | null;
}

export interface ThroughputRun {
  points: ThroughputPoint[];
  /** The cluster warm-up: its clients and the requests completed in each of its seconds. */
  warmup: { clients: number; perSecond: number[] } | null;
  /** Client counts not measured because `stopWhen` ended the sweep. */
  skipped: number[];
}

type Status = ClusterStatus;

export function runThroughputBench(options: ThroughputOptions): Promise<ThroughputRun> {
  const label =
    options.label ??
    options.checkpoints.mechanism + (options.checkpoints.instance ? "+instance" : "");
  return withServiceCluster(
    { topology: "kv", params: options.params, checkpoints: options.checkpoints },
    options.progress,
    label,
    async (bench) => {
      const points: ThroughputPoint[] = [];
      const clients: KvClient[] = [];
      const connectUpTo = async (count: number) => {
        while (clients.length < count) {
          const client = new KvClient({
            gateways: bench.cluster.gateways,
            timeoutMs: options.timeoutMs ?? 2000,
            firstGateway: clients.length % bench.cluster.gateways.length,
          });
          await client.connect();
          clients.push(client);
        }
      };
      let warmup: ThroughputRun["warmup"] = null;
      const skipped: number[] = [];
      try {
        if ((options.clusterWarmupS ?? 0) > 0) {
          const count = Math.min(options.clusterWarmupClients ?? 32, Math.max(...options.clients));
          await connectUpTo(count);
          options.progress(
            `${label}: cluster warm-up, ${count} clients for ${options.clusterWarmupS}s`,
          );
          const load = new ClosedLoop(clients.slice(0, count), options.valueBytes);
          const perSecond: number[] = [];
          for (let s = 0; s < options.clusterWarmupS!; s++) {
            const before = load.completed;
            await sleep(Math.min(1, options.clusterWarmupS! - s) * 1000);
            perSecond.push(load.completed - before);
          }
          await load.stop();
          warmup = { clients: count, perSecond };
          options.progress(`${label}: warm-up requests per second: ${perSecond.join(", ")}`);
        }
        for (const [n, count] of options.clients.entries()) {
          await connectUpTo(count);
          options.progress(
            `${label}, ${count} clients: warming up ${options.warmupS}s, measuring ${options.durationS}s`,
          );
          const point = await measure(options, clients.slice(0, count), bench.status);
          points.push(point);
          options.onPoint?.(point);
          options.progress(
            `${label}, ${count} clients: ${point.requestsPerSec} req/s, p50 ${point.p50Ms} ms, ` +
              `p99 ${point.p99Ms} ms${point.retries > 0 ? `, ${point.retries} retries` : ""}`,
          );
          if (n < options.clients.length - 1 && options.stopWhen?.(points)) {
            skipped.push(...options.clients.slice(n + 1));
            options.progress(
              `${label}: throughput stopped growing; skipping ${skipped.join(", ")}`,
            );
            break;
          }
        }
      } finally {
        await Promise.all(clients.map((c) => c.client.close()));
      }
      return { points, warmup, skipped };
    },
  );
}

/** Clients that each keep one `put` outstanding until stopped. */
class ClosedLoop {
  completed = 0;
  /** Latencies are recorded (and `recorded` counted) only while set. */
  histogram: ReturnType<typeof latencyHistogram> | undefined;
  recorded = 0;
  private running = true;
  private readonly loops: Promise<void>[];

  constructor(clients: KvClient[], valueBytes: number) {
    const value = "v".repeat(valueBytes);
    this.loops = clients.map(async (client, i) => {
      const key = `key-${i}`;
      while (this.running) {
        const start = performance.now();
        await client.put(key, value);
        this.completed++;
        if (this.histogram) {
          this.histogram.recordValue(Math.max(1, Math.round((performance.now() - start) * 1000)));
          this.recorded++;
        }
      }
    });
  }

  /** Lets every client finish its outstanding request. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

async function measure(
  options: ThroughputOptions,
  clients: KvClient[],
  status: () => Promise<Status>,
): Promise<ThroughputPoint> {
  const load = new ClosedLoop(clients, options.valueBytes);
  await sleep(options.warmupS * 1000);
  const retries = () => clients.reduce((sum, c) => sum + c.client.stats.retries, 0);
  const before = await status();
  const retriesBefore = retries();
  const cpuBefore = readCpuTimes();
  const ownBefore = process.cpuUsage();
  const began = performance.now();
  const histogram = latencyHistogram();
  load.histogram = histogram;
  await sleep(options.durationS * 1000);
  load.histogram = undefined;
  const windowS = (performance.now() - began) / 1000;
  const own = process.cpuUsage(ownBefore);
  const shares = cpuShares(cpuBefore, readCpuTimes());
  const retried = retries() - retriesBefore;
  const after = await status();
  await load.stop();
  const processes = processUse(before, after, windowS);
  processes["load-generator"] = {
    cpu: round((own.user + own.system) / 1e6 / windowS, 2),
    rssMb: round(process.memoryUsage().rss / 2 ** 20, 0),
  };
  const cores = cpus().length;
  return {
    mechanism: options.checkpoints.mechanism,
    instance: options.checkpoints.instance || options.checkpoints.mechanism === "gpc",
    clients: clients.length,
    requestsPerSec: Math.round(load.recorded / windowS),
    windowS: round(windowS, 2),
    retries: retried,
    ...summarize(histogram),
    processes,
    machine: shares
      ? { busyCores: round(shares.busy * cores, 2), stealCores: round(shares.steal * cores, 2) }
      : null,
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
