/**
 * The logical topology: stages, their parallelism, their output streams and who consumes
 * them with which grouping. Cycles are allowed (TARA has feedback streams).
 */
import type { Log, Source, Stage, Tuple } from "./stage.js";

export type Grouping =
  | { readonly kind: "all" }
  | { readonly kind: "direct" }
  | { readonly kind: "shuffle" }
  | { readonly kind: "fields"; readonly fields: readonly string[] };

export const grouping = {
  all: (): Grouping => ({ kind: "all" }),
  direct: (): Grouping => ({ kind: "direct" }),
  shuffle: (): Grouping => ({ kind: "shuffle" }),
  fields: (...fields: string[]): Grouping => ({ kind: "fields", fields }),
};

export interface Subscription {
  readonly stage: string;
  readonly stream: string;
  readonly grouping: Grouping;
}

export interface StageSpec {
  readonly name: string;
  readonly parallelism: number;
  readonly isSource: boolean;
  readonly outputs: readonly string[];
  readonly inputs: readonly Subscription[];
  readonly create: (index: number) => Stage | Source;
  /** How a replica of this stage reaches the outside world in real processes, if it does. */
  readonly port?: PortFactory;
}

/** Where a port runs: enough to find the container's gateway and authenticate to it. */
export interface PortEnvironment {
  /** The replica's stage, and how many replicas it has (the port's index is one of them). */
  readonly stage: string;
  readonly parallelism: number;
  readonly host: string;
  /** Directory of the current run; gateways publish their addresses there. */
  readonly runDir: string;
  readonly secret: Buffer;
  readonly container: number;
  readonly containers: number;
  readonly log: Log;
}

/**
 * The real-process end of a stage's external I/O. The platform calls `open` once with the
 * function that hands an input to the stage's `onExternal`, `send` for each `ctx.external.send`,
 * `pause`/`resume` while a source is throttled (stop reading input), and `close` at exit.
 */
export interface ExternalPort {
  open(deliver: (input: Tuple) => void): void;
  send(output: Tuple): void;
  pause(): void;
  resume(): void;
  close(): void;
}

export type PortFactory = (index: number, env: PortEnvironment) => ExternalPort;

export interface Topology {
  readonly name: string;
  readonly stages: readonly StageSpec[];
  /**
   * href of a module the platform runs as one supervised process per container (the client
   * gateway), next to the stream manager; none if unset.
   */
  readonly gateway?: string;
}

export class TopologyError extends Error {
  override readonly name = "TopologyError";
}

interface StageOptions {
  parallelism: number;
  outputs?: readonly string[];
  port?: PortFactory;
}

const NAME = /^[a-z][a-z0-9-]{0,62}$/;

export class TopologyBuilder {
  private readonly stages: StageSpec[] = [];
  private gatewayModule: string | undefined;

  constructor(private readonly name: string) {
    if (!NAME.test(name)) throw new TopologyError(`invalid topology name ${JSON.stringify(name)}`);
  }

  source(name: string, options: StageOptions, create: (index: number) => Source): this {
    return this.add({ name, isSource: true, inputs: [], create, ...withDefaults(options) });
  }

  stage(
    name: string,
    options: StageOptions & { inputs: readonly Subscription[] },
    create: (index: number) => Stage,
  ): this {
    return this.add({
      name,
      isSource: false,
      inputs: options.inputs,
      create,
      ...withDefaults(options),
    });
  }

  /** Runs `module` as a process in every container (see `Topology.gateway`). */
  gateway(module: URL): this {
    if (module.protocol !== "file:") {
      throw new TopologyError(`gateway module must be a file: URL, got ${module.href}`);
    }
    this.gatewayModule = module.href;
    return this;
  }

  build(): Topology {
    const byName = new Map(this.stages.map((s) => [s.name, s]));
    for (const spec of this.stages) {
      if (!spec.isSource && spec.inputs.length === 0) {
        throw new TopologyError(`stage ${spec.name} has no inputs; declare it as a source`);
      }
      const seen = new Set<string>();
      for (const input of spec.inputs) {
        const producer = byName.get(input.stage);
        if (!producer)
          throw new TopologyError(`${spec.name} reads from unknown stage ${input.stage}`);
        if (!producer.outputs.includes(input.stream)) {
          throw new TopologyError(
            `${spec.name} reads undeclared stream ${input.stage}/${input.stream}`,
          );
        }
        const key = `${input.stage}/${input.stream}`;
        if (seen.has(key)) throw new TopologyError(`${spec.name} subscribes twice to ${key}`);
        seen.add(key);
        if (input.grouping.kind === "fields" && input.grouping.fields.length === 0) {
          throw new TopologyError(`${spec.name}: fields grouping on ${key} names no field`);
        }
      }
    }
    return {
      name: this.name,
      stages: [...this.stages],
      ...(this.gatewayModule ? { gateway: this.gatewayModule } : {}),
    };
  }

  private add(spec: StageSpec): this {
    if (!NAME.test(spec.name))
      throw new TopologyError(`invalid stage name ${JSON.stringify(spec.name)}`);
    if (this.stages.some((s) => s.name === spec.name)) {
      throw new TopologyError(`duplicate stage ${spec.name}`);
    }
    if (!Number.isInteger(spec.parallelism) || spec.parallelism < 1 || spec.parallelism > 1024) {
      throw new TopologyError(`stage ${spec.name}: parallelism must be an integer in 1..1024`);
    }
    for (const stream of spec.outputs) {
      if (!NAME.test(stream))
        throw new TopologyError(`stage ${spec.name}: invalid stream name ${stream}`);
    }
    if (new Set(spec.outputs).size !== spec.outputs.length) {
      throw new TopologyError(`stage ${spec.name} declares a stream twice`);
    }
    this.stages.push(spec);
    return this;
  }
}

function withDefaults(options: StageOptions) {
  return {
    parallelism: options.parallelism,
    outputs: options.outputs ?? [],
    ...(options.port ? { port: options.port } : {}),
  };
}

/** What a topology module exports: a factory taking string parameters (`--param k=v`). */
export type TopologyFactory = (params: Readonly<Record<string, string>>) => Topology;
