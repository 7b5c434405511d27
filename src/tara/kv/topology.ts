/**
 * The replicated key-value service `tara start` runs by default: TARA with the key-value
 * state machine, clients through the gateways. Parameters: TARA's (see ../config.ts), e.g.
 * `--param f=2 --param checkpointInterval=500`.
 */
import type { Topology } from "../../platform/api/topology.js";
import { parseTaraConfig } from "../config.js";
import { gatewayPort } from "../gateway/port.js";
import { taraTopology } from "../topology.js";
import { KvStateMachine } from "./kv-state-machine.js";

export function createTopology(params: Readonly<Record<string, string>>): Topology {
  return taraTopology({
    name: "kv",
    config: parseTaraConfig(params),
    createMachine: () => new KvStateMachine(),
    ports: { source: gatewayPort("source"), sink: gatewayPort("sink") },
    gateway: new URL("../gateway/main.js", import.meta.url),
  });
}
