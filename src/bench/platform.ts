/**
 * `tara bench platform`: one-way tuple throughput and round-trip latency through the stream
 * managers, within a container and across containers, against a raw Node-to-Node TCP baseline
 * measured in the same run.
 *
 * Every platform case starts a fresh two-container cluster (LocalCluster, a temp data dir)
 * running platform-topology.ts, waits for tuples to flow, lets it warm up, and then measures a
 * steady window from the replicas' own status (GET /status), so start-up is never counted.
 * The raw cases fork two processes of raw-tcp.ts and measure the same way over IPC.
 */
import { fork, type ChildProcess } from "node:child_process";
import type { LatencySummary } from "./latency.js";
import { availableParallelism, cpus, loadavg } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type { InstanceStatus } from "../platform/tmaster/plan-tracker.js";
import { round, withBenchCluster, type BenchCluster, type ClusterStatus } from "./bench-cluster.js";
import { BENCH_CONTAINERS } from "./platform-topology.js";
import type { RawReply, RawRequest } from "./raw-tcp.js";

export const TARGETS = {
  /** Cross-container throughput over raw TCP throughput, at least. */
  throughputRatio: 0.25,
  /** p50 round-trip time through the platform, below (ms). */
  p50RttMs: 1,
} as const;

export type Placement = "same-container" | "cross-container" | "raw-tcp";
export const CASES = [
  "throughput-raw",
  "throughput-same",
  "throughput-cross",
  "latency-raw",
  "latency-same",
  "latency-cross",
] as const;
export type CaseId = (typeof CASES)[number];

export interface PlatformBenchOptions {
  /** Length of the measured window of every case, seconds. */
  durationS: number;
  /** Time between the first tuple and the start of the window, seconds. */
  warmupS: number;
  /** Tuple (record) payload bytes. */
  size: number;
  /** Tuples the blaster emits per timer tick, and records per raw write. */
  batch: number;
  cases: readonly CaseId[];
  progress: (line: string) => void;
}

/** CPU busy fraction (1 = one full core) of every process of a case over its window. */
export type CpuUse = Record<string, number>;

export interface ThroughputResult {
  case: CaseId;
  kind: "throughput";
  placement: Placement;
  tuplesPerSec: number;
  mbPerSec: number;
  tuples: number;
  windowMs: number;
  cpu: CpuUse;
  /** CPU microseconds every process spent per tuple delivered (cpu / tuplesPerSec). */
  cpuUsPerTuple: Record<string, number>;
  health?: Health;
}

/**
 * Signs that a platform case was disturbed during its window: tuples the stream managers or
 * instances dropped, and re-registrations of stream managers plus instance restarts (a
 * container the topology manager declared dead for missing heartbeats registers again).
 */
export interface Health {
  dropped: number;
  reregistrations: number;
}

export interface LatencyResult extends LatencySummary {
  case: CaseId;
  kind: "latency";
  placement: Placement;
  lost: number;
  cpu: CpuUse;
  health?: Health;
}

export type CaseResult = ThroughputResult | LatencyResult;

export interface TargetCheck {
  name: string;
  value: number | null;
  goal: string;
  met: boolean | null;
}

export interface PlatformBenchReport {
  bench: "platform";
  startedAt: string;
  machine: { nproc: number; cpuModel: string; node: string; loadavgStart: number[] };
  options: Omit<PlatformBenchOptions, "progress">;
  results: CaseResult[];
  targets: TargetCheck[];
  loadavgEnd: number[];
  elapsedS: number;
}

const TOPOLOGY = fileURLToPath(new URL("./platform-topology.js", import.meta.url));
const RAW_SCRIPT = fileURLToPath(new URL("./raw-tcp.js", import.meta.url));

export async function runPlatformBench(
  options: PlatformBenchOptions,
): Promise<PlatformBenchReport> {
  const started = performance.now();
  const report: PlatformBenchReport = {
    bench: "platform",
    startedAt: new Date().toISOString(),
    machine: {
      nproc: availableParallelism(),
      cpuModel: cpus()[0]?.model ?? "unknown",
      node: process.version,
      loadavgStart: loadavg(),
    },
    options: {
      durationS: options.durationS,
      warmupS: options.warmupS,
      size: options.size,
      batch: options.batch,
      cases: options.cases,
    },
    results: [],
    targets: [],
    loadavgEnd: [],
    elapsedS: 0,
  };
  for (const id of CASES) {
    if (!options.cases.includes(id)) continue;
    const result = await runCase(id, options);
    options.progress(`${id}: ${describe(result)}`);
    report.results.push(result);
  }
  report.targets = checkTargets(report.results);
  report.loadavgEnd = loadavg();
  report.elapsedS = round((performance.now() - started) / 1000, 1);
  return report;
}

