/**
 * The local scheduler behind `tara start`: starts the topology manager and one supervisor per
 * container as child processes on this machine, restarts them if they die (a whole-container
 * crash included), and on stop takes every process down with it.
 */
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { pack } from "../plan/physical-plan.js";
import { forkChild, stopChild, supervise, whenReady } from "./child.js";
import {
  checkpointConfigSchema,
  runDirOf,
  type CheckpointConfig,
  type ClusterConfig,
} from "./config.js";
import { writeFileDurable } from "./durable-file.js";
import { clientAddress, readGatewayFile } from "./gateway-file.js";
import { loadTopology } from "./topology-loader.js";

export interface LaunchOptions {
  topology: string;
  params: Record<string, string>;
  containers: number;
  allowColocation: boolean;
  dataDir: string;
  host: string;
  adminPort: number;
  /** Base client port of the gateways (container c: base + c; 0: any); default 7850. */
  gatewayPort?: number;
  secret?: string;
  heartbeatMs: number;
  heartbeatTimeoutMs: number;
  instanceTimeoutMs?: number;
  /** How stages are checkpointed; default PDC. */
  checkpoints?: Partial<CheckpointConfig>;
}

export interface ClusterFile {
  pid: number;
  topology: string;
  adminUrl: string;
  secret: string;
  containers: number;
  /** Client addresses ("host:port") of the gateways in container order, once all are up. */
  gateways?: string[];
}

export const CLUSTER_FILE = "cluster.json";
export const DEFAULT_INSTANCE_TIMEOUT_MS = 5000;
export const DEFAULT_GATEWAY_PORT = 7850;

export class LocalCluster {
  private tmaster: ChildProcess | undefined;
  private readonly supervisors = new Map<number, ChildProcess>();
  private stopping = false;
  adminUrl = "";
  /** Client addresses of the gateways, in container order; empty without a gateway. */
  gateways: string[] = [];

  private constructor(
    readonly config: ClusterConfig,
    private readonly hasGateway: boolean,
    private readonly log: Logger,
  ) {}

  static async start(options: LaunchOptions, log: Logger): Promise<LocalCluster> {
    const topology = await loadTopology(options.topology, options.params);
    pack(topology, options); // validates the packing before any process starts
    const gatewayPort = options.gatewayPort ?? DEFAULT_GATEWAY_PORT;
    if (topology.gateway !== undefined && gatewayPort !== 0) {
      if (gatewayPort + options.containers - 1 > 65535) {
        throw new Error(`gateway ports ${gatewayPort}..+${options.containers - 1} exceed 65535`);
      }
      // A taken port would keep a gateway, and so the start, failing: say so now.
      for (let c = 0; c < options.containers; c++) {
        await checkPortFree(options.host, gatewayPort + c);
      }
    }
    const dataDir = resolve(options.dataDir);
    const checkpoints = checkpointConfigSchema.parse(options.checkpoints ?? {});
    // A new run starts with new incarnations and new state (a replica must never resume an
    // earlier run's instance state); logs stay. Checkpoints in a shared store are kept apart
    // by the run id.
    rmSync(join(dataDir, "run"), { recursive: true, force: true });
    if (checkpoints.store === undefined) {
      rmSync(join(dataDir, "checkpoints"), { recursive: true, force: true });
    }
    mkdirSync(dataDir, { recursive: true });
    const config: ClusterConfig = {
      topology: options.topology,
      params: options.params,
      run: randomBytes(8).toString("hex"),
      checkpoints,
      containers: options.containers,
      allowColocation: options.allowColocation,
      secret: options.secret ?? randomBytes(32).toString("hex"),
      dataDir,
      host: options.host,
      tmasterPort: 0,
      adminPort: options.adminPort,
      gatewayPort,
      heartbeatMs: options.heartbeatMs,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs,
      instanceTimeoutMs: options.instanceTimeoutMs ?? DEFAULT_INSTANCE_TIMEOUT_MS,
    };
    const cluster = new LocalCluster(config, topology.gateway !== undefined, log);
    await cluster.startAll();
    return cluster;
  }

  private async startAll(): Promise<void> {
    // The topology manager keeps its ports across restarts, so links find it again.
    const tmaster = this.superviseTmaster();
    const ready = await whenReady(tmaster);
    this.config.tmasterPort = ready.port!;
    this.config.adminPort = ready.adminPort!;
    this.adminUrl = `http://${this.config.host}:${ready.adminPort}`;
    const clusterFile: ClusterFile = {
      pid: process.pid,
      topology: this.config.topology,
      adminUrl: this.adminUrl,
      secret: this.config.secret,
      containers: this.config.containers,
    };
    const clusterPath = join(this.config.dataDir, CLUSTER_FILE);
    writeFileDurable(clusterPath, JSON.stringify(clusterFile, null, 2));
    const started: Promise<unknown>[] = [];
    for (let container = 0; container < this.config.containers; container++) {
      started.push(whenReady(this.superviseContainer(container)));
    }
    await Promise.all(started);
    if (!this.hasGateway) return;
    // A supervisor is ready once its gateway published its addresses; they stay for the run.
    const runDir = runDirOf(this.config);
    for (let container = 0; container < this.config.containers; container++) {
      const addresses = readGatewayFile(runDir, container);
      if (!addresses) throw new Error(`the gateway of container ${container} published nothing`);
      this.gateways.push(clientAddress(addresses));
    }
    clusterFile.gateways = this.gateways;
    writeFileDurable(clusterPath, JSON.stringify(clusterFile, null, 2));
  }

  private superviseTmaster(): ChildProcess {
    supervise("tmaster", () => forkChild("tmaster", { cluster: this.config }), {
      log: this.log,
      stopping: () => this.stopping,
      onStarted: (child) => (this.tmaster = child),
    });
    return this.tmaster!;
  }

  private superviseContainer(container: number): ChildProcess {
    supervise(
      `supervisor-${container}`,
      () => forkChild("supervisor", { cluster: this.config, container }),
      {
        log: this.log,
        stopping: () => this.stopping,
        onStarted: (child) => {
          this.supervisors.set(container, child);
          this.log.info(
            { event: "spawned", process: "supervisor", container, pid: child.pid },
            "container started",
          );
        },
      },
    );
    return this.supervisors.get(container)!;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const children = [...this.supervisors.values(), ...(this.tmaster ? [this.tmaster] : [])];
    await Promise.all(children.map((child) => stopChild(child, 5000)));
    this.log.info({ event: "stopped" }, "cluster stopped");
  }
}

/** Rejects with a clear message if `port` cannot be listened on now. */
function checkPortFree(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", (error: NodeJS.ErrnoException) =>
      reject(new Error(`gateway port ${host}:${port} is not available (${error.code})`)),
    );
    server.listen(port, host, () => server.close(() => resolve()));
  });
}
