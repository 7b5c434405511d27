/**
 * TARA as a topology: request sources -> proposers -> committers -> executors -> reply sinks,
 * with the feedback streams that view changes, stable checkpoints, gap repair and executor
 * catch-up need. Every stream but the two point-to-point replies is an all-grouping: each
 * replica of the consumer gets a copy.
 */
import {
  grouping,
  TopologyBuilder,
  type PortFactory,
  type Topology,
} from "../platform/api/topology.js";
import type { TaraConfig } from "./config.js";
import { streams } from "./messages.js";
import type { StateMachine } from "./state-machine.js";
import { Committer } from "./stages/committer.js";
import { Executor, type ExecutionObserver } from "./stages/executor.js";
import { Proposer } from "./stages/proposer.js";
import { ReplySink } from "./stages/reply-sink.js";
import { RequestSource } from "./stages/request-source.js";

export const stages = {
  requestSource: "request-source",
  proposer: "proposer",
  committer: "committer",
  executor: "executor",
  replySink: "reply-sink",
} as const;

export interface TaraTopologyOptions {
  name: string;
  config: TaraConfig;
  /** A fresh replica of the replicated service (one per executor incarnation), by executor. */
  createMachine: (executor: number) => StateMachine;
  /** Real-process I/O: the request sources' and reply sinks' gateway ports. */
  ports?: { source: PortFactory; sink: PortFactory };
  /** Module run as the gateway process of every container. */
  gateway?: URL;
  /** Sees every execution (the simulator's checkers). */
  observer?: ExecutionObserver;
}

export function taraTopology(options: TaraTopologyOptions): Topology {
  const { config } = options;
  const { f } = config;
  const all = grouping.all();
  const builder = new TopologyBuilder(options.name)
    .source(
      stages.requestSource,
      {
        parallelism: f + 1,
        outputs: [streams.requests],
        ...(options.ports ? { port: options.ports.source } : {}),
      },
      () => new RequestSource(config),
    )
    .stage(
      stages.proposer,
      {
        parallelism: f + 1,
        outputs: [streams.proposals],
        inputs: [
          { stage: stages.requestSource, stream: streams.requests, grouping: all },
          { stage: stages.committer, stream: streams.votes, grouping: all },
          { stage: stages.executor, stream: streams.checkpointed, grouping: all },
          { stage: stages.executor, stream: streams.gaps, grouping: all },
        ],
      },
      () => new Proposer(config),
    )
    .stage(
      stages.committer,
      {
        parallelism: 2 * f + 1,
        outputs: [streams.accepts, streams.votes],
        inputs: [{ stage: stages.proposer, stream: streams.proposals, grouping: all }],
      },
      () => new Committer(config),
    )
    .stage(
      stages.executor,
      {
        parallelism: 2 * f + 1,
        outputs: [streams.replies, streams.checkpointed, streams.gaps, streams.state],
        inputs: [
          { stage: stages.committer, stream: streams.accepts, grouping: all },
          { stage: stages.executor, stream: streams.checkpointed, grouping: all },
          { stage: stages.executor, stream: streams.state, grouping: grouping.direct() },
        ],
      },
      (index) => new Executor(config, options.createMachine(index), options.observer),
    )
    .stage(
      stages.replySink,
      {
        parallelism: f + 1,
        inputs: [{ stage: stages.executor, stream: streams.replies, grouping: all }],
        ...(options.ports ? { port: options.ports.sink } : {}),
      },
      () => new ReplySink(),
    );
  if (options.gateway) builder.gateway(options.gateway);
  return builder.build();
}