function runCase(id: CaseId, options: PlatformBenchOptions): Promise<CaseResult> {
  switch (id) {
    case "throughput-raw":
      return rawThroughput(id, options);
    case "throughput-same":
      return platformThroughput(id, 0, options);
    case "throughput-cross":
      return platformThroughput(id, 1, options);
    case "latency-raw":
      return rawLatency(id, options);
    case "latency-same":
      return platformLatency(id, 0, options);
    case "latency-cross":
      return platformLatency(id, 1, options);
  }
}

function placementOf(target: number): Placement {
  return target === 0 ? "same-container" : "cross-container";
}

export function describe(result: CaseResult): string {
  const text =
    result.kind === "throughput"
      ? `${Math.round(result.tuplesPerSec).toLocaleString("en-US")} tuples/s ` +
        `(${result.mbPerSec} MB/s payload, ${result.tuples} tuples in ${result.windowMs} ms)`
      : `RTT p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms (${result.count} round trips)`;
  const h = result.health;
  return h && (h.dropped > 0 || h.reregistrations > 0)
    ? `${text} [disturbed: ${h.dropped} tuples dropped, ${h.reregistrations} re-registrations/restarts]`
    : text;
}

// ---------------------------------------------------------------------------------------------
// Platform cases

type Status = ClusterStatus;

function withCluster<T>(
  params: Record<string, string>,
  options: PlatformBenchOptions,
  id: CaseId,
  body: (cluster: BenchCluster) => Promise<T>,
): Promise<T> {
  const launch = {
    topology: TOPOLOGY,
    params,
    containers: BENCH_CONTAINERS,
    allowColocation: true,
  };
  return withBenchCluster(launch, options.progress, id, body);
}

function instance(status: Status, stage: string, index: number): InstanceStatus {
  const found = status.instances.find((i) => i.stage === stage && i.index === index);
  if (!found) throw new Error(`no ${stage}:${index} in the status`);
  return found;
}

/** CPU seconds of every process of the cluster but the topology manager and supervisors. */
function cpuSeconds(status: Status): Map<string, number> {
  const cpu = new Map<string, number>();
  for (const c of status.containers) {
    if (c.cpuSeconds !== null) cpu.set(`stmgr-${c.container}`, c.cpuSeconds);
  }
  for (const i of status.instances) {
    if (i.cpuSeconds !== null) cpu.set(`${i.stage}:${i.index}`, i.cpuSeconds);
  }
  return cpu;
}

function health(before: Status, after: Status): Health {
  const dropped = (s: Status) =>
    s.containers.reduce((n, c) => n + c.dropped, 0) +
    s.instances.reduce((n, i) => n + i.dropped, 0);
  const restarts = (s: Status) =>
    s.containers.reduce((n, c) => n + (c.stmgr?.restarts ?? 0), 0) +
    s.instances.reduce((n, i) => n + i.restarts, 0);
  return {
    dropped: Math.max(0, dropped(after) - dropped(before)),
    reregistrations: restarts(after) - restarts(before),
  };
}

function throughputResult(
  id: CaseId,
  placement: Placement,
  tuples: number,
  bytes: number,
  windowMs: number,
  cpu: CpuUse,
): ThroughputResult {
  const tuplesPerSec = (tuples * 1000) / windowMs;
  const cpuUsPerTuple: Record<string, number> = {};
  for (const [name, use] of Object.entries(cpu)) {
    if (use > 0) cpuUsPerTuple[name] = round((use * 1e6) / tuplesPerSec, 2);
  }
  return {
    case: id,
    kind: "throughput",
    placement,
    tuplesPerSec: round(tuplesPerSec, 0),
    mbPerSec: round(bytes / 1e6 / (windowMs / 1000), 2),
    tuples,
    windowMs: round(windowMs, 0),
    cpu,
    cpuUsPerTuple,
  };
}

function cpuUse(before: Map<string, number>, after: Map<string, number>, wallMs: number): CpuUse {
  const use: CpuUse = {};
  for (const [name, seconds] of after) {
    const start = before.get(name);
    if (start !== undefined) use[name] = round(((seconds - start) * 1000) / wallMs, 2);
  }
  return use;
}

