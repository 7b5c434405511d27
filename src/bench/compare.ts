/**
 * `tara bench compare`: the same closed-loop workloads (one request outstanding per client)
 * against Tara's replicated ZooKeeper service (topology "zk", the one `tara start` runs, on a
 * fresh 3-container cluster), a real 3-server ZooKeeper 3.8 ensemble (./zookeeper-ensemble.ts)
 * and a real 3-member etcd 3 cluster (./etcd-cluster.ts), one after the other in the same run,
 * so that their ratios mean something on a shared machine. A system whose Debian package is
 * absent is skipped with the reason in the results.
 *
 * Tara and ZooKeeper are driven through the same ZooKeeper client (node-zookeeper-client, one
 * session per client); etcd through the etcd3 client (gRPC, one connection per client).
 * Workloads, per client count: `write` = setData (etcd: put) of a `valueBytes` value on the
 * client's own node (/bench/client-<i>), `read` = getData (etcd: get) of it. Client i talks to
 * server (or gateway) i mod 3 only, alike for every target. Per point: warm-up, then a measured
 * window; operations per second, latency percentiles (HDR histogram), errors, and the CPU
 * (share of one core) and RSS of every process of the target (from /proc where the platform's
 * status does not have them: gateways, checkpoint managers, ZooKeeper's JVMs, etcd), of the load
 * generator, and of the whole machine (what the listed processes do not account for is other
 * load on the machine).
 */
import { noop } from "cockatiel";
import { Etcd3 } from "etcd3";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import nzc from "node-zookeeper-client";
import {
  round,
  withServiceCluster,
  type BenchCluster,
  type ClusterStatus,
} from "./bench-cluster.js";
import { etcdMissing, startEtcdCluster } from "./etcd-cluster.js";
import { latencyHistogram, summarize, type LatencySummary } from "./latency.js";
import type { ProcessUse } from "./throughput.js";
import { fourLetterWord, startEnsemble, zookeeperMissing } from "./zookeeper-ensemble.js";
import type { Mechanism } from "../platform/api/stage.js";
import type { CheckpointConfig } from "../platform/runtime/config.js";
import { parseTaraConfig } from "../tara/config.js";

export const COMPARE_TARGETS = ["tara", "zookeeper", "etcd"] as const;
export type CompareTarget = (typeof COMPARE_TARGETS)[number];
export const COMPARE_WORKLOADS = ["write", "read"] as const;
export type CompareWorkload = (typeof COMPARE_WORKLOADS)[number];

export interface CompareOptions {
  /** Measured in this order. */
  targets: CompareTarget[];
  workloads: CompareWorkload[];
  clients: number[];
  durationS: number;
  warmupS: number;
  /** Unmeasured load (writes, at the largest client count up to 32) before a target's first point. */
  targetWarmupS: number;
  valueBytes: number;
  /** Requested session timeout (both ZooKeeper services clamp it to 2-20 ticks of 2 s). */
  sessionTimeoutMs: number;
  /** Tara's checkpointing. */
  checkpoints: CheckpointConfig;
  /** Tara's topology parameters. */
  params: Record<string, string>;
  progress: (line: string) => void;
  /** Called once per point, and once per target skipped (`skipped`: its points, not measured). */
  onPoint?: (point: ComparePoint | undefined, skipped?: number) => void;
}

