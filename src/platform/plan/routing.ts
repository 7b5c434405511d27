/**
 * Groupings turned into destination task ids. The emitting replica computes destinations
 * (it has the physical plan), so the stream managers route opaque payloads without decoding
 * them and can fan one payload out to several replicas of a container.
 */
import { pack as msgpack } from "msgpackr";
import type { Tuple } from "../api/stage.js";
import { TopologyError, type Grouping } from "../api/topology.js";
import type { PhysicalPlan } from "./physical-plan.js";

interface Consumer {
  readonly stage: string;
  readonly grouping: Grouping;
  /** Task ids of the consumer's replicas, by index. */
  readonly tasks: readonly number[];
  /** Next replica of a shuffle consumer: each consumer rotates on its own. */
  shuffleNext: number;
}

export class RoutingTable {
  private readonly consumers = new Map<string, Consumer[]>();

  /**
   * @param stage the emitting stage
   * @param shuffleStart where this replica starts its shuffle rotation (spreads emitters)
   */
  constructor(plan: PhysicalPlan, stage: string, shuffleStart = 0) {
    for (const spec of plan.topology.stages) {
      for (const input of spec.inputs) {
        if (input.stage !== stage) continue;
        const tasks = plan.tasks.filter((t) => t.stage === spec.name).map((t) => t.task);
        const list = this.consumers.get(input.stream) ?? [];
        list.push({ stage: spec.name, grouping: input.grouping, tasks, shuffleNext: shuffleStart });
        this.consumers.set(input.stream, list);
      }
    }
  }

  hasStream(stream: string): boolean {
    return this.consumers.has(stream);
  }

  /** Destinations of a tuple emitted with `emit`; direct consumers get nothing from it. */
  destinations(stream: string, tuple: Tuple): number[] {
    const dests: number[] = [];
    for (const consumer of this.consumers.get(stream) ?? []) {
      const { grouping, tasks } = consumer;
      switch (grouping.kind) {
        case "all":
          dests.push(...tasks);
          break;
        case "shuffle":
          dests.push(tasks[consumer.shuffleNext++ % tasks.length]!);
          break;
        case "fields":
          dests.push(tasks[fieldsHash(tuple, grouping.fields) % tasks.length]!);
          break;
        case "direct":
          break;
      }
    }
    return dests;
  }

  /** Destinations of `emitDirect(stream, index)`: replica `index` of every direct consumer. */
  directDestinations(stream: string, index: number): number[] {
    const dests: number[] = [];
    for (const consumer of this.consumers.get(stream) ?? []) {
      if (consumer.grouping.kind !== "direct") continue;
      const task = consumer.tasks[index];
      if (task === undefined) {
        throw new TopologyError(
          `emitDirect on ${stream}: ${consumer.stage} has no replica ${index} ` +
            `(parallelism ${consumer.tasks.length})`,
        );
      }
      dests.push(task);
    }
    return dests;
  }
}

/**
 * FNV-1a over the msgpack encoding of the grouping fields' values, then murmur3's finaliser
 * (FNV-1a's low bits depend only on the inputs' low bits, which would send e.g. all even keys
 * to one of two replicas). The same fields give the same replica in every process. A tuple
 * that is not an object has no fields: an error.
 */
export function fieldsHash(tuple: Tuple, fields: readonly string[]): number {
  if (typeof tuple !== "object" || tuple === null) {
    throw new TopologyError(`fields grouping needs an object tuple, got ${typeof tuple}`);
  }
  const record = tuple as Record<string, unknown>;
  const bytes = msgpack(fields.map((f) => record[f] ?? null));
  let hash = 0x811c9dc5;
  for (const byte of bytes) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193);
  }
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}
