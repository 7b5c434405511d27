/**
 * Container supervisor: starts the container's gateway (if the topology names one), checkpoint
 * manager (if a stage checkpoints with LPC-CM), stream manager and instances, and restarts any
 * of them the moment it dies. It runs the instances that the topology manager's plan places in
 * its container, as its stream manager passes them on: it starts a task placed here and stops
 * one moved away, then says which it runs. A restarted instance keeps its identity (stage,
 * index) and gets the next incarnation number; incarnations are persisted before the start, so
 * they keep growing across restarts of the whole container, and a task that moved here starts
 * above the highest incarnation it had anywhere.
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { replicaName } from "../plan/physical-plan.js";
import {
  announceReady,
  exitWithParent,
  forkChild,
  stopChild,
  whenReady,
  type ChildMessage,
  type ReadyMessage,
  type ParentMessage,
  supervise,
} from "../runtime/child.js";
import {
  logDirOf,
  mechanismOf,
  usesCheckpointManager,
  readProcessConfig,
  runDirOf,
  type ProcessConfig,
} from "../runtime/config.js";
import { writeFileDurable } from "../runtime/durable-file.js";
import { createLogger } from "../runtime/log.js";
import { loadPlan } from "../runtime/topology-loader.js";

const config = readProcessConfig();
const { cluster } = config;
const container = config.container!;
const plan = await loadPlan(cluster);
const log = createLogger(`supervisor-${container}`, logDirOf(cluster), { container });
const incarnationsFile = join(runDirOf(cluster), `container-${container}-incarnations.json`);
const incarnations = readIncarnations();
/** The instances this container runs, by task: started, or stopping after a move. */
const instances = new Map<number, ChildProcess>();
/** The tasks the latest plan places here. */
const hosted = new Set<number>();
/** The version of the latest plan acted on. */
let hostVersion = -1;
let stmgr: ChildProcess | undefined;
let gateway: ChildProcess | undefined;
let stmgrPort = 0;
let ckptmgr: ChildProcess | undefined;
let ckptmgrPort = 0;
/** The stream manager once it listens for IPC: only then can it be told the ckptmgr's port. */
let readyStmgr: ChildProcess | undefined;
let stopping = false;

function readIncarnations(): Record<string, number> {
  try {
    return JSON.parse(readFileSync(incarnationsFile, "utf8")) as Record<string, number>;
  } catch {
    return {};
  }
}

function startInstance(task: number): ChildProcess {
  const placement = plan.tasks[task]!;
  const name = replicaName(placement);
  const incarnation = (incarnations[name] ?? 0) + 1;
  incarnations[name] = incarnation;
  writeFileDurable(incarnationsFile, JSON.stringify(incarnations));
  const child = forkChild("instance", {
    ...config,
    task,
    incarnation,
    stmgrPort,
  } satisfies ProcessConfig);
  log.info(
    {
      event: incarnation > 1 ? "restarted" : "spawned",
      instance: name,
      incarnation,
      pid: child.pid,
    },
    "instance started",
  );
  return child;
}

/** Starts the tasks the plan places here and stops those it moved away, then says so. */
function host(version: number, tasks: { task: number; incarnation: number }[]): void {
  hostVersion = Math.max(hostVersion, version);
  const wanted = new Set(tasks.map((t) => t.task));
  const leaving = [...hosted].filter((task) => !wanted.has(task));
  for (const task of leaving) hosted.delete(task);
  for (const { task, incarnation } of tasks) {
    if (hosted.has(task)) continue;
    hosted.add(task);
    const name = replicaName(plan.tasks[task]!);
    incarnations[name] = Math.max(incarnations[name] ?? 0, incarnation);
    supervise(name, () => startInstance(task), {
      log,
      stopping: () => stopping || !hosted.has(task),
      onStarted: (child) => instances.set(task, child),
    });
  }
  reportHosting();
  for (const task of leaving) {
    const child = instances.get(task);
    log.info({ event: "moved-away", instance: replicaName(plan.tasks[task]!) }, "stopping");
    void (child ? stopChild(child) : Promise.resolve()).then(() => {
      if (!hosted.has(task)) instances.delete(task);
      reportHosting();
    });
  }
}

