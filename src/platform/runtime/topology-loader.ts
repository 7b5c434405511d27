import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { TopologyError, type Topology, type TopologyFactory } from "../api/topology.js";
import { pack, type PhysicalPlan } from "../plan/physical-plan.js";
import type { ClusterConfig } from "./config.js";

/** Topologies `tara start --topology <name>` knows by name. */
const builtIn: Record<string, URL> = {
  zk: new URL("../../zk/topology.js", import.meta.url),
  kv: new URL("../../tara/kv/topology.js", import.meta.url),
  demo: new URL("../demo/topology.js", import.meta.url),
};

export function topologyNames(): string[] {
  return Object.keys(builtIn);
}

export async function loadTopology(
  spec: string,
  params: Readonly<Record<string, string>>,
): Promise<Topology> {
  const url = builtIn[spec] ?? pathToFileURL(resolve(spec));
  let module: { createTopology?: TopologyFactory };
  try {
    module = (await import(url.href)) as { createTopology?: TopologyFactory };
  } catch (error) {
    throw new TopologyError(
      `cannot load topology ${JSON.stringify(spec)} (built in: ${topologyNames().join(", ")}): ` +
        (error as Error).message,
    );
  }
  if (typeof module.createTopology !== "function") {
    throw new TopologyError(`topology module ${spec} does not export createTopology(params)`);
  }
  return module.createTopology(params);
}

export async function loadPlan(cluster: ClusterConfig): Promise<PhysicalPlan> {
  const topology = await loadTopology(cluster.topology, cluster.params);
  return pack(topology, {
    containers: cluster.containers,
    allowColocation: cluster.allowColocation,
  });
}
