/**
 * GPC's checkpoint markers travel as tuples on one extra stream per stage, numbered after its
 * declared outputs, from every replica to every replica downstream of it (whatever the
 * groupings), so they stay in order with the tuples on every path (docs/CHECKPOINTING.md).
 *
 * Edges are "forward" from a stage declared earlier to one declared later, and "back"
 * otherwise (TARA's feedback streams: votes, checkpoint reports, gaps, executor state
 * transfer). A replica records both kinds alike between its snapshot and their markers; a
 * replica without forward inputs is a source, which snapshots on its stream manager's command.
 */
import type { StageSpec } from "../api/topology.js";
import type { PhysicalPlan } from "./physical-plan.js";

/** The index of a stage's marker stream: one past its declared outputs. */
export function markerStream(spec: StageSpec): number {
  return spec.outputs.length;
}

function stageOrder(plan: PhysicalPlan): Map<string, number> {
  return new Map(plan.topology.stages.map((s, i) => [s.name, i]));
}

function tasksOf(plan: PhysicalPlan, stage: string): number[] {
  return plan.tasks.filter((t) => t.stage === stage).map((t) => t.task);
}

/** Every task consuming any stream of `stage`: where its replicas send markers. */
export function downstreamTasks(plan: PhysicalPlan, stage: string): number[] {
  const tasks = new Set<number>();
  for (const consumer of plan.topology.stages) {
    if (consumer.inputs.some((i) => i.stage === stage)) {
      for (const task of tasksOf(plan, consumer.name)) tasks.add(task);
    }
  }
  return [...tasks].sort((a, b) => a - b);
}

/** The tasks `stage`'s replicas receive markers from, split by edge kind. */
export function upstreamTasks(
  plan: PhysicalPlan,
  stage: string,
): { forward: number[]; back: number[] } {
  const order = stageOrder(plan);
  const spec = plan.topology.stages.find((s) => s.name === stage)!;
  const forward = new Set<number>();
  const back = new Set<number>();
  for (const producer of new Set(spec.inputs.map((i) => i.stage))) {
    const into = order.get(producer)! < order.get(stage)! ? forward : back;
    for (const task of tasksOf(plan, producer)) into.add(task);
  }
  return { forward: [...forward], back: [...back] };
}
