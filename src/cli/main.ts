import { Command, Option } from "commander";
import Table from "cli-table3";
import { readFileSync } from "node:fs";
import { pino } from "pino";
import type { ContainerStatus, InstanceStatus } from "../platform/tmaster/plan-tracker.js";
import {
  DEFAULT_GATEWAY_PORT,
  DEFAULT_INSTANCE_TIMEOUT_MS,
  LocalCluster,
} from "../platform/runtime/launcher.js";
import { adminRequest, readClusterFile } from "./cluster-client.js";
import { registerBench } from "./bench.js";
import { registerSim } from "./sim.js";
import { addCheckpointOptions, checkpointConfigOf } from "./checkpoint-options.js";
import { integer, param } from "./parsers.js";

/** ZooKeeper's client port: the zk service's first gateway listens there by default. */
const ZK_GATEWAY_PORT = 2181;

/** One cell: mechanism, the latest checkpoint written (kind, id, bytes, age), recovery. */
function checkpointSummary(status: unknown): string {
  if (!status || typeof status !== "object") return "-";
  const c = status as {
    mechanism: string;
    instance: {
      last: { kind: string; id: number; bytes: number; at: number } | null;
      stalled: string | null;
    } | null;
    group: {
      last: { seq: number; bytes: number; at: number } | null;
      stalled: string | null;
    } | null;
    recovery: { base: number | null; deltas: number; updates: number } | null;
  };
  const age = (at: number) => `${Math.max(0, Math.round((Date.now() - at) / 100) / 10)}s ago`;
  const parts = [c.mechanism];
  if (c.instance?.last) {
    const { kind, id, bytes, at } = c.instance.last;
    parts.push(`instance ${kind} #${id} ${bytes} B ${age(at)}`);
  }
  if (c.group?.last)
    parts.push(`group @${c.group.last.seq} ${c.group.last.bytes} B ${age(c.group.last.at)}`);
  if (c.recovery)
    parts.push(`recovered ${c.recovery.updates} updates (base ${c.recovery.base ?? "-"})`);
  const stalled = c.instance?.stalled ?? c.group?.stalled;
  if (stalled) parts.push(`STALLED: ${stalled}`);
  return parts.join("\n");
}

