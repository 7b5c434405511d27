/**
 * The seeded faults every TARA scenario injects (the key-value one and the ZooKeeper one), and
 * the healing and convergence check that end its safety phase. At most f replicas of a stage
 * are down at a time: crashed (restarted 20-800 ms later), paused (a stalled process), or, a
 * committer, passive. Other faults: the in-flight output of a replica lost (its stream manager
 * restarted), a store outage (LPC), and a committer crashed with an instance write in flight
 * (torn writes, LPC).
 */
import type { ReplicaId } from "../platform/api/stage.js";
import type { Committer } from "../tara/stages/committer.js";
import type { Proposer } from "../tara/stages/proposer.js";
import { stages } from "../tara/topology.js";
import type { Random } from "./random.js";
import type { Simulator } from "./simulator.js";

export interface FaultOptions {
  readonly f: number;
  /** A checkpoint store (LPC, GPC): store outages. */
  readonly store: boolean;
  /** LPC: committers crashed (mid-write among others) more often. */
  readonly lpc: boolean;
  /** Pauses last up to 4x this. */
  readonly viewChangeMs: number;
  /** Faults are injected while this holds (the safety phase). */
  readonly active: () => boolean;
}

export interface Faults {
  /** What was injected, one line each with its virtual time, for the run's report. */
  readonly log: string[];
  /** Starts injecting, 100-300 ms from now. */
  start(): void;
  /** Ends the store's outage, restarts every crashed replica and resumes every paused one. */
  heal(): void;
}

export const replicaName = (id: ReplicaId) => `${id.stage}:${id.index}`;

export function injectFaults(sim: Simulator, random: Random, options: FaultOptions): Faults {
  const { f, lpc, store } = options;
  const log: string[] = [];
  const name = replicaName;
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

  function inject(): void {
    if (!options.active()) return;
    sim.schedule(random.between(20, 200), inject);
    const candidates = sim.replicas().filter((id) => !isDown(id) && downIn(id.stage) < f);
    if (candidates.length === 0) return;
    if (store && random.chance(0.04)) {
      // The checkpoint store is away: every replica's writes fail and are retried meanwhile.
      const ms = random.between(20, 300);
      log.push(`${sim.now.toFixed(0)} store outage ${ms.toFixed(0)}ms`);
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
      log.push(`${sim.now.toFixed(0)} drop in-flight from ${name(target)}`);
      sim.dropInFlight(target);
      return;
    }
    if (random.chance(0.35)) {
      const ms = random.between(20, options.viewChangeMs * 4);
      log.push(`${sim.now.toFixed(0)} pause ${name(target)} ${ms.toFixed(0)}ms`);
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
    log.push(`${sim.now.toFixed(0)} crash ${name(target)}${how}`);
    sim.crash(target);
    sim.schedule(random.between(20, 800), () => {
      if (!sim.isAlive(target)) sim.restart(target);
    });
  }

  /** Crashes a committer once it has an instance write in flight (torn writes), if it can. */
  function crashMidWrite(target: ReplicaId, tries: number): void {
    if (!options.active() || isDown(target) || downIn(target.stage) >= f) return;
    const instance = sim.checkpointStatus(target)?.instance;
    if (instance && instance.recorded > instance.durable) crash(target, " mid-write");
    else if (tries > 0) sim.schedule(0.5, () => crashMidWrite(target, tries - 1));
    else crash(target, "");
  }

  return {
    log,
    start: () => sim.schedule(random.between(100, 300), inject),
    heal: () => {
      sim.store?.heal();
      for (const id of sim.replicas()) {
        if (!sim.isAlive(id)) sim.restart(id);
        else if (sim.isPaused(id)) sim.resume(id);
      }
    },
  };
}
