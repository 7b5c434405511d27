/** Small topologies for plan, routing and router tests. Stage code is never run here. */
import type { Source, Stage } from "../../../src/platform/api/stage.js";
import type { Subscription } from "../../../src/platform/api/topology.js";

export const noopSource = (): Source => ({});
export const noopStage = (): Stage => ({ onTuple() {} });

export function sub(
  stage: string,
  stream: string,
  grouping: Subscription["grouping"],
): Subscription {
  return { stage, stream, grouping };
}