function reportHosting(): void {
  if (!stmgr?.connected) return;
  stmgr.send({
    t: "hosting",
    version: hostVersion,
    tasks: [...instances.keys()],
  } satisfies ParentMessage);
}

function startStmgr(): ChildProcess {
  const child = forkChild("stmgr", { cluster, container });
  log.info({ event: "spawned", process: "stmgr", pid: child.pid }, "stream manager started");
  child.on("message", (message: ChildMessage) => {
    if (message.t === "host") host(message.version, message.tasks);
  });
  whenReady(child).then(
    (ready: ReadyMessage) => {
      stmgrPort = ready.port!;
      readyStmgr = child;
      tellCkptmgrPort();
      for (const instance of instances.values()) {
        if (instance.connected) instance.send({ t: "stmgr-port", port: stmgrPort });
      }
    },
    () => undefined,
  );
  return child;
}

function startCkptmgr(): ChildProcess {
  const child = forkChild("ckptmgr", { cluster, container });
  log.info({ event: "spawned", process: "ckptmgr", pid: child.pid }, "checkpoint manager started");
  whenReady(child).then(
    (ready: ReadyMessage) => {
      ckptmgrPort = ready.port!;
      tellCkptmgrPort();
    },
    () => undefined,
  );
  return child;
}

/** The stream manager connects to the checkpoint manager (again) wherever it now listens. */
function tellCkptmgrPort(): void {
  if (ckptmgrPort !== 0 && readyStmgr?.connected) {
    readyStmgr.send({ t: "ckptmgr-port", port: ckptmgrPort } satisfies ParentMessage);
  }
}

function startGateway(module: string): ChildProcess {
  const child = forkChild("gateway", { cluster, container }, module);
  log.info({ event: "spawned", process: "gateway", pid: child.pid }, "gateway started");
  return child;
}

const stopped = () => stopping;
if (plan.topology.gateway !== undefined) {
  const module = plan.topology.gateway;
  // The gateway publishes its addresses before it is ready: once every container announced
  // itself ready, the launcher finds every gateway's. A gateway that dies before being ready
  // is restarted like any other, so wait for the first incarnation that makes it.
  await new Promise<void>((resolve) => {
    supervise("gateway", () => startGateway(module), {
      log,
      stopping: stopped,
      onStarted: (child) => {
        gateway = child;
        whenReady(child).then(
          () => resolve(),
          () => undefined,
        );
      },
    });
  });
}
// Before the stream manager, so that it usually finds the checkpoint manager already up when
// its instances recover; if not (or after a restart of either), it connects once told the port.
// Any stage's: a replica of it may move here.
const needsCkptmgr = plan.topology.stages.some((stage) =>
  usesCheckpointManager(mechanismOf(cluster.checkpoints, stage.name)),
);
if (needsCkptmgr) {
  supervise("ckptmgr", startCkptmgr, {
    log,
    stopping: stopped,
    onStarted: (child) => (ckptmgr = child),
  });
}
supervise("stmgr", startStmgr, { log, stopping: stopped, onStarted: (child) => (stmgr = child) });
stmgrPort = (await whenReady(stmgr!)).port!;

log.info({ event: "started" }, "container supervisor started");
announceReady({});
exitWithParent(async () => {
  stopping = true;
  await Promise.all(
    [
      ...instances.values(),
      ...(stmgr ? [stmgr] : []),
      ...(gateway ? [gateway] : []),
      ...(ckptmgr ? [ckptmgr] : []),
    ].map((child) => stopChild(child)),
  );
  log.info({ event: "stopped" }, "container supervisor stopped");
});