export async function main(argv: string[]): Promise<void> {
  const program = new Command("tara").description(
    "Stream-based state-machine replication with generic checkpointing",
  );
  const dataDir = () => new Option("--data-dir <dir>", "cluster data directory").default("./data");

  const start = program
    .command("start")
    .description("run a topology locally in the foreground until SIGINT/SIGTERM")
    .option(
      "--topology <name|module>",
      "built-in topology (zk: the replicated ZooKeeper service; kv: a replicated key-value " +
        "service; demo) or module path",
      "zk",
    )
    .option("--param <key=value>", "topology parameter (repeatable)", param, {})
    .addOption(
      new Option("--containers <n>", "number of containers").argParser(integer(1, 256)).default(3),
    )
    .option("--allow-colocation", "allow two replicas of a stage in one container", false)
    .addOption(dataDir())
    .option("--host <address>", "address every process binds to", "127.0.0.1")
    .addOption(
      new Option("--admin-port <port>", "admin HTTP port (0: any)")
        .argParser(integer(0, 65535))
        .default(7800),
    )
    .addOption(
      new Option(
        "--gateway-port <port>",
        "client port of container 0's gateway; container c's is this + c (0: any) " +
          `(default: ${ZK_GATEWAY_PORT} for zk, else ${DEFAULT_GATEWAY_PORT})`,
      ).argParser(integer(0, 65535)),
    )
    .option(
      "--secret-file <path>",
      "file holding the cluster secret (default: TARA_SECRET or a new one)",
    )
    .addOption(
      new Option("--heartbeat-ms <ms>", "heartbeat period")
        .argParser(integer(10, 60000))
        .default(200),
    )
    .addOption(
      new Option("--heartbeat-timeout-ms <ms>", "silence after which a container is dead")
        .argParser(integer(50, 600000))
        .default(2000),
    )
    .addOption(
      new Option("--instance-timeout-ms <ms>", "silence after which an instance is hung: killed")
        .argParser(integer(50, 600000))
        .default(DEFAULT_INSTANCE_TIMEOUT_MS),
    );
  addCheckpointOptions(start);
  start.action(async (options) => {
    const log = pino({ base: { proc: "launcher" } });
    const secret = options.secretFile
      ? readFileSync(options.secretFile, "utf8").trim()
      : process.env.TARA_SECRET;
    if (secret !== undefined && !/^[0-9a-f]{32,}$/.test(secret)) {
      throw new Error("the cluster secret must be at least 32 lowercase hex digits");
    }
    const cluster = await LocalCluster.start(
      {
        topology: options.topology,
        params: options.param,
        containers: options.containers,
        allowColocation: options.allowColocation,
        dataDir: options.dataDir,
        host: options.host,
        adminPort: options.adminPort,
        gatewayPort:
          options.gatewayPort ??
          (options.topology === "zk" ? ZK_GATEWAY_PORT : DEFAULT_GATEWAY_PORT),
        secret,
        heartbeatMs: options.heartbeatMs,
        heartbeatTimeoutMs: options.heartbeatTimeoutMs,
        instanceTimeoutMs: options.instanceTimeoutMs,
        checkpoints: checkpointConfigOf(options),
      },
      log,
    );
    log.info(
      {
        event: "running",
        topology: options.topology,
        containers: options.containers,
        admin: cluster.adminUrl,
        gateways: cluster.gateways,
        dataDir: cluster.config.dataDir,
      },
      `tara running: admin ${cluster.adminUrl}` +
        (cluster.gateways.length > 0 ? `, clients connect to ${cluster.gateways.join(" ")}` : "") +
        `, logs in ${cluster.config.dataDir}/logs; Ctrl-C stops`,
    );
    if (cluster.gateways.length > 0) console.log(`gateways: ${cluster.gateways.join(" ")}`);
    if (options.topology === "zk") {
      console.log(`ZooKeeper connection string: ${cluster.gateways.join(",")}`);
    }
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
    await cluster.stop();
  });

  program
    .command("status")
    .description("show every replica of the running cluster")
    .addOption(dataDir())
    .option("--json", "print the raw JSON", false)
    .action(async (options) => {
      const cluster = readClusterFile(options.dataDir);
      const status = (await adminRequest(cluster, "GET", "/status")) as {
        topology: string;
        containers: ContainerStatus[];
        instances: InstanceStatus[];
      };
      const gateways = cluster.gateways ?? [];
      if (options.json) {
        console.log(JSON.stringify({ ...status, gateways }, null, 2));
        return;
      }
      const containers = new Table({
        head: ["container", "state", "stmgr pid", "port", "restarts", "backpressure", "gateway"],
      });
      for (const c of status.containers) {
        containers.push([
          c.container,
          c.state,
          c.stmgr?.pid ?? "-",
          c.stmgr?.port ?? "-",
          c.stmgr?.restarts ?? 0,
          c.backpressure ? "on" : "off",
          gateways[c.container] ?? "-",
        ]);
      }
      const instances = new Table({
        head: [
          "replica",
          "container",
          "pid",
          "state",
          "incarnation",
          "restarts",
          "in",
          "out",
          "checkpoints",
          "status",
        ],
      });
      for (const i of status.instances) {
        instances.push([
          `${i.stage}:${i.index}`,
          i.move ? `${i.move.from}→${i.move.to}` : i.container,
          i.pid ?? "-",
          i.state,
          i.incarnation,
          i.restarts,
          i.tuplesIn,
          i.tuplesOut,
          checkpointSummary(i.status.checkpoints),
          JSON.stringify({ ...i.status, checkpoints: undefined }),
        ]);
      }
      console.log(`topology ${status.topology}\n${containers.toString()}\n${instances.toString()}`);
    });

  program
    .command("kill")
    .description("SIGKILL one replica (<stage>:<index>) or every process of a container")
    .argument("[replica]", "replica to kill, e.g. squarer:1")
    .addOption(new Option("--container <n>", "kill a whole container").argParser(integer(0, 255)))
    .addOption(dataDir())
    .action(async (replica: string | undefined, options) => {
      if ((replica === undefined) === (options.container === undefined)) {
        throw new Error("name either a replica (<stage>:<index>) or --container <n>");
      }
      const body = replica !== undefined ? { replica } : { container: options.container };
      const result = (await adminRequest(
        readClusterFile(options.dataDir),
        "POST",
        "/kill",
        body,
      )) as { killed: number[] };
      console.log(`killed pids ${result.killed.join(", ") || "(none)"}`);
    });

  program
    .command("move")
    .description(
      "move a replica (<stage>:<index>) to another container: the container it leaves stops it, " +
        "then the new one starts it, and it recovers from its checkpoints",
    )
    .argument("<replica>", "replica to move, e.g. committer:2")
    .addOption(
      new Option("--to <container>", "the container to run it in")
        .argParser(integer(0, 255))
        .makeOptionMandatory(),
    )
    .option(
      "--force",
      "the container it leaves is gone with all its processes (allowed only while it is down)",
      false,
    )
    .addOption(dataDir())
    .action(async (replica: string, options) => {
      const result = (await adminRequest(readClusterFile(options.dataDir), "POST", "/move", {
        replica,
        to: options.to,
        force: options.force,
      })) as { from: number; to: number };
      console.log(`moving ${replica} from container ${result.from} to container ${result.to}`);
    });

  registerBench(program);
  registerSim(program);

  try {
    await program.parseAsync(argv);
  } catch (error) {
    console.error(`tara: ${(error as Error).message}`);
    process.exitCode = 1;
  }
}
