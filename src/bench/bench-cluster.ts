/** A fresh local cluster for one benchmark: temp data dir, status polling, cleanup. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { LocalCluster, type LaunchOptions } from "../platform/runtime/launcher.js";
import type { ContainerStatus, InstanceStatus } from "../platform/tmaster/plan-tracker.js";

const START_TIMEOUT_MS = 30_000;

export interface ClusterStatus {
  containers: ContainerStatus[];
  instances: InstanceStatus[];
}

export interface BenchCluster {
  readonly cluster: LocalCluster;
  status(): Promise<ClusterStatus>;
  /** Polls the status until `done` holds (30 s at most). */
  waitFor(what: string, done: (status: ClusterStatus) => boolean): Promise<ClusterStatus>;
}

export type BenchLaunch = Pick<
  LaunchOptions,
  "topology" | "params" | "containers" | "allowColocation" | "gatewayPort" | "checkpoints"
>;

/** Runs `body` against a new cluster; its logs are kept if the body fails. */
export async function withBenchCluster<T>(
  launch: BenchLaunch,
  progress: (line: string) => void,
  label: string,
  body: (bench: BenchCluster) => Promise<T>,
): Promise<T> {
  const dataDir = mkdtempSync(join(tmpdir(), "tara-bench-"));
  progress(`${label}: starting a ${launch.containers}-container cluster in ${dataDir}`);
  const cluster = await LocalCluster.start(
    {
      ...launch,
      dataDir,
      host: "127.0.0.1",
      adminPort: 0,
      heartbeatMs: 200,
      heartbeatTimeoutMs: 2000,
    },
    // stderr: stdout carries a bench's results (JSON lines with --json).
    pino({ level: "warn", base: { proc: "bench" } }, pino.destination(2)),
  );
  const status = async (): Promise<ClusterStatus> => {
    const response = await fetch(`${cluster.adminUrl}/status`);
    if (!response.ok) throw new Error(`GET /status: HTTP ${response.status}`);
    return (await response.json()) as ClusterStatus;
  };
  const waitFor = async (what: string, done: (s: ClusterStatus) => boolean) => {
    const deadline = performance.now() + START_TIMEOUT_MS;
    for (;;) {
      const current = await status();
      if (done(current)) return current;
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(100);
    }
  };
  let ok = false;
  try {
    const result = await body({ cluster, status, waitFor });
    ok = true;
    return result;
  } finally {
    await cluster.stop();
    if (ok) rmSync(dataDir, { recursive: true, force: true });
    else progress(`${label}: failed; logs kept in ${dataDir}/logs`);
  }
}

/** What a service bench varies: the rest is the standard local cluster (3 containers, f=1). */
export interface ServiceLaunch {
  readonly topology: "kv" | "zk";
  readonly params: Record<string, string>;
  readonly checkpoints: LaunchOptions["checkpoints"];
}

/** `withBenchCluster` for a replicated service: `body` runs once every replica is running. */
export function withServiceCluster<T>(
  service: ServiceLaunch,
  progress: (line: string) => void,
  label: string,
  body: (bench: BenchCluster) => Promise<T>,
): Promise<T> {
  const launch = { ...service, containers: 3, allowColocation: false, gatewayPort: 0 };
  return withBenchCluster(launch, progress, label, async (bench) => {
    await bench.waitFor("every replica running", (s) =>
      s.instances.every((i) => i.state === "running"),
    );
    return body(bench);
  });
}

export function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
