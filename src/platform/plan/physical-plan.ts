/**
 * Packing: replica i of every stage goes into container i mod C, so that a container never
 * hosts two replicas of one stage (independent failures) unless the deployment allows it.
 * Every replica gets a global task id (Heron's task_id): stages in declaration order, replicas
 * in index order.
 */
import type { ReplicaId } from "../api/stage.js";
import { TopologyError, type Topology } from "../api/topology.js";

export interface TaskPlacement extends ReplicaId {
  readonly task: number;
  readonly container: number;
}

export interface PhysicalPlan {
  readonly topology: Topology;
  readonly containers: number;
  readonly tasks: readonly TaskPlacement[];
}

export interface PackingOptions {
  readonly containers: number;
  /** Allow a stage with more replicas than containers (replicas then share containers). */
  readonly allowColocation?: boolean;
}

export function pack(topology: Topology, options: PackingOptions): PhysicalPlan {
  const { containers } = options;
  if (!Number.isInteger(containers) || containers < 1 || containers > 256) {
    throw new TopologyError(`containers must be an integer in 1..256, got ${containers}`);
  }
  const tasks: TaskPlacement[] = [];
  for (const spec of topology.stages) {
    if (spec.parallelism > containers && !options.allowColocation) {
      throw new TopologyError(
        `stage ${spec.name} has ${spec.parallelism} replicas but there are only ${containers} ` +
          `containers: two replicas would share a container (allow colocation to accept that)`,
      );
    }
    for (let index = 0; index < spec.parallelism; index++) {
      tasks.push({ stage: spec.name, index, task: tasks.length, container: index % containers });
    }
  }
  return { topology, containers, tasks };
}

export function tasksIn(plan: PhysicalPlan, container: number): TaskPlacement[] {
  return plan.tasks.filter((t) => t.container === container);
}

export function replicaName(replica: ReplicaId): string {
  return `${replica.stage}:${replica.index}`;
}

/** Parses `stage:index`. */
export function parseReplicaName(text: string): ReplicaId {
  const match = /^([a-z][a-z0-9-]*):(\d+)$/.exec(text);
  if (!match) throw new TopologyError(`expected <stage>:<index>, got ${JSON.stringify(text)}`);
  return { stage: match[1]!, index: Number(match[2]) };
}
