/**
 * One simulated run of TARA replicating the key-value service: closed-loop clients, seeded
 * crashes, restarts and pauses of any replica of any stage (the leader included, never more
 * than f of a stage down at once), then a healed phase in which every request must complete.
 *
 * Checkers, on what the replicas emit and execute (docs/PROTOCOLS.md, invariants):
 * - agreement: no two executions name different values for one sequence number, and no two
 *   accepts different values for one view and sequence number;
 * - a committer incarnation never accepts below a view it promised;
 * - the leader never proposes beyond the stable checkpoint + W;
 * - checkpoints at one sequence number have one digest, and live executors end in one state;
 * - the clients' history is linearizable against the key-value model;
 * - liveness: once faults stop, every request completes within a bound.
 *
 * Under LPC (`mechanism: "lpc"`) the platform's instance and group checkpoints run against the
 * simulated store: a restarted committer is restored and votes again, so committers may crash
 * and restart any number of times (never more than f down at once), and the store may be away
 * for a while. One more checker then: a restored committer holds every accept it had sent
 * (the latest per sequence number above its stable checkpoint) and every view it had promised,
 * i.e. instance checkpoints lose nothing that left the replica.
 *
 * Under GPC (`mechanism: "gpc"`) the platform's global checkpoints run too (a checkpoint every
 * 20-100 virtual ms, markers on the links, snapshots in the simulated store): every crash rolls
 * the whole topology back to the last global checkpoint and replays the sources' tuples since,
 * and replies leave only once a global checkpoint covers them. The checks hold per run and, up
 * to the rollback's cut, across runs (tara-invariants.ts).
 */
import { parseTaraConfig, type TaraConfig } from "../tara/config.js";
import {
  decodeKvReply,
  encodeKvOp,
  KvStateMachine,
  type KvOp,
} from "../tara/kv/kv-state-machine.js";
import type { ClientReply, ClientRequest } from "../tara/messages.js";
import { stages, taraTopology } from "../tara/topology.js";
import { injectFaults, replicaName } from "./faults.js";
import { checkLinearizable, type Operation } from "./linearizability.js";
import { Random } from "./random.js";
import { Simulator, type SimCheckpointing } from "./simulator.js";
import { rollbackCut, TaraInvariants } from "./tara-invariants.js";

export const scenarioMechanisms = ["pdc", "lpc", "gpc"] as const;
export type ScenarioMechanism = (typeof scenarioMechanisms)[number];

export interface ScenarioOptions {
  seed: number;
  f: number;
  clients?: number;
  keys?: number;
  /** Virtual milliseconds of load with faults. */
  safetyMs?: number;
  /** After healing, every request must complete within this many virtual milliseconds. */
  livenessMs?: number;
  faults?: boolean;
  /** TARA parameters (small K and W, short timeouts: many checkpoints and view changes). */
  config?: Record<string, number>;
  /**
   * How replicas are checkpointed (default pdc); lpc: LPC with instance checkpoints; gpc:
   * global checkpoints with rollbacks.
   */
  mechanism?: ScenarioMechanism;
}

export interface ScenarioReport {
  seed: number;
  f: number;
  mechanism: ScenarioMechanism;
  ok: boolean;
  violations: string[];
  completed: number;
  faults: string[];
  lastExecuted: number;
  views: number;
  linearizable: boolean | "unknown";
  events: number;
  /** LPC: committer restarts whose restored state was checked, and recoveries that found none. */
  restored: number;
  brokenChains: number;
  /** GPC: deltas of recording stages checked against the live state. */
  deltasChecked: number;
  /** GPC: rollbacks of the whole topology. */
  rollbacks: number;
  replay: string;
  /** Every replica's last status, when the run failed. */
  replicas?: Record<string, Record<string, unknown>>;
}

const CLIENT_RETRY_MS = 400;
const THINK_MS = 20;

export const simConfig = {
  checkpointInterval: 10,
  window: 25,
  batchMax: 3,
  batchDelayMs: 1,
  heartbeatMs: 20,
  viewChangeMs: 150,
  stateTimeoutMs: 60,
  requestRetentionMs: 2000,
};

