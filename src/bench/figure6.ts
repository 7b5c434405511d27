/**
 * `tara bench figure6`: the impact of a node crash (the paper's Figure 6). Per scenario a fresh
 * 3-container cluster of the key-value service serves closed-loop clients (one 128-byte put
 * outstanding each). After a warm-up, the measured run counts the requests completed in every
 * 100 ms interval; at its midpoint one replica (or every process of one container) is SIGKILLed
 * through the topology manager's admin endpoint, and the topology manager's status, polled
 * every 100 ms from then on, tells when the victim runs again.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { KvClient } from "../client/kv-client.js";
import type { TaraClientStats } from "../client/tara-client.js";
import { leaderOf } from "../tara/config.js";
import type { CheckpointConfig } from "../platform/runtime/config.js";
import type { InstanceStatus } from "../platform/tmaster/plan-tracker.js";
import {
  round,
  withServiceCluster,
  type BenchCluster,
  type ClusterStatus,
} from "./bench-cluster.js";
import { cpuShares, readCpuTimes, type MachineFacts } from "./report/machine.js";
import { renderPlot } from "./report/plot.js";
import { writeCsv, writeJson } from "./report/results.js";
import { groupBy, spreadOf, type Spread } from "./report/spread.js";
import { judged, type Target } from "./report/targets.js";

export const SCENARIO_IDS = ["lpc-cs", "lpc-cm", "gpc", "leader", "container"] as const;
export type ScenarioId = (typeof SCENARIO_IDS)[number];

export const CRASH_MECHANISMS = ["lpc-cs", "lpc-cm", "gpc"] as const;
export type CrashMechanism = (typeof CRASH_MECHANISMS)[number];

/** Width of one timeline interval. */
export const INTERVAL_MS = 100;
const STATUS_POLL_MS = 100;
/** A victim not back by the end of the run is waited for this much longer (load stopped). */
const RETURN_GRACE_MS = 10_000;
/** After the run: longest wait for the outstanding puts, and then for reading the keys back. */
const STOP_GRACE_MS = 10_000;
/** Below this share of the pre-crash mean an interval counts as downtime. */
const DOWN_SHARE = 0.1;
/** The issue's LPC-CS target: no interval below this share of the pre-crash mean. */
const DIP_SHARE = 0.8;
/** The service is back once this many intervals in a row reach half the pre-crash mean. */
const BACK_SHARE = 0.5;
const BACK_RUN = 5;

export interface Figure6Options {
  scenarios: ScenarioId[];
  clients: number;
  /** Measured run per scenario; the kill is at its midpoint. */
  durationS: number;
  warmupS: number;
  valueBytes: number;
  clientTimeoutMs: number;
  gpcIntervalMs: number;
  /** Mechanism of the leader and container scenarios (committer scenarios name their own). */
  crashMechanism: CrashMechanism;
  /** Container killed in the container scenario; default: one without the leader proposer. */
  container?: number;
  params: Record<string, string>;
  log: (line: string) => void;
  /** One phase of a scenario done (4 per scenario: cluster up, warmed up, killed, finished). */
  step: (status: string) => void;
}

export const STEPS_PER_SCENARIO = 4;

/** What the requests-per-interval timeline says about the crash. */
export interface TimelineAnalysis {
  /** Mean requests per interval over the intervals that ended before the kill. */
  preCrashMean: number;
  /** Intervals before the kill below 80% of that mean: the noise without any crash. */
  preCrashBelow80: number;
  /** From the interval of the kill on: */
  below80AfterKill: number;
  /** Lowest interval as a share of the pre-crash mean (null without a pre-crash mean). */
  lowestShare: number | null;
  /** Intervals below 10% of the pre-crash mean, in all and the longest run of them. */
  downtimeMs: number;
  longestDowntimeMs: number;
  /** The same count before the kill: the bursts of GPC's held replies leave empty intervals. */
  preCrashDowntimeMs: number;
  /**
   * From the kill to the first interval at 50% of the pre-crash mean or more that starts 5
   * intervals averaging that much (0 if the rate never dropped; null if it never recovered).
   */
  serviceBackMs: number | null;
  /** Mean requests per interval over the last quarter of the run. */
  afterRecoveryMean: number;
  afterRecoveryShare: number | null;
}

