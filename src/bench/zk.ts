/**
 * `tara bench zk`: closed-loop ZooKeeper clients (node-zookeeper-client, one session each, one
 * request outstanding each) against Tara's replicated ZooKeeper service (topology "zk", a fresh
 * 3-container cluster) and against a real 3-server ZooKeeper 3.8 ensemble
 * (./zookeeper-ensemble.ts), one after the other in the same run, so that their ratio means
 * something on a shared machine.
 *
 * Workloads, per client count: `write` = setData of a `valueBytes` value on the client's own
 * znode (/bench/client-<i>), `read` = getData of it. Client i talks to server (or gateway) i mod 3
 * only, alike for both targets. Per point: warm-up, then a measured window; operations per
 * second, latency percentiles (HDR histogram), errors, and the CPU (share of one core) and RSS
 * of every process of the target (from /proc where the platform's status does not have them:
 * gateways, checkpoint managers, ZooKeeper's JVMs), of the load generator, and of the whole
 * machine (what the listed processes do not account for is other load on the machine).
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import nzc from "node-zookeeper-client";
import { round, withBenchCluster, type BenchCluster, type ClusterStatus } from "./bench-cluster.js";
import { latencyHistogram, summarize, type LatencySummary } from "./latency.js";
import type { ProcessUse } from "./throughput.js";
import { fourLetterWord, startEnsemble, zookeeperMissing } from "./zookeeper-ensemble.js";
import type { Mechanism } from "../platform/api/stage.js";
import type { CheckpointConfig } from "../platform/runtime/config.js";
import { parseTaraConfig } from "../tara/config.js";

export const ZK_TARGETS = ["tara", "zookeeper"] as const;
export type ZkTarget = (typeof ZK_TARGETS)[number];
export const ZK_WORKLOADS = ["write", "read"] as const;
export type ZkWorkload = (typeof ZK_WORKLOADS)[number];

export interface ZkBenchOptions {
  /** Measured in this order. */
  targets: ZkTarget[];
  clients: number[];
  durationS: number;
  warmupS: number;
  valueBytes: number;
  /** Requested session timeout (both services clamp it to 2-20 ticks of 2 s). */
  sessionTimeoutMs: number;
  /** Tara's checkpointing. */
  checkpoints: CheckpointConfig;
  /** Tara's topology parameters. */
  params: Record<string, string>;
  progress: (line: string) => void;
}

export interface ZkPoint extends LatencySummary {
  target: ZkTarget;
  workload: ZkWorkload;
  clients: number;
  opsPerSec: number;
  windowS: number;
  /** Requests that failed during the window (none in a healthy run). */
  errors: number;
  /** What an acknowledged write survives, and what the request path writes to disk. */
  durability: string;
  /** Tara's checkpoint mechanism (Tara only). */
  mechanism?: Mechanism;
  /** Tara's instance checkpoints (Tara only). */
  instance?: boolean;
  /** Per process of the target and the load generator: share of one core over the window. */
  processes: Record<string, ProcessUse>;
  /**
   * The whole machine over the window, in cores: busy (user, system, interrupts), what the
   * processes above do not explain (other load), waiting for I/O, and stolen by the hypervisor.
   */
  machine: {
    busyCores: number;
    otherCores: number;
    iowaitCores: number;
    stealCores: number;
  } | null;
  /**
   * How long the clients took to finish their last request after the window: about one
   * latency normally; much more means requests were stuck (then opsPerSec understates).
   */
  drainMs: number;
}

/** Tara against ZooKeeper at one (workload, clients): ratio = Tara ops/s / ZooKeeper ops/s. */
export interface ZkRatio {
  workload: ZkWorkload;
  clients: number;
  taraOpsPerSec: number;
  zookeeperOpsPerSec: number;
  /** null when ZooKeeper completed nothing. */
  ratio: number | null;
}

export interface ZkBenchResult {
  points: ZkPoint[];
  ratios: ZkRatio[];
}

const CONTAINERS = 3;
const CONNECT_TIMEOUT_MS = 30_000;
const CLOSE_TIMEOUT_MS = 5000;
/** Linux's USER_HZ: /proc/<pid>/stat and /proc/stat count CPU time in 1/100 s. */
const CLOCK_TICKS = 100;
const PAGE_BYTES = 4096;

