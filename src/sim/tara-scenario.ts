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
 */
import type { ReplicaId, Source, Stage } from "../platform/api/stage.js";
import { parseTaraConfig, type TaraConfig } from "../tara/config.js";
import {
  decodeKvReply,
  encodeKvOp,
  KvStateMachine,
  type KvOp,
} from "../tara/kv/kv-state-machine.js";
import {
  streams,
  type Accept,
  type Checkpointed,
  type ClientReply,
  type ClientRequest,
  type Promise as PromiseMessage,
  type ProposerMessage,
} from "../tara/messages.js";
import { Committer } from "../tara/stages/committer.js";
import { Executor } from "../tara/stages/executor.js";
import { Proposer } from "../tara/stages/proposer.js";
import { StableCheckpoints } from "../tara/stages/quorum.js";
import { stages, taraTopology } from "../tara/topology.js";
import { checkLinearizable, type Operation } from "./linearizability.js";
import { Random } from "./random.js";
import { Simulator, type SimCheckpointing } from "./simulator.js";

export const scenarioMechanisms = ["pdc", "lpc"] as const;
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
  /** How replicas are checkpointed (default pdc); lpc: LPC with instance checkpoints. */
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

  // Agreement checkers.
  const executedValue = new Map<number, string>();
  const acceptedValue = new Map<string, string>();
  const checkpointDigest = new Map<number, string>();
  const promisedBy = new Map<string, number>();
  // What each committer (by index, over its incarnations) sent: the latest accept per s, and the
  // highest view it promised or accepted in. A restored committer must hold all of it.
  const sentAccepts = new Map<number, Map<number, { v: number; d: string }>>();
  const sentView = new Map<number, number>();
  let restored = 0;
  const trueStable = new StableCheckpoints(f + 1);
  let maxExecuted = 0;
  let views = 0;

  const topology = taraTopology({
    name: "tara-sim",
    config,
    createMachine: () => new KvStateMachine(),
    observer: (executor, s, d) => {
      const known = executedValue.get(s);
      if (known === undefined) executedValue.set(s, d);
      else if (known !== d)
        violation(`executor ${executor} executed ${d} at ${s}, another ${known}`);
      maxExecuted = Math.max(maxExecuted, s);
    },
  });

  // A committer's promises bind every incarnation under LPC (restored), only its own under PDC.
  const incarnationKey = (id: ReplicaId) =>
    lpc ? `${id.index}` : `${id.index}/${sim.incarnation(id)}`;
  const noteView = (c: number, v: number) => sentView.set(c, Math.max(sentView.get(c) ?? 0, v));
  const sim = new Simulator({
    seed,
    topology,
    checkpoints: lpc ? lpcCheckpointing(seed) : { mechanism: "pdc" },
    onRestored: (id, incarnation, stage) => {
      if (id.stage === stages.committer && incarnation > 1) checkRestored(id, stage);
    },
    network: {
      minDelayMs: 0.1,
      maxDelayMs: 3,
      lossOnCrash: 0.5,
      stallChance: (options.faults ?? true) ? 0.003 : 0,
      stallMs: 200,
    },
    onExternalOutput: (_from, output) => onReply(output as ClientReply),
    onEmit: (from, stream, tuple) => {
      if (stream === streams.proposals) {
        const message = tuple as ProposerMessage;
        if (message.t === "propose" && message.s > trueStable.stable + config.window) {
          violation(`proposal at ${message.s} beyond stable ${trueStable.stable} + W`);
        }
        if (message.t === "prepare") views++;
      } else if (stream === streams.accepts) {
        const { v, s, d } = tuple as Accept;
        const key = `${v}:${s}`;
        const known = acceptedValue.get(key);
        if (known === undefined) acceptedValue.set(key, d);
        else if (known !== d) violation(`two values accepted in view ${v} at ${s}`);
        const promised = promisedBy.get(incarnationKey(from)) ?? 0;
        if (v < promised)
          violation(`committer ${from.index} accepted view ${v} after promising ${promised}`);
        if (lpc) {
          let sent = sentAccepts.get(from.index);
          if (!sent) sentAccepts.set(from.index, (sent = new Map()));
          const before = sent.get(s);
          if (!before || v >= before.v) sent.set(s, { v, d });
          noteView(from.index, v);
        }
      } else if (stream === streams.votes) {
        const vote = tuple as PromiseMessage;
        if (vote.t === "promise") {
          const key = incarnationKey(from);
          promisedBy.set(key, Math.max(promisedBy.get(key) ?? 0, vote.v));
          if (lpc) noteView(from.index, vote.v);
        }
      } else if (stream === streams.checkpointed) {
        const { e, s, d } = tuple as Checkpointed;
        const known = checkpointDigest.get(s);
        if (known === undefined) checkpointDigest.set(s, d);
        else if (known !== d) violation(`executor ${e} checkpoint at ${s} differs`);
        trueStable.report(e, s, d, () => undefined);
      }
    },
  });
  const random = sim.random.fork();

  /** Instance checkpoints lose nothing externalised: checked as a committer is restored. */
  function checkRestored(id: ReplicaId, stage: Stage | Source): void {
    const committer = stage as Committer;
    restored++;
    const view = sentView.get(id.index) ?? 0;
    if (committer.promised < view) {
      violation(`committer ${id.index} restored view ${committer.promised}, had sent ${view}`);
    }
    const sent = sentAccepts.get(id.index);
    if (!sent) return;
    for (const [s, { v, d }] of sent) {
      // At or below its stable checkpoint every s is decided: nothing to keep (nor to check).
      if (s <= committer.lw) {
        sent.delete(s);
        continue;
      }
      const got = committer.accepted.get(s);
      if (!got || got.v < v || (got.v === v && got.d !== d)) {
        const had = got ? `${got.v}:${got.d}` : "nothing";
        violation(`committer ${id.index} restored ${had} at ${s}, had sent an accept ${v}:${d}`);
      }
    }
  }

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

  // Faults.
  const faults: string[] = [];
  const name = (id: ReplicaId) => `${id.stage}:${id.index}`;
  // Recovering counts as down (it votes only once restored); a passive committer (PDC, or a
  // broken chain under LPC) is down for good.
  const isDown = (id: ReplicaId): boolean => {
    if (!sim.isAlive(id) || sim.isPaused(id) || sim.isRecovering(id)) return true;
    return id.stage === stages.committer && !sim.stage<Committer>(id).active;
  };
  const downIn = (stage: string) => sim.replicasOf(stage).filter(isDown).length;

  function leader(): ReplicaId | undefined {
    return sim
      .replicasOf(stages.proposer)
      .find((id) => sim.isAlive(id) && sim.stage<Proposer>(id).role === "leader");
  }

  function injectFault(): void {
    if (!issuing) return;
    sim.schedule(random.between(20, 200), injectFault);
    const candidates = sim.replicas().filter((id) => !isDown(id) && downIn(id.stage) < f);
    if (candidates.length === 0) return;
    if (lpc && random.chance(0.04)) {
      // The checkpoint store is away: every replica's writes fail and are retried meanwhile.
      const ms = random.between(20, 300);
      faults.push(`${sim.now.toFixed(0)} store outage ${ms.toFixed(0)}ms`);
      sim.store!.outage(ms);
      return;
    }
    const current = leader();
    const committers = candidates.filter((id) => id.stage === stages.committer);
    const target =
      current && candidates.some((id) => name(id) === name(current)) && random.chance(0.3)
        ? current
        : // Under LPC, committers more often: their restores are what is new.
          lpc && committers.length > 0 && random.chance(0.3)
          ? random.pick(committers)
          : random.pick(candidates);
    if (random.chance(0.15)) {
      // Its stream manager restarts: what it sent and was still on the way is lost.
      faults.push(`${sim.now.toFixed(0)} drop in-flight from ${name(target)}`);
      sim.dropInFlight(target);
      return;
    }
    if (random.chance(0.35)) {
      const ms = random.between(20, config.viewChangeMs * 4);
      faults.push(`${sim.now.toFixed(0)} pause ${name(target)} ${ms.toFixed(0)}ms`);
      sim.pause(target);
      sim.schedule(ms, () => {
        if (sim.isPaused(target)) sim.resume(target);
      });
      return;
    }
    if (lpc && target.stage === stages.committer && random.chance(0.5)) {
      crashMidWrite(target, 100);
      return;
    }
    crash(target, "");
  }

  function crash(target: ReplicaId, how: string): void {
    faults.push(`${sim.now.toFixed(0)} crash ${name(target)}${how}`);
    sim.crash(target);
    sim.schedule(random.between(20, 800), () => {
      if (!sim.isAlive(target)) sim.restart(target);
    });
  }

  /** Crashes a committer once it has an instance write in flight (torn writes), if it can. */
  function crashMidWrite(target: ReplicaId, tries: number): void {
    if (!issuing || isDown(target) || downIn(target.stage) >= f) return;
    const log = sim.checkpointStatus(target)?.instance;
    if (log && log.recorded > log.durable) crash(target, " mid-write");
    else if (tries > 0) sim.schedule(0.5, () => crashMidWrite(target, tries - 1));
    else crash(target, "");
  }

  sim.start();
  for (const client of clients) sim.schedule(random.between(0, THINK_MS), () => issue(client));
  if (options.faults ?? true) sim.schedule(random.between(100, 300), injectFault);
  sim.runUntil(safetyMs);

  // Heal, stop issuing, and require every request to complete.
  issuing = false;
  sim.store?.heal();
  for (const id of sim.replicas()) {
    if (!sim.isAlive(id)) sim.restart(id);
    else if (sim.isPaused(id)) sim.resume(id);
  }
  const healedAt = sim.now;
  const open = () => clients.some((client) => client.pending);
  if (!sim.runWhile(open, healedAt + livenessMs)) {
    const stuck = clients.filter((client) => client.pending).map((c) => `${c.c}/${c.pending!.r}`);
    violation(`liveness: requests ${stuck.join(", ")} incomplete ${livenessMs}ms after healing`);
  }

  // Every executor converges on the same state.
  const executors = sim.replicasOf(stages.executor);
  const converged = () => {
    const at = executors.map((id) => sim.stage<Executor>(id).lastExecuted);
    return at.every((s) => s === maxExecuted);
  };
  if (!sim.runWhile(() => !converged(), sim.now + livenessMs)) {
    const at = executors.map((id) => sim.stage<Executor>(id).lastExecuted);
    violation(`executors did not converge: at ${at.join(", ")}, executed up to ${maxExecuted}`);
  } else {
    const digests = new Set(executors.map((id) => sim.stage<Executor>(id).stateDigest()));
    if (digests.size > 1) violation(`executors at ${maxExecuted} have ${digests.size} states`);
  }

  const check = checkLinearizable(history);
  if (check.ok === false) violation(`not linearizable on ${check.key}: ${check.reason}`);

  return {
    seed,
    f,
    mechanism,
    ok: violations.length === 0,
    violations,
    completed,
    faults,
    lastExecuted: maxExecuted,
    views,
    linearizable: check.ok === "unknown" ? "unknown" : check.ok,
    events: sim.stats.events,
    restored,
    brokenChains: sim.stats.brokenChains,
    replay: replayCommand(seed, f, mechanism),
    ...(violations.length > 0
      ? {
          replicas: Object.fromEntries(
            sim.replicas().map((id) => {
              const checkpoints = sim.checkpointStatus(id);
              const status = { alive: sim.isAlive(id), ...sim.status(id) };
              return [name(id), checkpoints ? { ...status, checkpoints } : status];
            }),
          ),
        }
      : {}),
  };
}