interface SimClient {
  c: number;
  r: number;
  attempts: number;
  pending?: { r: number; op: KvOp; record: Operation };
  lastSeen: Map<string, string | null>;
}

export function replayCommand(seed: number, f: number, mechanism: ScenarioMechanism): string {
  return `npx tara sim --seed ${seed} --f ${f} --mechanism ${mechanism}`;
}

/**
 * LPC's checkpointing for one seed: the batch factor, batch delay and compaction interval vary
 * per seed (small compaction intervals exercise bases and pruning), from a stream of their own.
 */
function lpcCheckpointing(seed: number): SimCheckpointing {
  const random = new Random(Math.imul((seed ^ 0x68e31da4) >>> 0, 0x1b873593) >>> 0);
  return {
    mechanism: "lpc-cs",
    instance: true,
    batchFactor: random.pick([1, 1, 3]),
    batchDelayMs: random.pick([0, 1, 2]),
    compactEvery: random.pick([2, 5, 20]),
  };
}

/** GPC's checkpoint interval for one seed, from a stream of its own. */
export function gpcCheckpointing(seed: number): SimCheckpointing {
  const random = new Random(Math.imul((seed ^ 0x1d8e4e27) >>> 0, 0x2545f491) >>> 0);
  return { mechanism: "gpc", gpcIntervalMs: random.pick([20, 50, 100]) };
}

/** The simulator's checkpointing for a scenario's mechanism. */
export function scenarioCheckpointing(
  mechanism: ScenarioMechanism,
  seed: number,
): SimCheckpointing {
  if (mechanism === "lpc") return lpcCheckpointing(seed);
  if (mechanism === "gpc") return gpcCheckpointing(seed);
  return { mechanism: "pdc" };
}