/** Runs every target in turn; fails before starting anything if ZooKeeper is asked for but missing. */
export async function runZkBench(options: ZkBenchOptions): Promise<ZkBenchResult> {
  if (options.targets.includes("zookeeper")) {
    const missing = zookeeperMissing();
    if (missing !== undefined) throw new Error(missing);
  }
  const points: ZkPoint[] = [];
  for (const target of options.targets) {
    points.push(...(target === "tara" ? await runTara(options) : await runZooKeeper(options)));
  }
  return { points, ratios: zkRatios(points) };
}

export function zkRatios(points: readonly ZkPoint[]): ZkRatio[] {
  const ratios: ZkRatio[] = [];
  for (const tara of points.filter((p) => p.target === "tara")) {
    const zk = points.find(
      (p) => p.target === "zookeeper" && p.workload === tara.workload && p.clients === tara.clients,
    );
    if (!zk) continue;
    ratios.push({
      workload: tara.workload,
      clients: tara.clients,
      taraOpsPerSec: tara.opsPerSec,
      zookeeperOpsPerSec: zk.opsPerSec,
      ratio: zk.opsPerSec > 0 ? round(tara.opsPerSec / zk.opsPerSec, 3) : null,
    });
  }
  return ratios;
}

// ---- The targets ----

/** What a target gives the measuring loop. */
interface Target {
  name: ZkTarget;
  /** "host:port" of the three servers (gateways). */
  addresses: string[];
  durability: string;
  extra: Pick<ZkPoint, "mechanism" | "instance">;
  /** CPU seconds and RSS of each process of the target, by name. */
  sample(): Promise<Map<string, ProcessSample>>;
}

function runTara(options: ZkBenchOptions): Promise<ZkPoint[]> {
  const checkpoints = options.checkpoints;
  const launch = {
    topology: "zk",
    params: options.params,
    containers: CONTAINERS,
    allowColocation: false,
    gatewayPort: 0,
    checkpoints,
  };
  const label = `tara ${checkpoints.mechanism}${checkpoints.instance ? "+instance" : ""}`;
  return withBenchCluster(launch, options.progress, label, async (bench) => {
    await bench.waitFor("every replica running", (s) =>
      s.instances.every((i) => i.state === "running"),
    );
    const target: Target = {
      name: "tara",
      addresses: bench.cluster.gateways,
      durability: taraDurability(checkpoints, options.params),
      extra: {
        mechanism: checkpoints.mechanism,
        instance: checkpoints.instance || checkpoints.mechanism === "gpc",
      },
      sample: () => sampleTara(bench),
    };
    return runTarget(options, target);
  });
}

async function runZooKeeper(options: ZkBenchOptions): Promise<ZkPoint[]> {
  options.progress("zookeeper: starting a 3-server ensemble");
  const ensemble = await startEnsemble({ fullJit: true });
  try {
    const names = new Map<number, string>();
    for (const [i, server] of ensemble.servers.entries()) {
      const srvr = await fourLetterWord(server.port, "srvr");
      const mode = /^Mode: (\w+)$/m.exec(srvr)?.[1] ?? "unknown";
      names.set(server.pid, `zookeeper-${i + 1} (${mode})`);
    }
    const target: Target = {
      name: "zookeeper",
      addresses: ensemble.servers.map((s) => `127.0.0.1:${s.port}`),
      durability:
        "zookeeper 3.8: a write is acknowledged once a quorum (2 of 3) appended it to its txn " +
        "log and fsynced it (forceSync=yes, group commit: one fsync per batch); snapshots in " +
        `the background; reads served from the connected server's memory (JVM ${ensemble.jvmOptions.join(" ")})`,
      extra: {},
      sample: async () => {
        const samples = new Map<string, ProcessSample>();
        for (const [pid, name] of names) {
          const stat = readProcStat(pid);
          if (stat) samples.set(name, stat);
        }
        return samples;
      },
    };
    return await runTarget(options, target);
  } finally {
    await ensemble.stop();
  }
}

