/**
 * `tara bench throughput`: closed-loop clients (one request outstanding each, 128-byte values)
 * against the replicated key-value service on a fresh local cluster (3 containers, f=1), swept
 * over client counts. Per count: requests per second, latency percentiles (HDR histogram), and
 * CPU and RSS of every process of the cluster and of the load generator.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { KvClient } from "../client/kv-client.js";
import { LocalCluster } from "../platform/runtime/launcher.js";
import type { ContainerStatus, InstanceStatus } from "../platform/tmaster/plan-tracker.js";
import { latencyHistogram, summarize, type LatencySummary } from "./latency.js";

export const MECHANISMS = ["pdc"] as const;
export type Mechanism = (typeof MECHANISMS)[number];

export interface ThroughputOptions {
  mechanism: Mechanism;
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
  clients: number;
  requestsPerSec: number;
  windowS: number;
  /** Per process of the cluster (stream managers, replicas) and the load generator. */
  processes: Record<string, ProcessUse>;
}

interface Status {
  containers: ContainerStatus[];
  instances: InstanceStatus[];
}

const CONTAINERS = 3;

export async function runThroughputBench(options: ThroughputOptions): Promise<ThroughputPoint[]> {
  const dataDir = mkdtempSync(join(tmpdir(), "tara-bench-"));
  options.progress(
    `starting a ${CONTAINERS}-container cluster (${options.mechanism}) in ${dataDir}`,
  );
  const cluster = await LocalCluster.start(
    {
      topology: "kv",
      params: options.params,
      containers: CONTAINERS,
      allowColocation: false,
      dataDir,
      host: "127.0.0.1",
      adminPort: 0,
      gatewayPort: 0,
      heartbeatMs: 200,
      heartbeatTimeoutMs: 2000,
    },
    pino({ level: "warn", base: { proc: "bench" } }),
  );
  const status = async (): Promise<Status> => {
    const response = await fetch(`${cluster.adminUrl}/status`);
    if (!response.ok) throw new Error(`GET /status: HTTP ${response.status}`);
    return (await response.json()) as Status;
  };
  let ok = false;
  try {
    for (let tries = 0; !(await status()).instances.every((i) => i.state === "running"); tries++) {
      if (tries > 300) throw new Error("the cluster did not start within 30 s");
      await sleep(100);
    }
    const points: ThroughputPoint[] = [];
    const clients: KvClient[] = [];
    for (const count of options.clients) {
      while (clients.length < count) {
        const client = new KvClient({
          gateways: cluster.gateways,
          timeoutMs: 2000,
          firstGateway: clients.length % cluster.gateways.length,
        });
        await client.connect();
        clients.push(client);
      }
      options.progress(
        `${count} clients: warming up ${options.warmupS}s, measuring ${options.durationS}s`,
      );
      points.push(await measure(options, clients.slice(0, count), status));
      const last = points.at(-1)!;
      options.progress(
        `${count} clients: ${last.requestsPerSec} req/s, p50 ${last.p50Ms} ms, p99 ${last.p99Ms} ms`,
      );
    }
    await Promise.all(clients.map((c) => c.client.close()));
    ok = true;
    return points;
  } finally {
    await cluster.stop();
    if (ok) rmSync(dataDir, { recursive: true, force: true });
    else options.progress(`failed; logs kept in ${dataDir}/logs`);
  }
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
    mechanism: options.mechanism,
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

function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