export function runScenario(options: ScenarioOptions): ScenarioReport {
  const { seed, f } = options;
  const mechanism = options.mechanism ?? "pdc";
  const lpc = mechanism === "lpc";
  const clientCount = options.clients ?? 5;
  const keyCount = options.keys ?? 3;
  const safetyMs = options.safetyMs ?? 3000;
  const livenessMs = options.livenessMs ?? 15_000;
  const config: TaraConfig = parseTaraConfig({ f, ...simConfig, ...options.config });
  const violations: string[] = [];
  const violation = (text: string) => {
    if (violations.length < 20) violations.push(`t=${sim.now.toFixed(1)} ${text}`);
  };

  // TARA's invariants (tara-invariants.ts).
  const invariants: TaraInvariants = new TaraInvariants(config, mechanism, violation, {
    incarnation: (id) => sim.incarnation(id),
    run: (id) => sim.gpcRun(id),
  });

  const topology = taraTopology({
    name: "tara-sim",
    config,
    createMachine: () => new KvStateMachine(),
    observer: invariants.onExecuted,
  });

  // A committer's promises bind every incarnation under LPC (restored), only its own under PDC.
  const sim = new Simulator({
    seed,
    topology,
    checkpoints: scenarioCheckpointing(mechanism, seed),
    onRestored: invariants.onRestored,
    onRolledBack: invariants.onRolledBack,
    onRollback: (run, checkpoint) => invariants.onRollback(run, rollbackCut(sim, checkpoint)),
    network: {
      minDelayMs: 0.1,
      maxDelayMs: 3,
      lossOnCrash: 0.5,
      stallChance: (options.faults ?? true) ? 0.003 : 0,
      stallMs: 200,
    },
    onExternalOutput: (_from, output) => onReply(output as ClientReply),
    onEmit: invariants.onEmit,
  });
  const random = sim.random.fork();

  // Clients.
  const keys = Array.from({ length: keyCount }, (_, i) => `k${i}`);
  const clients: SimClient[] = Array.from({ length: clientCount }, (_, i) => ({
    c: i + 1,
    r: 0,
    attempts: 0,
    lastSeen: new Map(),
  }));
  const history: Operation[] = [];
  const sources = sim.replicasOf(stages.requestSource);
  let issuing = true;
  let completed = 0;

  function chooseOp(client: SimClient): KvOp {
    const key = random.pick(keys);
    const roll = random.next();
    if (roll < 0.4) return { type: "get", key };
    const value = `${client.c}.${client.r}`;
    if (roll < 0.8) return { type: "put", key, value };
    if (roll < 0.9) return { type: "delete", key };
    return { type: "cas", key, expected: client.lastSeen.get(key) ?? null, value };
  }

  function issue(client: SimClient): void {
    if (!issuing || client.pending) return;
    client.r++;
    client.attempts = 0;
    const op = chooseOp(client);
    const record: Operation = { client: `c${client.c}`, op, invokedAt: sim.now };
    history.push(record);
    client.pending = { r: client.r, op, record };
    send(client);
  }

  function send(client: SimClient): void {
    const pending = client.pending!;
    const source = sources[(client.c + client.attempts) % sources.length]!;
    const request: ClientRequest = { c: client.c, r: pending.r, g: 0, op: encodeKvOp(pending.op) };
    sim.deliverExternal(source, request);
    const attempt = client.attempts;
    sim.schedule(CLIENT_RETRY_MS, () => {
      if (client.pending?.r === pending.r && client.attempts === attempt) {
        client.attempts++;
        send(client);
      }
    });
  }

  function onReply(reply: ClientReply): void {
    const client = clients[reply.c - 1];
    if (!client) return violation(`reply for unknown client ${reply.c}`);
    if (reply.r > client.r)
      return violation(`reply to request ${reply.r} never sent by ${reply.c}`);
    const pending = client.pending;
    if (!pending || pending.r !== reply.r) return; // a late copy
    const result = decodeKvReply(reply.res);
    if (result.type === "error") return violation(`error reply ${result.message}`);
    pending.record.returnedAt = sim.now;
    pending.record.result = result;
    if (result.type === "get") client.lastSeen.set(pending.op.key, result.value);
    client.pending = undefined;
    completed++;
    sim.schedule(random.between(0, THINK_MS), () => issue(client));
  }

  const faults = injectFaults(sim, random, {
    f,
    store: mechanism !== "pdc",
    lpc,
    viewChangeMs: config.viewChangeMs,
    active: () => issuing,
  });

  sim.start();
  for (const client of clients) sim.schedule(random.between(0, THINK_MS), () => issue(client));
  if (options.faults ?? true) faults.start();
  sim.runUntil(safetyMs);

  // Heal, stop issuing, and require every request to complete.
  issuing = false;
  faults.heal();
  const healedAt = sim.now;
  const open = () => clients.some((client) => client.pending);
  if (!sim.runWhile(open, healedAt + livenessMs)) {
    const stuck = clients.filter((client) => client.pending).map((c) => `${c.c}/${c.pending!.r}`);
    violation(`liveness: requests ${stuck.join(", ")} incomplete ${livenessMs}ms after healing`);
  }

  // Every executor converges on the same state.
  invariants.checkConvergence(sim, livenessMs);
  invariants.checkDeltas(sim);

  const check = checkLinearizable(history);
  if (check.ok === false) violation(`not linearizable on ${check.key}: ${check.reason}`);

  return {
    seed,
    f,
    mechanism,
    ok: violations.length === 0,
    violations,
    completed,
    faults: faults.log,
    lastExecuted: invariants.maxExecuted,
    views: invariants.views,
    linearizable: check.ok === "unknown" ? "unknown" : check.ok,
    events: sim.stats.events,
    restored: invariants.restored,
    rollbacks: sim.gpc?.coordinator.stats.restores ?? 0,
    brokenChains: sim.stats.brokenChains,
    deltasChecked: sim.stats.deltasChecked,
    replay: replayCommand(seed, f, mechanism),
    ...(violations.length > 0
      ? {
          replicas: Object.fromEntries(
            sim.replicas().map((id) => {
              const checkpoints = sim.checkpointStatus(id);
              const status = { alive: sim.isAlive(id), ...sim.status(id) };
              return [replicaName(id), checkpoints ? { ...status, checkpoints } : status];
            }),
          ),
        }
      : {}),
  };
}