function taraDurability(checkpoints: CheckpointConfig, params: Record<string, string>): string {
  const service = new Set(["tickTime", "containerCheckMs"]);
  let f = 1;
  let k = 1000;
  try {
    const config = parseTaraConfig(
      Object.fromEntries(Object.entries(params).filter(([key]) => !service.has(key))),
    );
    f = config.f;
    k = config.checkpointInterval;
  } catch {
    // The cluster itself rejects bad parameters.
  }
  const quorum = `${f + 1} of ${2 * f + 1} committers`;
  const store = checkpoints.store ?? "fs (data directory)";
  const sync = checkpoints.store?.startsWith("nats:")
    ? "acknowledged by the NATS server"
    : "appended with O_DSYNC";
  const inMemory =
    `a write is acknowledged once ${quorum} accepted it in memory (survives ${f} crashed ` +
    "replica(s) per stage, not a crash of the whole cluster)";
  switch (checkpoints.mechanism) {
    case "pdc":
      return `tara pdc: no disk writes on the request path; ${inMemory}; group checkpoints every ${k} in the executors' memory`;
    case "lpc-cs":
    case "lpc-cm": {
      const writer =
        checkpoints.mechanism === "lpc-cs"
          ? "by the replica itself"
          : "through the checkpoint manager";
      const groups = `group checkpoints every ${k} written to ${store} ${writer}, off the request path`;
      if (!checkpoints.instance) return `tara ${checkpoints.mechanism}: ${inMemory}; ${groups}`;
      return (
        `tara ${checkpoints.mechanism} + instance checkpoints: every committer appends its accepts ` +
        `to its log in ${store} ${writer} (${sync}, group commit) before sending them, so a write ` +
        `is acknowledged once it is on disk at ${quorum}; ${groups}`
      );
    }
    case "gpc":
      return (
        `tara gpc every ${checkpoints.gpcIntervalMs} ms: replies are held until a global ` +
        `checkpoint (every replica's snapshot, fsynced to ${store}) covers them`
      );
  }
}

// ---- Sessions ----

class Session {
  private constructor(readonly client: nzc.Client) {}