export function analyzeTimeline(
  counts: readonly number[],
  intervalMs: number,
  killAtMs: number,
): TimelineAnalysis {
  const mean = (xs: readonly number[]) =>
    xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length;
  const killIndex = Math.min(counts.length, Math.max(0, Math.floor(killAtMs / intervalMs)));
  const pre = counts.slice(0, killIndex);
  const post = counts.slice(killIndex);
  const preMean = mean(pre);
  const share = (x: number) => (preMean > 0 ? x / preMean : null);
  let down = 0;
  let run = 0;
  let longest = 0;
  for (const c of post) {
    if (c < DOWN_SHARE * preMean) {
      down++;
      run++;
      longest = Math.max(longest, run);
    } else {
      run = 0;
    }
  }
  let serviceBackMs: number | null = null;
  // An average, not every interval: GPC releases replies in bursts, one per global checkpoint.
  for (let j = killIndex; j + BACK_RUN <= counts.length; j++) {
    if (
      counts[j]! >= BACK_SHARE * preMean &&
      mean(counts.slice(j, j + BACK_RUN)) >= BACK_SHARE * preMean
    ) {
      serviceBackMs = Math.max(0, j * intervalMs - killAtMs);
      break;
    }
  }
  const tail = counts.slice(counts.length - Math.max(1, Math.floor(counts.length / 4)));
  const tailMean = mean(tail);
  const lowest = post.length > 0 ? Math.min(...post) : null;
  return {
    preCrashMean: round(preMean, 2),
    preCrashBelow80: pre.filter((c) => c < DIP_SHARE * preMean).length,
    below80AfterKill: post.filter((c) => c < DIP_SHARE * preMean).length,
    lowestShare: lowest === null ? null : nullableRound(share(lowest), 3),
    downtimeMs: down * intervalMs,
    preCrashDowntimeMs: pre.filter((c) => c < DOWN_SHARE * preMean).length * intervalMs,
    longestDowntimeMs: longest * intervalMs,
    serviceBackMs: serviceBackMs === null ? null : Math.round(serviceBackMs),
    afterRecoveryMean: round(tailMean, 2),
    afterRecoveryShare: nullableRound(share(tailMean), 3),
  };
}

/** A time without any completed request, in ms since the start of the measured run. */
export interface Gap {
  fromMs: number;
  toMs: number;
}

/**
 * The longest time without a single completed request from the kill on (the part of a gap
 * after the kill), and before it: unlike rates per interval, this is not fooled by GPC's
 * bursts of replies.
 */
export function gapStats(
  gaps: readonly Gap[],
  killAtMs: number,
): { longestGapMs: number; preCrashLongestGapMs: number } {
  let after = 0;
  let before = 0;
  for (const { fromMs, toMs } of gaps) {
    if (toMs > killAtMs) after = Math.max(after, toMs - Math.max(fromMs, killAtMs));
    else before = Math.max(before, toMs - fromMs);
  }
  return { longestGapMs: Math.round(after), preCrashLongestGapMs: Math.round(before) };
}

function nullableRound(value: number | null, digits: number): number | null {
  return value === null ? null : round(value, digits);
}

export interface ClientCounts {
  /** Puts that failed (the gateway refused them): the key's value is then unknown. */
  errors: number;
  timeouts: number;
  retries: number;
  connectionsLost: number;
}