export interface ComparePoint extends LatencySummary {
  target: CompareTarget;
  workload: CompareWorkload;
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

/** Tara against another system at one (workload, clients): Tara ops/s over theirs. */
export interface CompareRatio {
  workload: CompareWorkload;
  clients: number;
  against: Exclude<CompareTarget, "tara">;
  taraOpsPerSec: number;
  otherOpsPerSec: number;
  /** null when the other system completed nothing. */
  ratio: number | null;
}

export interface CompareResult {
  points: ComparePoint[];
  ratios: CompareRatio[];
  /** Targets not measured, and why (a Debian package not installed). */
  skipped: { target: CompareTarget; reason: string }[];
  /** Each measured target's durability and consistency, as stated in its points. */
  durability: Partial<Record<CompareTarget, string>>;
}

const CONNECT_TIMEOUT_MS = 30_000;
const CLOSE_TIMEOUT_MS = 5000;
/** Linux's USER_HZ: /proc/<pid>/stat and /proc/stat count CPU time in 1/100 s. */
const CLOCK_TICKS = 100;
const PAGE_BYTES = 4096;

/** Why a target cannot run here, or undefined. */
export function targetMissing(target: CompareTarget): string | undefined {
  if (target === "zookeeper") return zookeeperMissing();
  if (target === "etcd") return etcdMissing();
  return undefined;
}

/** Runs every target in turn; one that is not installed is skipped with the reason. */
export async function runCompare(options: CompareOptions): Promise<CompareResult> {
  const points: ComparePoint[] = [];
  const skipped: CompareResult["skipped"] = [];
  for (const target of options.targets) {
    const missing = targetMissing(target);
    if (missing !== undefined) {
      options.progress(`${target}: ${missing}`);
      skipped.push({ target, reason: missing });
      options.onPoint?.(undefined, options.clients.length * options.workloads.length);
      continue;
    }
    const run = target === "tara" ? runTara : target === "zookeeper" ? runZooKeeper : runEtcd;
    points.push(...(await run(options)));
  }
  const durability: CompareResult["durability"] = {};
  for (const p of points) durability[p.target] = p.durability;
  return { points, ratios: compareRatios(points), skipped, durability };
}

export function compareRatios(points: readonly ComparePoint[]): CompareRatio[] {
  const ratios: CompareRatio[] = [];
  for (const tara of points.filter((p) => p.target === "tara")) {
    for (const other of points) {
      if (other.target === "tara") continue;
      if (other.workload !== tara.workload || other.clients !== tara.clients) continue;
      ratios.push({
        workload: tara.workload,
        clients: tara.clients,
        against: other.target,
        taraOpsPerSec: tara.opsPerSec,
        otherOpsPerSec: other.opsPerSec,
        ratio: other.opsPerSec > 0 ? round(tara.opsPerSec / other.opsPerSec, 3) : null,
      });
    }
  }
  return ratios;
}

// ---- The targets ----

/** One client's connection to a target: one request outstanding at a time. */
interface Connection {
  write(value: Buffer): Promise<Error | null>;
  read(): Promise<Error | null>;
  close(): Promise<void>;
}

/** What a target gives the measuring loop. */
interface Target {
  name: CompareTarget;
  durability: string;
  extra: Pick<ComparePoint, "mechanism" | "instance">;
  /** Client i's connection (to server i mod 3), its node created with `value`. */
  open(i: number, value: Buffer): Promise<Connection>;
  /** CPU seconds and RSS of each process of the target, by name. */
  sample(): Promise<Map<string, ProcessSample>>;
}

function runTara(options: CompareOptions): Promise<ComparePoint[]> {
  const checkpoints = options.checkpoints;
  const label = `tara ${checkpoints.mechanism}${checkpoints.instance ? "+instance" : ""}`;
  return withServiceCluster(
    { topology: "zk", params: options.params, checkpoints },
    options.progress,
    label,
    async (bench) => {
      const target: Target = {
        name: "tara",
        durability: taraDurability(checkpoints, options.params),
        extra: {
          mechanism: checkpoints.mechanism,
          instance: checkpoints.instance || checkpoints.mechanism === "gpc",
        },
        open: (i, value) => openZooKeeper(bench.cluster.gateways, i, value, options),
        sample: () => sampleTara(bench),
      };
      return runTarget(options, target);
    },
  );
}

async function runZooKeeper(options: CompareOptions): Promise<ComparePoint[]> {
  options.progress("zookeeper: starting a 3-server ensemble");
  const ensemble = await startEnsemble({ fullJit: true });
  try {
    const names = new Map<number, string>();
    for (const [i, server] of ensemble.servers.entries()) {
      const srvr = await fourLetterWord(server.port, "srvr");
      const mode = /^Mode: (\w+)$/m.exec(srvr)?.[1] ?? "unknown";
      names.set(server.pid, `zookeeper-${i + 1} (${mode})`);
    }
    const addresses = ensemble.servers.map((s) => `127.0.0.1:${s.port}`);
    const target: Target = {
      name: "zookeeper",
      durability:
        "zookeeper 3.8: a write is acknowledged once a quorum (2 of 3) appended it to its txn " +
        "log and fsynced it (forceSync=yes, group commit: one fsync per batch); snapshots in " +
        "the background; reads served from the connected server's memory (sequentially " +
        `consistent, not linearizable) (JVM ${ensemble.jvmOptions.join(" ")})`,
      extra: {},
      open: (i, value) => openZooKeeper(addresses, i, value, options),
      sample: async () => samplePids(names),
    };
    return await runTarget(options, target);
  } finally {
    await ensemble.stop();
  }
}

async function runEtcd(options: CompareOptions): Promise<ComparePoint[]> {
  options.progress("etcd: starting a 3-member cluster");
  const cluster = await startEtcdCluster();
  try {
    const names = new Map(cluster.members.map((m) => [m.pid, m.name]));
    const target: Target = {
      name: "etcd",
      durability:
        `etcd ${cluster.version}: a write is acknowledged once a quorum (2 of 3) ` +
        "appended it to its WAL and fsynced it (raft, batched fsync); reads are linearizable " +
        "(the etcd3 client's default: a ReadIndex round through the leader)",
      extra: {},
      open: (i, value) => openEtcd(cluster.endpoints[i % cluster.endpoints.length]!, i, value),
      sample: async () => samplePids(names),
    };
    return await runTarget(options, target);
  } finally {
    await cluster.stop();
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
  const reads = "reads are ordered like writes (linearizable)";
  switch (checkpoints.mechanism) {
    case "pdc":
      return `tara pdc: no disk writes on the request path; ${inMemory}; group checkpoints every ${k} in the executors' memory; ${reads}`;
    case "lpc-cs":
    case "lpc-cm": {
      const writer =
        checkpoints.mechanism === "lpc-cs"
          ? "by the replica itself"
          : "through the checkpoint manager";
      const groups = `group checkpoints every ${k} written to ${store} ${writer}, off the request path`;
      if (!checkpoints.instance) {
        return `tara ${checkpoints.mechanism}: ${inMemory}; ${groups}; ${reads}`;
      }
      return (
        `tara ${checkpoints.mechanism} + instance checkpoints: every committer appends its accepts ` +
        `to its log in ${store} ${writer} (${sync}, group commit) before sending them, so a write ` +
        `is acknowledged once it is on disk at ${quorum}; ${groups}; ${reads}`
      );
    }
    case "gpc":
      return (
        `tara gpc every ${checkpoints.gpcIntervalMs} ms: replies are held until a global ` +
        `checkpoint (every replica's snapshot, fsynced to ${store}) covers them; ${reads}`
      );
  }
}

// ---- Connections ----

const nodeOf = (i: number) => `/bench/client-${i}`;

/** A ZooKeeper session with server i mod n (Tara's gateways or ZooKeeper's servers). */
async function openZooKeeper(
  addresses: readonly string[],
  i: number,
  value: Buffer,
  options: CompareOptions,
): Promise<Connection> {
  const session = await Session.open(addresses[i % addresses.length]!, options.sessionTimeoutMs);
  try {
    await session.create("/bench", Buffer.alloc(0));
    await session.create(nodeOf(i), value);
  } catch (error) {
    await session.close();
    throw error;
  }
  const path = nodeOf(i);
  return {
    write: (data) => session.setData(path, data),
    read: () => session.getData(path),
    close: () => session.close(),
  };
}

/** An etcd client with one endpoint (its own gRPC connection), no retries of its own. */
async function openEtcd(endpoint: string, i: number, value: Buffer): Promise<Connection> {
  const client = new Etcd3({
    hosts: endpoint,
    dialTimeout: CONNECT_TIMEOUT_MS,
    // Like the ZooKeeper clients here: an error is counted, not hidden by retries.
    faultHandling: { host: () => noop, global: noop },
  });
  const key = nodeOf(i);
  const settle = (call: Promise<unknown>) =>
    call.then(
      () => null,
      (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
    );
  const created = await settle(client.put(key).value(value).exec());
  if (created) {
    client.close();
    throw new Error(`etcd put ${key} at ${endpoint}: ${created.message}`);
  }
  return {
    write: (data) => settle(client.put(key).value(data).exec()),
    read: () => settle(client.get(key).buffer()),
    close: async () => client.close(),
  };
}

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

// ---- Measuring ----

/** Every client count and workload against one running target. */
async function runTarget(options: CompareOptions, target: Target): Promise<ComparePoint[]> {
  const value = Buffer.alloc(options.valueBytes, "v");
  const connections: Connection[] = [];
  const points: ComparePoint[] = [];
  const connectUpTo = async (count: number) => {
    while (connections.length < count) {
      connections.push(await target.open(connections.length, value));
    }
  };
  try {
    if (options.targetWarmupS > 0) {
      // Unmeasured: JIT warm-up of a fresh Tara cluster or JVM before the first point.
      const count = Math.min(32, Math.max(...options.clients));
      await connectUpTo(count);
      options.progress(
        `${target.name}: warm-up, ${count} clients writing for ${options.targetWarmupS}s`,
      );
      await warmUp(connections.slice(0, count), value, options.targetWarmupS);
    }
    for (const count of options.clients) {
      await connectUpTo(count);
      for (const workload of options.workloads) {
        options.progress(
          `${target.name} ${workload}, ${count} clients: warming up ${options.warmupS}s, ` +
            `measuring ${options.durationS}s`,
        );
        const point = await measure(options, target, workload, connections.slice(0, count), value);
        points.push(point);
        options.onPoint?.(point);
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
    await Promise.all(connections.map((c) => c.close()));
  }
  return points;
}

/** Writes in a closed loop for `seconds`, unmeasured. */
async function warmUp(connections: Connection[], value: Buffer, seconds: number): Promise<void> {
  let running = true;
  const loops = connections.map(async (connection) => {
    while (running) {
      if (await connection.write(value)) await sleep(50);
    }
  });
  await sleep(seconds * 1000);
  running = false;
  await Promise.all(loops);
}

async function measure(
  options: CompareOptions,
  target: Target,
  workload: CompareWorkload,
  connections: Connection[],
  value: Buffer,
): Promise<ComparePoint> {
  const histogram = latencyHistogram();
  let recording = false;
  let running = true;
  let completed = 0;
  let errors = 0;
  let lastError: Error | undefined;
  const loops = connections.map(async (connection) => {
    while (running) {
      const start = performance.now();
      const error = workload === "write" ? await connection.write(value) : await connection.read();
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
  let machine: ComparePoint["machine"] = null;
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
    clients: connections.length,
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

/** The named processes that are still alive. */
function samplePids(names: ReadonlyMap<number, string>): Map<string, ProcessSample> {
  const samples = new Map<string, ProcessSample>();
  for (const [pid, name] of names) {
    const stat = readProcStat(pid);
    if (stat) samples.set(name, stat);
  }
  return samples;
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