  /** Connects to one server and waits for the session. */
  static async open(address: string, sessionTimeoutMs: number): Promise<Session> {
    const client = nzc.createClient(address, {
      sessionTimeout: sessionTimeoutMs,
      spinDelay: 100,
      retries: 0,
    });
    const connected = new Promise<void>((resolve) => client.once("connected", resolve));
    client.connect();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no ZooKeeper session from ${address} in ${CONNECT_TIMEOUT_MS} ms`)),
        CONNECT_TIMEOUT_MS,
      );
    });
    try {
      await Promise.race([connected, timeout]);
    } catch (error) {
      client.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
    return new Session(client);
  }

  /** Creates `path` with `data`; an existing node is fine. */
  create(path: string, data: Buffer): Promise<void> {
    return new Promise((resolve, reject) =>
      this.client.create(path, data, (error) => {
        if (!error) return resolve();
        if (error instanceof nzc.Exception && error.getCode() === nzc.Exception.NODE_EXISTS) {
          return resolve();
        }
        reject(new Error(`create ${path}: ${String(error)}`));
      }),
    );
  }

  setData(path: string, data: Buffer): Promise<Error | null> {
    return new Promise((resolve) =>
      this.client.setData(path, data, -1, (e) => resolve(asError(e))),
    );
  }

  getData(path: string): Promise<Error | null> {
    return new Promise((resolve) => this.client.getData(path, (e) => resolve(asError(e))));
  }

  /** Closes the session; waits (a little) for the server to close the connection. */
  async close(): Promise<void> {
    const state = this.client.getState();
    if (state !== nzc.State.SYNC_CONNECTED) {
      this.client.close();
      return;
    }
    const closed = new Promise<void>((resolve) => this.client.once("disconnected", resolve));
    this.client.close();
    await Promise.race([closed, sleep(CLOSE_TIMEOUT_MS)]);
  }
}

function asError(error: Error | nzc.Exception | null): Error | null {
  if (!error) return null;
  return error instanceof Error ? error : new Error(error.toString());
}

const nodeOf = (i: number) => `/bench/client-${i}`;

/** Every client count and workload against one running target. */
async function runTarget(options: ZkBenchOptions, target: Target): Promise<ZkPoint[]> {
  const value = Buffer.alloc(options.valueBytes, "v");
  const sessions: Session[] = [];
  const points: ZkPoint[] = [];
  try {
    for (const count of options.clients) {
      while (sessions.length < count) {
        const i = sessions.length;
        const session = await Session.open(
          target.addresses[i % target.addresses.length]!,
          options.sessionTimeoutMs,
        );
        sessions.push(session);
        if (i === 0) await session.create("/bench", Buffer.alloc(0));
        await session.create(nodeOf(i), value);
      }
      for (const workload of ZK_WORKLOADS) {
        options.progress(
          `${target.name} ${workload}, ${count} clients: warming up ${options.warmupS}s, ` +
            `measuring ${options.durationS}s`,
        );
        const point = await measure(options, target, workload, sessions.slice(0, count), value);
        points.push(point);
        options.progress(
          `${target.name} ${workload}, ${count} clients: ${point.opsPerSec} ops/s, ` +
            `p50 ${point.p50Ms} ms, p99 ${point.p99Ms} ms` +
            (point.errors > 0 ? `, ${point.errors} errors` : "") +
            (point.drainMs > 1000
              ? `, requests stuck up to ${point.drainMs} ms after the window`
              : ""),
        );
      }
    }
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
  }
  return points;
}

async function measure(
  options: ZkBenchOptions,
  target: Target,
  workload: ZkWorkload,
  sessions: Session[],
  value: Buffer,
): Promise<ZkPoint> {
  const histogram = latencyHistogram();
  let recording = false;
  let running = true;
  let completed = 0;
  let errors = 0;
  let lastError: Error | undefined;
  const loops = sessions.map(async (session, i) => {
    const path = nodeOf(i);
    while (running) {
      const start = performance.now();
      const error =
        workload === "write" ? await session.setData(path, value) : await session.getData(path);
      if (error) {
        lastError = error;
        if (recording) errors++;
        await sleep(50);
        continue;
      }
      if (recording) {
        histogram.recordValue(Math.max(1, Math.round((performance.now() - start) * 1000)));
        completed++;
      }
    }
  });
  await sleep(options.warmupS * 1000);
  const before = await target.sample();
  const machineBefore = readMachineTicks();
  const ownBefore = process.cpuUsage();
  const began = performance.now();
  recording = true;
  await sleep(options.durationS * 1000);
  recording = false;
  const windowS = (performance.now() - began) / 1000;
  const own = process.cpuUsage(ownBefore);
  const machineAfter = readMachineTicks();
  const after = await target.sample();
  running = false;
  const stopped = performance.now();
  await Promise.all(loops);
  const drainMs = round(performance.now() - stopped, 1);
  if (completed === 0 && lastError) {
    throw new Error(`${target.name} ${workload}: no request succeeded: ${lastError.message}`);
  }
  const processes = processUse(before, after, windowS);
  processes["load-generator"] = {
    cpu: round((own.user + own.system) / 1e6 / windowS, 2),
    rssMb: round(process.memoryUsage().rss / 2 ** 20, 0),
  };
  let machine: ZkPoint["machine"] = null;
  if (machineBefore !== undefined && machineAfter !== undefined) {
    const cores = (key: keyof MachineTicks) =>
      (machineAfter[key] - machineBefore[key]) / CLOCK_TICKS / windowS;
    const accounted = Object.values(processes).reduce((sum, p) => sum + p.cpu, 0);
    machine = {
      busyCores: round(cores("busy"), 2),
      otherCores: round(Math.max(0, cores("busy") - accounted), 2),
      iowaitCores: round(cores("iowait"), 2),
      stealCores: round(cores("steal"), 2),
    };
  }
  return {
    target: target.name,
    workload,
    clients: sessions.length,
    opsPerSec: Math.round(completed / windowS),
    windowS: round(windowS, 2),
    errors,
    ...summarize(histogram),
    durability: target.durability,
    ...target.extra,
    processes,
    machine,
    drainMs,
  };
}

// ---- CPU and memory of processes ----

interface ProcessSample {
  pid: number;
  cpuSeconds: number;
  rssBytes: number;
}

/** Differences over the window; a process that restarted meanwhile (new pid) is left out. */
function processUse(
  before: Map<string, ProcessSample>,
  after: Map<string, ProcessSample>,
  windowS: number,
): Record<string, ProcessUse> {
  const use: Record<string, ProcessUse> = {};
  for (const [name, end] of after) {
    const start = before.get(name);
    if (!start || start.pid !== end.pid) continue;
    use[name] = {
      cpu: round((end.cpuSeconds - start.cpuSeconds) / windowS, 2),
      rssMb: round(end.rssBytes / 2 ** 20, 0),
    };
  }
  return use;
}

/**
 * Every process of a Tara cluster: stream managers and replicas named as the status names them
 * (`stmgr-<c>`, `<stage>:<index>`), the others (`gateway-<c>`, `ckptmgr-<c>`, `supervisor-<c>`,
 * `tmaster`) found in /proc as the launcher's and supervisors' children. Without /proc, the
 * status's own figures for the stream managers and replicas.
 */
async function sampleTara(bench: BenchCluster): Promise<Map<string, ProcessSample>> {
  const status: ClusterStatus = await bench.status();
  const samples = new Map<string, ProcessSample>();
  if (!existsSync("/proc/self/stat")) {
    for (const c of status.containers) {
      if (c.stmgr && c.cpuSeconds !== null) {
        samples.set(`stmgr-${c.container}`, {
          pid: c.stmgr.pid,
          cpuSeconds: c.cpuSeconds,
          rssBytes: c.rssBytes ?? 0,
        });
      }
    }
    for (const i of status.instances) {
      if (i.pid !== null && i.cpuSeconds !== null) {
        samples.set(`${i.stage}:${i.index}`, {
          pid: i.pid,
          cpuSeconds: i.cpuSeconds,
          rssBytes: i.rssBytes ?? 0,
        });
      }
    }
    return samples;
  }
  const named = new Map<number, string>();
  for (const c of status.containers) {
    if (c.stmgr) named.set(c.stmgr.pid, `stmgr-${c.container}`);
  }
  for (const i of status.instances) if (i.pid !== null) named.set(i.pid, `${i.stage}:${i.index}`);
  const supervisors = new Map<number, number>();
  for (const c of status.containers) {
    if (c.supervisorPid !== null) supervisors.set(c.supervisorPid, c.container);
  }
  for (const pid of procPids()) {
    const stat = readProcStat(pid);
    if (!stat) continue;
    let name = named.get(pid);
    if (name === undefined) {
      const kind = processKind(pid);
      if (stat.ppid === process.pid && kind === "tmaster") name = "tmaster";
      else if (stat.ppid === process.pid && supervisors.has(pid)) {
        name = `supervisor-${supervisors.get(pid)}`;
      } else if (supervisors.has(stat.ppid) && kind !== undefined) {
        name = `${kind}-${supervisors.get(stat.ppid)}`;
      }
    }
    if (name !== undefined) samples.set(name, stat);
  }
  return samples;
}

function procPids(): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number);
}

/** utime + stime, RSS and parent of a process; undefined if it is gone. */
function readProcStat(pid: number): (ProcessSample & { ppid: number }) | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const ppid = Number(fields[1]);
  const ticks = Number(fields[11]) + Number(fields[12]);
  const rssPages = Number(fields[21]);
  return { pid, ppid, cpuSeconds: ticks / CLOCK_TICKS, rssBytes: rssPages * PAGE_BYTES };
}

/** A platform process's kind: its last argument (see platform/runtime/child.ts). */
function processKind(pid: number): string | undefined {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
    return argv.at(-1);
  } catch {
    return undefined;
  }
}

interface MachineTicks {
  busy: number;
  iowait: number;
  steal: number;
}

/** CPU ticks of the whole machine since boot (all cores), from /proc/stat. */
function readMachineTicks(): MachineTicks | undefined {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
    const [user, nice, system, , iowait, irq, softirq, steal] = line
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    return { busy: user! + nice! + system! + irq! + softirq!, iowait: iowait!, steal: steal! };
  } catch {
    return undefined;
  }
}