export interface ScenarioResult extends TimelineAnalysis {
  /** Longest time without any completed request from the kill on, and before it. */
  longestGapMs: number;
  preCrashLongestGapMs: number;
  scenario: ScenarioId;
  title: string;
  short: string;
  mechanism: CrashMechanism;
  /** "committer:1", "proposer:0" or "container 2". */
  victim: string;
  victimContainer: number;
  /** The leader proposer before the kill, and whether the status said so (else view 0's). */
  leader: string;
  leaderFromStatus: boolean;
  clients: number;
  intervalMs: number;
  warmupS: number;
  durationMs: number;
  /** Since the start of the measured run. */
  killAtMs: number;
  killedPids: number[];
  /** First status after the kill in which the victim was down or had a new incarnation. */
  detectedAtMs: number | null;
  /** First status in which the victim ran again (new incarnation, state running). */
  returnedAtMs: number | null;
  returnMs: number | null;
  /** Leader scenario: first status in which another proposer leads. */
  newLeader: string | null;
  newLeaderAtMs: number | null;
  completed: number;
  preCrashPerSec: number;
  afterRecoveryPerSec: number;
  client: ClientCounts;
  /** Keys whose last acknowledged value was not read back afterwards (null: not checked). */
  lostAcknowledged: number | null;
  keysChecked: number;
  /** GPC: the most rollbacks any replica reports. */
  gpcRollbacks: number | null;
  /** Share of the machine's CPU time busy, and stolen by the hypervisor, during the run. */
  machine: { busy: number; steal: number } | null;
  timeline: number[];
}

export interface ScenarioFailure {
  scenario: ScenarioId;
  title: string;
  error: string;
}

export interface Scenario {
  id: ScenarioId;
  title: string;
  /** For a plot's legend. */
  short: string;
  mechanism: CrashMechanism;
  kind: "committer" | "leader" | "container";
}

const MECHANISM_NAMES: Record<CrashMechanism, string> = {
  "lpc-cs": "LPC-CS",
  "lpc-cm": "LPC-CM",
  gpc: "GPC",
};

export function scenarioOf(id: ScenarioId, crashMechanism: CrashMechanism): Scenario {
  const mechanism = id === "leader" || id === "container" ? crashMechanism : id;
  const kind = id === "leader" || id === "container" ? id : "committer";
  const name = MECHANISM_NAMES[mechanism];
  const what = kind === "leader" ? "leader-proposer" : kind;
  return { id, mechanism, kind, title: `${what} crash, ${name}`, short: `${name} ${kind}` };
}

/** Full crash recovery in every scenario: LPC with instance checkpoints, or GPC. */
function checkpointsOf(
  mechanism: CrashMechanism,
  gpcIntervalMs: number,
): Partial<CheckpointConfig> {
  return mechanism === "gpc" ? { mechanism: "gpc", gpcIntervalMs } : { mechanism, instance: true };
}

export async function runFigure6(
  options: Figure6Options,
): Promise<{ results: ScenarioResult[]; failures: ScenarioFailure[] }> {
  const results: ScenarioResult[] = [];
  const failures: ScenarioFailure[] = [];
  for (const id of options.scenarios) {
    const scenario = scenarioOf(id, options.crashMechanism);
    try {
      results.push(await runScenario(options, scenario));
    } catch (error) {
      // One broken scenario must not cost the others' results (the command still fails).
      const message = (error as Error).message;
      options.log(`${scenario.title}: FAILED: ${message}`);
      failures.push({ scenario: id, title: scenario.title, error: message });
    }
  }
  return { results, failures };
}