interface SinkStatus {
  received: number;
  bytes: number;
  lastAtMs: number;
}

function sinkStatus(status: Status, target: number): SinkStatus | undefined {
  const s = instance(status, "sink", target).status as Partial<SinkStatus>;
  if (typeof s.received !== "number" || typeof s.lastAtMs !== "number") return undefined;
  return { received: s.received, bytes: s.bytes ?? 0, lastAtMs: s.lastAtMs };
}

async function platformThroughput(
  id: CaseId,
  target: number,
  options: PlatformBenchOptions,
): Promise<ThroughputResult> {
  const params = {
    mode: "throughput",
    target: String(target),
    size: String(options.size),
    batch: String(options.batch),
  };
  return withCluster(params, options, id, async (cluster) => {
    await cluster.waitFor(
      "the first tuples at the sink",
      (s) => sinkStatus(s, target) !== undefined,
    );
    options.progress(`${id}: tuples flowing; warming up ${options.warmupS} s`);
    await sleep(options.warmupS * 1000);
    const before = await cluster.status();
    const wallBefore = performance.now();
    options.progress(`${id}: measuring ${options.durationS} s`);
    await sleep(options.durationS * 1000);
    const after = await cluster.status();
    const wallMs = performance.now() - wallBefore;
    const a = sinkStatus(before, target)!;
    const b = sinkStatus(after, target)!;
    const windowMs = b.lastAtMs - a.lastAtMs;
    const tuples = b.received - a.received;
    if (windowMs <= 0 || tuples <= 0) throw new Error(`${id}: no tuples arrived in the window`);
    const cpu = cpuUse(cpuSeconds(before), cpuSeconds(after), wallMs);
    return {
      ...throughputResult(id, placementOf(target), tuples, b.bytes - a.bytes, windowMs, cpu),
      health: health(before, after),
    };
  });
}

interface PingerStatus extends LatencySummary {
  warm: boolean;
  lost: number;
}

function pingerStatus(status: Status): PingerStatus | undefined {
  const s = instance(status, "pinger", 0).status as Partial<PingerStatus>;
  return s.warm === true ? (s as PingerStatus) : undefined;
}

async function platformLatency(
  id: CaseId,
  target: number,
  options: PlatformBenchOptions,
): Promise<LatencyResult> {
  const params = {
    mode: "latency",
    target: String(target),
    size: String(options.size),
    warmupMs: String(Math.round(options.warmupS * 1000)),
  };
  return withCluster(params, options, id, async (cluster) => {
    options.progress(`${id}: waiting for the first pongs, then warming up ${options.warmupS} s`);
    const before = await cluster.waitFor(
      "the pinger's warm-up",
      (s) => pingerStatus(s) !== undefined,
    );
    const wallBefore = performance.now();
    options.progress(`${id}: measuring ${options.durationS} s`);
    await sleep(options.durationS * 1000);
    const after = await cluster.status();
    const wallMs = performance.now() - wallBefore;
    const s = pingerStatus(after)!;
    if (s.count === 0) throw new Error(`${id}: no round trip completed`);
    return {
      case: id,
      kind: "latency",
      placement: placementOf(target),
      count: s.count,
      p50Ms: s.p50Ms,
      p90Ms: s.p90Ms,
      p99Ms: s.p99Ms,
      p999Ms: s.p999Ms,
      maxMs: s.maxMs,
      meanMs: round(s.meanMs, 3),
      lost: s.lost,
      cpu: cpuUse(cpuSeconds(before), cpuSeconds(after), wallMs),
      health: health(before, after),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Raw TCP cases

function forkRaw(role: string, args: readonly (string | number)[]): ChildProcess {
  return fork(RAW_SCRIPT, [role, ...args.map(String)], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    serialization: "json",
  });
}

function reply<T extends RawReply["t"]>(
  child: ChildProcess,
  type: T,
  request?: RawRequest,
): Promise<Extract<RawReply, { t: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`raw-tcp: no ${type} in time`)), 10_000);
    const onMessage = (message: RawReply) => {
      if (message.t === type) finish(undefined, message as Extract<RawReply, { t: T }>);
    };
    const onExit = (code: number | null) => finish(new Error(`raw-tcp child exited (${code})`));
    const finish = (error?: Error, message?: Extract<RawReply, { t: T }>) => {
      clearTimeout(timer);
      child.off("message", onMessage);
      child.off("exit", onExit);
      if (error) reject(error);
      else resolve(message!);
    };
    child.on("message", onMessage);
    child.once("exit", onExit);
    if (request) child.send(request);
  });
}

