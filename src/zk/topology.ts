/**
 * The replicated ZooKeeper service `tara start` runs by default: TARA with the ZooKeeper state
 * machine, clients through the gateways' ZooKeeper front ends. Parameters: TARA's (see
 * ../tara/config.ts) and the service's: `tickTime` (ms; session timeouts are clamped to 2-20
 * ticks) and `containerCheckMs` (how often empty containers and expired TTL nodes go).
 */
import { z } from "zod";
import type { Topology } from "../platform/api/topology.js";
import { parseTaraConfig } from "../tara/config.js";
import { gatewayPort } from "../tara/gateway/port.js";
import { taraTopology } from "../tara/topology.js";
import { DEFAULT_ZK_CONFIG, ZkStateMachine } from "./zk-state-machine.js";

const serviceSchema = z
  .object({
    tickTime: z.coerce.number().int().min(1).max(600_000).default(DEFAULT_ZK_CONFIG.tickTime),
    containerCheckMs: z.coerce
      .number()
      .int()
      .min(1)
      .max(86_400_000)
      .default(DEFAULT_ZK_CONFIG.containerCheckMs),
  })
  .strict();

export function createTopology(params: Readonly<Record<string, string>>): Topology {
  const { tickTime, containerCheckMs, ...tara } = params;
  const service = serviceSchema.parse({ tickTime, containerCheckMs });
  return taraTopology({
    name: "zk",
    config: parseTaraConfig(tara),
    createMachine: () => new ZkStateMachine(service),
    ports: { source: gatewayPort("source"), sink: gatewayPort("sink") },
    gateway: new URL("./gateway-main.js", import.meta.url),
  });
}