function runScenario(options: Figure6Options, scenario: Scenario): Promise<ScenarioResult> {
  const checkpoints = checkpointsOf(scenario.mechanism, options.gpcIntervalMs);
  const log = (line: string) => options.log(`${scenario.title}: ${line}`);
  return withServiceCluster(
    { topology: "kv", params: options.params, checkpoints },
    options.log,
    scenario.title,
    async (bench) => {
      const clients: KvClient[] = [];
      try {
        for (let i = 0; i < options.clients; i++) {
          const client = new KvClient({
            gateways: bench.cluster.gateways,
            timeoutMs: options.clientTimeoutMs,
            firstGateway: i % bench.cluster.gateways.length,
          });
          clients.push(client);
          await client.connect();
        }
        options.step(`${scenario.title}: cluster up`);
        return await measure(options, scenario, bench, clients, log);
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
    },
  );
}

interface Victim {
  name: string;
  container: number;
  /** The instances whose return is awaited, with their incarnation before the kill. */
  instances: { stage: string; index: number; incarnation: number }[];
  kill: { replica: string } | { container: number };
}

/** The container a replica runs in; a bench never moves one, so it is never between two. */
function hostOf(i: InstanceStatus): number {
  if (i.container === null) throw new Error(`${i.stage}:${i.index} is moving between containers`);
  return i.container;
}

function findLeader(status: ClusterStatus): {
  name: string;
  fromStatus: boolean;
  container: number;
} {
  const proposers = status.instances.filter((i) => i.stage === "proposer");
  const reported = proposers.find((p) => p.status.leader === true);
  // Proposer leaderOf(0) leads view 0 until a view change (src/tara/stages/proposer.ts).
  const leader = reported ?? proposers.find((p) => p.index === leaderOf(0, proposers.length));
  if (!leader) throw new Error("the status lists no proposer");
  return { name: `proposer:${leader.index}`, fromStatus: !!reported, container: hostOf(leader) };
}

function chooseVictim(
  options: Figure6Options,
  scenario: Scenario,
  status: ClusterStatus,
  leaderContainer: number,
): Victim {
  const committers = status.instances
    .filter((i) => i.stage === "committer")
    .sort((a, b) => a.index - b.index);
  // committer:1 unless it shares the leader's container: then the first one that does not.
  const committer =
    [committers.find((c) => c.index === 1), ...committers].find(
      (c) => c !== undefined && hostOf(c) !== leaderContainer,
    ) ?? committers[0];
  if (!committer) throw new Error("the status lists no committer");
  const one = (i: InstanceStatus): Victim => ({
    name: `${i.stage}:${i.index}`,
    container: hostOf(i),
    instances: [{ stage: i.stage, index: i.index, incarnation: i.incarnation }],
    kill: { replica: `${i.stage}:${i.index}` },
  });
  switch (scenario.kind) {
    case "committer":
      return one(committer);
    case "leader": {
      const leader = findLeader(status);
      const instance = status.instances.find(
        (i) => `${i.stage}:${i.index}` === leader.name,
      ) as InstanceStatus;
      return one(instance);
    }
    case "container": {
      const container = options.container ?? hostOf(committer);
      return {
        name: `container ${container}`,
        container,
        instances: status.instances
          .filter((i) => i.container === container)
          .map((i) => ({ stage: i.stage, index: i.index, incarnation: i.incarnation })),
        kill: { container },
      };
    }
  }
}

async function kill(bench: BenchCluster, target: Victim["kill"]): Promise<number[]> {
  const response = await fetch(`${bench.cluster.adminUrl}/kill`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${bench.cluster.config.secret}`,
      "content-type": "application/json",
    },
    body: JSON.stringify(target),
    signal: AbortSignal.timeout(5000),
  });
  const body = (await response.json()) as { killed?: number[]; error?: string };
  if (!response.ok) throw new Error(`POST /kill: ${body.error ?? `HTTP ${response.status}`}`);
  return body.killed ?? [];
}

/** Padded to `bytes` after a unique prefix, so a lost write shows as an older value. */
function valueOf(client: number, n: number, bytes: number): string {
  return `${client}:${n}:`.padEnd(bytes, "v");
}

async function measure(
  options: Figure6Options,
  scenario: Scenario,
  bench: BenchCluster,
  clients: KvClient[],
  log: (line: string) => void,
): Promise<ScenarioResult> {
  const durationMs = options.durationS * 1000;
  const timeline = new Array<number>(Math.round(durationMs / INTERVAL_MS)).fill(0);
  let t0 = Infinity; // start of the measured run; completions before it are warm-up
  let tEnd = Infinity;
  let lastDoneAt = -Infinity; // the latest completion up to the end of the run
  const gaps: Gap[] = [];
  const gap = (from: number, to: number) => {
    if (to - from > INTERVAL_MS) gaps.push({ fromMs: Math.max(0, from - t0), toMs: to - t0 });
  };
  let running = true;
  const lastAcked = new Map<string, string>();
  const uncertain = new Set<string>();
  let errors = 0;
  let abandoned = false; // the scenario failed: stop watching the status
  const loops = clients.map(async (client, i) => {
    const key = `key-${i}`;
    for (let n = 1; running; n++) {
      const value = valueOf(i, n, options.valueBytes);
      try {
        await client.put(key, value);
      } catch (error) {
        if (!running) break; // closed at the end
        errors++;
        uncertain.add(key);
        if (errors <= 5) log(`put refused: ${(error as Error).message}`);
        // Do not spin on a gateway that refuses at once.
        await sleep(10);
        continue;
      }
      lastAcked.set(key, value);
      const at = performance.now();
      if (at > tEnd) continue;
      if (at >= t0) {
        const index = Math.floor((at - t0) / INTERVAL_MS);
        if (index < timeline.length) timeline[index]!++;
        gap(lastDoneAt, at);
      }
      lastDoneAt = at;
    }
  });
  try {
    log(`warming up ${options.warmupS} s with ${clients.length} clients`);
    await sleep(options.warmupS * 1000);
    const before = await bench.status();
    const leader = findLeader(before);
    const victim = chooseVictim(options, scenario, before, leader.container);
    options.step(`${scenario.title}: warmed up, measuring ${options.durationS} s`);
    log(`leader ${leader.name} (container ${leader.container}); victim ${victim.name}`);
    const statsBefore = clients.map((c) => ({ ...c.client.stats }));
    const cpuBefore = readCpuTimes();
    t0 = performance.now();
    tEnd = t0 + durationMs;
    const since = () => performance.now() - t0;

    await sleep(durationMs / 2);
    const killAtMs = since();
    const killedPids = await kill(bench, victim.kill);
    options.step(`${scenario.title}: SIGKILLed ${victim.name} (${killedPids.length} processes)`);
    log(
      `SIGKILL ${victim.name} at ${(killAtMs / 1000).toFixed(2)} s: pids ${killedPids.join(",")}`,
    );

    // Status from the kill on, until the victim is back (and, for the leader, replaced); the
    // load stops at the end of the run whether or not it is.
    const watching = watchRecovery(bench, victim, scenario, since, () =>
      abandoned || performance.now() > tEnd + RETURN_GRACE_MS ? "stop" : "go",
    );
    await sleep(Math.max(0, tEnd - performance.now()));
    running = false;
    gap(lastDoneAt, tEnd);
    const machine = cpuShares(cpuBefore, readCpuTimes());
    const client = clientCounts(statsBefore, clients, errors);
    // Each loop ends with its outstanding put; clients retry forever, so a service that never
    // came back would hang here: bounded, and then nothing can be read back either.
    const stopped = await within(Promise.all(loops), STOP_GRACE_MS);
    const lost = stopped
      ? await within(checkAcknowledged(clients, lastAcked, uncertain), STOP_GRACE_MS)
      : undefined;
    if (!lost) log(`the service did not answer within ${STOP_GRACE_MS / 1000} s after the run`);
    const watched = await watching;
    const after = await bench.status();
    const analysis = analyzeTimeline(timeline, INTERVAL_MS, killAtMs);
    const perSec = 1000 / INTERVAL_MS;
    const result: ScenarioResult = {
      scenario: scenario.id,
      title: scenario.title,
      short: scenario.short,
      mechanism: scenario.mechanism,
      victim: victim.name,
      victimContainer: victim.container,
      leader: leader.name,
      leaderFromStatus: leader.fromStatus,
      clients: clients.length,
      intervalMs: INTERVAL_MS,
      warmupS: options.warmupS,
      durationMs,
      killAtMs: Math.round(killAtMs),
      killedPids,
      ...watched,
      returnMs: watched.returnedAtMs === null ? null : Math.round(watched.returnedAtMs - killAtMs),
      completed: timeline.reduce((a, b) => a + b, 0),
      ...analysis,
      ...gapStats(gaps, killAtMs),
      preCrashPerSec: Math.round(analysis.preCrashMean * perSec),
      afterRecoveryPerSec: Math.round(analysis.afterRecoveryMean * perSec),
      client,
      lostAcknowledged: lost?.lost ?? null,
      keysChecked: lost?.checked ?? 0,
      gpcRollbacks: scenario.mechanism === "gpc" ? gpcRollbacks(after) : null,
      machine,
      timeline,
    };
    options.step(
      `${scenario.title}: ${result.preCrashPerSec} req/s before, downtime ` +
        `${(result.downtimeMs / 1000).toFixed(1)} s, back after ${formatMs(result.returnMs)}`,
    );
    return result;
  } finally {
    // On failure the caller closes the clients, which ends the loops.
    running = false;
    abandoned = true;
  }
}

/** The promise's value, or undefined if it takes longer than `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function formatMs(ms: number | null): string {
  return ms === null ? "-" : `${(ms / 1000).toFixed(2)} s`;
}

async function watchRecovery(
  bench: BenchCluster,
  victim: Victim,
  scenario: Scenario,
  since: () => number,
  proceed: () => "go" | "stop",
): Promise<{
  detectedAtMs: number | null;
  returnedAtMs: number | null;
  newLeader: string | null;
  newLeaderAtMs: number | null;
}> {
  let detectedAtMs: number | null = null;
  let returnedAtMs: number | null = null;
  let newLeader: string | null = null;
  let newLeaderAtMs: number | null = null;
  const wantLeader = scenario.kind === "leader";
  while (proceed() === "go" && (returnedAtMs === null || (wantLeader && !newLeader))) {
    let status: ClusterStatus;
    try {
      status = await bench.status();
    } catch {
      await sleep(STATUS_POLL_MS);
      continue; // the topology manager is busy; try again
    }
    const at = Math.round(since());
    const now = victim.instances.map((v) =>
      status.instances.find((i) => i.stage === v.stage && i.index === v.index),
    );
    const back = now.every(
      (i, k) =>
        i !== undefined &&
        i.state === "running" &&
        i.incarnation > victim.instances[k]!.incarnation,
    );
    const down = now.some(
      (i, k) =>
        i === undefined ||
        i.state !== "running" ||
        i.incarnation !== victim.instances[k]!.incarnation,
    );
    if (detectedAtMs === null && down) detectedAtMs = at;
    if (returnedAtMs === null && back) returnedAtMs = at;
    if (wantLeader && !newLeader) {
      const leader = status.instances.find(
        (i) =>
          i.stage === "proposer" &&
          i.status.leader === true &&
          `proposer:${i.index}` !== victim.name,
      );
      if (leader) {
        newLeader = `proposer:${leader.index}`;
        newLeaderAtMs = at;
      }
    }
    await sleep(STATUS_POLL_MS);
  }
  return { detectedAtMs, returnedAtMs, newLeader, newLeaderAtMs };
}

function clientCounts(
  before: TaraClientStats[],
  clients: KvClient[],
  errors: number,
): ClientCounts {
  const sum = (key: keyof TaraClientStats) =>
    clients.reduce((total, c, i) => total + c.client.stats[key] - (before[i]?.[key] ?? 0), 0);
  return {
    errors,
    timeouts: sum("timeouts"),
    retries: sum("retries"),
    connectionsLost: sum("connectionsLost"),
  };
}

/** Reads every key back: each must hold its last acknowledged value (refused puts excepted). */
async function checkAcknowledged(
  clients: KvClient[],
  lastAcked: Map<string, string>,
  uncertain: Set<string>,
): Promise<{ lost: number; checked: number }> {
  const keys = [...lastAcked.keys()].filter((k) => !uncertain.has(k));
  const values = await Promise.all(keys.map((key, i) => clients[i % clients.length]!.get(key)));
  const lost = keys.filter((key, i) => values[i] !== lastAcked.get(key)).length;
  return { lost, checked: keys.length };
}

function gpcRollbacks(status: ClusterStatus): number {
  let most = 0;
  for (const i of status.instances) {
    const gpc = (i.status.checkpoints as { gpc?: { restores?: number } | null } | undefined)?.gpc;
    most = Math.max(most, gpc?.restores ?? 0);
  }
  return most;
}

/** The issue's Figure 6 targets, judged on the scenarios that ran. */
export function figure6Targets(results: ScenarioResult[]): Target[] {
  const of = (id: ScenarioId) => results.find((r) => r.scenario === id);
  const lpc = of("lpc-cs");
  const gpc = of("gpc");
  const leader = of("leader");
  const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const notRun = "not run";
  return [
    judged(
      {
        name: "LPC-CS committer crash: 100 ms intervals below 80% of the pre-crash mean",
        goal: "0",
        unit: "count",
        threshold: 1,
        better: "lower",
      },
      lpc?.below80AfterKill ?? null,
      lpc ? `${lpc.below80AfterKill} from the kill on (${lpc.preCrashBelow80} before it)` : notRun,
    ),
    // GPC answers in bursts, one per global checkpoint, so many 100 ms intervals are empty
    // without any crash: the longest time without a reply is the downtime that means something.
    judged(
      {
        name: "GPC committer crash: downtime (longest time without a reply)",
        goal: "< 3 s",
        unit: "ms",
        threshold: 3000,
        better: "lower",
      },
      gpc?.longestGapMs ?? null,
      gpc
        ? `${s(gpc.longestGapMs)} (before the kill ${s(gpc.preCrashLongestGapMs)}); ` +
            `intervals below 10%: ${s(gpc.downtimeMs)} (before ${s(gpc.preCrashDowntimeMs)})`
        : notRun,
    ),
    judged(
      {
        name: `leader crash (${leader ? MECHANISM_NAMES[leader.mechanism] : "-"}): service back`,
        goal: "within 1 s",
        unit: "ms",
        threshold: 1000,
        better: "lower",
      },
      // Never back: as long as the run lasted after the kill.
      leader ? (leader.serviceBackMs ?? leader.durationMs - leader.killAtMs) : null,
      leader
        ? `${formatMs(leader.serviceBackMs)} (no reply for ${s(leader.longestGapMs)})`
        : notRun,
    ),
  ];
}

/** One scenario over repeated runs: each figure's median and min-max (null: no run had it). */
export interface ScenarioSpread {
  scenario: ScenarioId;
  title: string;
  /** Runs in which the scenario ran (a failed one does not count). */
  runs: number;
  preCrashPerSec: Spread | null;
  below80AfterKill: Spread | null;
  longestGapMs: Spread | null;
  serviceBackMs: Spread | null;
  returnMs: Spread | null;
  afterRecoveryShare: Spread | null;
  /** Acknowledged writes lost, over all runs (null: none checked). */
  lostAcknowledged: number | null;
}

const SPREAD_FIELDS = [
  "preCrashPerSec",
  "below80AfterKill",
  "longestGapMs",
  "serviceBackMs",
  "returnMs",
  "afterRecoveryShare",
] as const;

/** Each scenario's figures over repeated runs (`runs`: each run's results). */
export function summarizeScenarios(runs: readonly (readonly ScenarioResult[])[]): ScenarioSpread[] {
  return groupBy(runs.flat(), (r) => r.scenario).map((all) => {
    const spreads = Object.fromEntries(
      SPREAD_FIELDS.map((field) => [
        field,
        spreadOf(all.flatMap((r) => (r[field] === null ? [] : [r[field]]))),
      ]),
    ) as Record<(typeof SPREAD_FIELDS)[number], Spread | null>;
    const checked = all.filter((r) => r.lostAcknowledged !== null);
    return {
      scenario: all[0]!.scenario,
      title: all[0]!.title,
      runs: all.length,
      ...spreads,
      lostAcknowledged:
        checked.length === 0 ? null : checked.reduce((sum, r) => sum + r.lostAcknowledged!, 0),
    };
  });
}

export interface Figure6Report {
  bench: "figure6";
  startedAt: string;
  options: Omit<Figure6Options, "log" | "step">;
  machine: MachineFacts;
  results: ScenarioResult[];
  failures: ScenarioFailure[];
  targets: Target[];
}

/** A timeline in whole seconds: each point at the middle of its second. */
function perSecond(r: ScenarioResult): { t_s: number; per_s: number }[] {
  const per = 1000 / r.intervalMs;
  const rows: { t_s: number; per_s: number }[] = [];
  for (let i = 0; i + per <= r.timeline.length; i += per) {
    const count = r.timeline.slice(i, i + per).reduce((a, b) => a + b, 0);
    rows.push({ t_s: (i * r.intervalMs) / 1000 + 0.5, per_s: count });
  }
  return rows;
}

/** A result as summary.json and the JSON lines show it: the timeline is in the CSV. */
export function withoutTimeline({
  timeline: _,
  ...rest
}: ScenarioResult): Omit<ScenarioResult, "timeline"> {
  return rest;
}

/** Files of a run, by kind. */
export interface Figure6Files {
  summary: string;
  timeline: string;
  plots: string[];
}

/**
 * Writes the run into `dir`: summary.json (everything but the timelines), timeline.csv
 * (scenario, t_ms, completed), and per scenario and for all together a timeline plot.
 */
export async function writeFigure6Results(
  dir: string,
  report: Figure6Report,
): Promise<Figure6Files> {
  const summary = writeJson(dir, "summary", {
    ...report,
    results: report.results.map(withoutTimeline),
  });
  const rows = report.results.flatMap((r) =>
    r.timeline.map((completed, i) => ({ scenario: r.scenario, t_ms: i * r.intervalMs, completed })),
  );
  const timeline = writeCsv(dir, "timeline", rows);
  const plots: string[] = [];
  const y = { field: "completed", title: `requests completed per ${INTERVAL_MS} ms` };
  const x = { field: "t_s", title: "seconds since the start of the measured run" };
  for (const r of report.results) {
    // One rule: a second one for the return would print its label over the first.
    const back = r.returnMs === null ? "not back" : `back after ${formatMs(r.returnMs)}`;
    const rules = [{ x: r.killAtMs / 1000, label: `SIGKILL ${r.victim} (${back})` }];
    const files = await renderPlot(dir, `timeline-${r.scenario}`, {
      title: `${r.title}: ${r.clients} closed-loop clients`,
      x,
      y,
      rows: r.timeline.map((completed, i) => ({ t_s: (i * r.intervalMs) / 1000, completed })),
      marks: "line",
      rules,
    });
    plots.push(files.svg, files.png);
  }
  if (report.results.length > 1) {
    // All together at 100 ms the lines hide each other: per second here, per 100 ms above.
    const first = report.results[0]!;
    const files = await renderPlot(dir, "timeline", {
      title: `Node-crash impact (Figure 6): ${first.clients} closed-loop clients`,
      x,
      y: { field: "per_s", title: "requests completed per second" },
      series: "scenario",
      rows: report.results.flatMap((r) =>
        perSecond(r).map((row) => ({ ...row, scenario: r.short })),
      ),
      marks: "line+points",
      rules: [{ x: first.killAtMs / 1000, label: "SIGKILL" }],
    });
    plots.push(files.svg, files.png);
  }
  return { summary, timeline, plots };
}