async function stopRaw(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const timer = setTimeout(() => child.kill("SIGKILL"), 2000);
          child.once("exit", () => {
            clearTimeout(timer);
            resolve();
          });
          child.kill("SIGTERM");
        }),
    ),
  );
}

async function rawThroughput(id: CaseId, options: PlatformBenchOptions): Promise<ThroughputResult> {
  options.progress(`${id}: forking a raw TCP receiver and sender`);
  const children: ChildProcess[] = [];
  try {
    const receiver = forkRaw("sink", []);
    children.push(receiver);
    const { port } = await reply(receiver, "ready");
    const sender = forkRaw("blast", [port!, options.size, options.batch]);
    children.push(sender);
    await reply(sender, "ready");
    options.progress(`${id}: records flowing; warming up ${options.warmupS} s`);
    await sleep(options.warmupS * 1000);
    const a = await reply(receiver, "sample", { t: "sample" });
    const sa = await reply(sender, "sample", { t: "sample" });
    options.progress(`${id}: measuring ${options.durationS} s`);
    await sleep(options.durationS * 1000);
    const b = await reply(receiver, "sample", { t: "sample" });
    const sb = await reply(sender, "sample", { t: "sample" });
    const windowMs = b.atMs - a.atMs;
    const tuples = b.records - a.records;
    const cpu = {
      sender: round((sb.cpuUs - sa.cpuUs) / 1000 / (sb.atMs - sa.atMs), 2),
      receiver: round((b.cpuUs - a.cpuUs) / 1000 / windowMs, 2),
    };
    return throughputResult(id, "raw-tcp", tuples, b.bytes - a.bytes, windowMs, cpu);
  } finally {
    await stopRaw(children);
  }
}

async function rawLatency(id: CaseId, options: PlatformBenchOptions): Promise<LatencyResult> {
  options.progress(`${id}: forking a raw TCP echo server and pinger`);
  const children: ChildProcess[] = [];
  try {
    const server = forkRaw("echo", []);
    children.push(server);
    const { port } = await reply(server, "ready");
    const pinger = forkRaw("ping", [port!, options.size, Math.round(options.warmupS * 1000)]);
    children.push(pinger);
    await reply(pinger, "ready");
    options.progress(
      `${id}: warming up ${options.warmupS} s, then measuring ${options.durationS} s`,
    );
    await sleep((options.warmupS + options.durationS) * 1000);
    const r = await reply(pinger, "result", { t: "result" });
    if (r.count === 0) throw new Error(`${id}: no round trip completed`);
    return {
      case: id,
      kind: "latency",
      placement: "raw-tcp",
      count: r.count,
      p50Ms: r.p50Ms,
      p90Ms: r.p90Ms,
      p99Ms: r.p99Ms,
      p999Ms: r.p999Ms,
      maxMs: r.maxMs,
      meanMs: round(r.meanMs, 3),
      lost: 0,
      cpu: {},
    };
  } finally {
    await stopRaw(children);
  }
}

// ---------------------------------------------------------------------------------------------
// Targets

function find<K extends CaseResult["kind"]>(
  results: CaseResult[],
  id: CaseId,
): Extract<CaseResult, { kind: K }> | undefined {
  return results.find((r) => r.case === id) as Extract<CaseResult, { kind: K }> | undefined;
}

export function checkTargets(results: CaseResult[]): TargetCheck[] {
  const cross = find<"throughput">(results, "throughput-cross");
  const raw = find<"throughput">(results, "throughput-raw");
  const ratio = cross && raw ? round(cross.tuplesPerSec / raw.tuplesPerSec, 3) : null;
  const checks: TargetCheck[] = [
    {
      name: "cross-container / raw TCP throughput",
      value: ratio,
      goal: `>= ${TARGETS.throughputRatio}`,
      met: ratio === null ? null : ratio >= TARGETS.throughputRatio,
    },
  ];
  for (const id of ["latency-same", "latency-cross"] as const) {
    const latency = find<"latency">(results, id);
    checks.push({
      name: `p50 RTT ${id === "latency-same" ? "same" : "cross"} container (ms)`,
      value: latency ? latency.p50Ms : null,
      goal: `< ${TARGETS.p50RttMs}`,
      met: latency ? latency.p50Ms < TARGETS.p50RttMs : null,
    });
  }
  return checks;
}
