/**
 * Topology manager: stream managers register and heartbeat to it; it keeps the physical plan
 * (plan-tracker.ts), broadcasts it whenever it changes so that routing to a restarted replica
 * resumes, and serves the admin surface. It is not on the tuple path: the topology keeps
 * running while it is down.
 */
import { once } from "node:events";
import { announceReady, exitWithParent } from "../runtime/child.js";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { isGlobalCheckpointing, logDirOf, readProcessConfig, runDirOf } from "../runtime/config.js";
import { writeFileDurable } from "../runtime/durable-file.js";
import { createLogger } from "../runtime/log.js";
import { loadPlan } from "../runtime/topology-loader.js";
import { listen } from "../transport/tcp.js";
import type { Connection } from "../wire/connection.js";
import {
  gpcRestoredSchema,
  gpcSavedSchema,
  heartbeatSchema,
  messageParser,
  stmgrSchema,
  type GpcReport,
  type Heartbeat,
  type StmgrRegistration,
} from "../wire/messages.js";
import { GpcCoordinator, type GpcPersisted } from "./gpc-coordinator.js";
import { createAdminServer } from "./admin.js";
import { PlanTracker, type PlacementState } from "./plan-tracker.js";

const { cluster } = readProcessConfig();
const log = createLogger("tmaster", logDirOf(cluster));
const plan = await loadPlan(cluster);
const startedFile = join(runDirOf(cluster), "topology-started");
const placementFile = join(runDirOf(cluster), "placement.json");
const tracker = new PlanTracker(plan, cluster.heartbeatTimeoutMs, {
  started: existsSync(startedFile),
  persisted: existsSync(placementFile)
    ? (JSON.parse(readFileSync(placementFile, "utf8")) as PlacementState)
    : undefined,
  persist: (state) => writeFileDurable(placementFile, JSON.stringify(state)),
  allowColocation: cluster.allowColocation,
  movesRefused: isGlobalCheckpointing(cluster.checkpoints)
    ? "replicas cannot move under GPC: a container's stream manager keeps the replay log and " +
      "the rollback of the tasks first placed there"
    : undefined,
});
const startedAtMs = Date.now();
const stmgrs = new Map<number, Connection<StmgrRegistration | Heartbeat | GpcReport>>();
const gpcFile = join(runDirOf(cluster), "gpc.json");
const gpc = isGlobalCheckpointing(cluster.checkpoints)
  ? new GpcCoordinator(
      plan.tasks.length,
      existsSync(gpcFile) ? (JSON.parse(readFileSync(gpcFile, "utf8")) as GpcPersisted) : undefined,
      (state) => writeFileDurable(gpcFile, JSON.stringify(state)),
      (command) => {
        for (const connection of stmgrs.values()) connection.send(command);
      },
      log,
      () => Date.now(),
      2 * Math.max(2000, 20 * cluster.checkpoints.gpcIntervalMs),
    )
  : undefined;
const gpcTimer = gpc && setInterval(() => gpc.tick(), cluster.checkpoints.gpcIntervalMs);

function broadcastPlan(): boolean {
  const update = tracker.planUpdate();
  gpc?.observe(update ?? tracker.currentPlan());
  if (!update) return false;
  if (update.started && !existsSync(startedFile)) {
    writeFileDurable(startedFile, "");
    log.info({ event: "topology-started" }, "every replica is up: the topology started");
  }
  for (const connection of stmgrs.values()) connection.send(update);
  return true;
}

const { port } = await listen<StmgrRegistration | Heartbeat | GpcReport>(
  { host: cluster.host, port: cluster.tmasterPort },
  {
    secret: Buffer.from(cluster.secret, "hex"),
    log,
    parse: messageParser([], [stmgrSchema, heartbeatSchema, gpcSavedSchema, gpcRestoredSchema]),
  },
  (connection) => {
    let container: number | undefined;
    connection.start({
      onReady: (peer) => {
        if (peer.role !== "stmgr")
          connection.close(`role ${peer.role} may not talk to the topology manager`);
      },
      onMessage: (message) => {
        if (message.t === "stmgr") {
          if (message.container >= plan.containers)
            return connection.close(`no container ${message.container}`);
          container = message.container;
          stmgrs.get(container)?.close("replaced by a new stream manager");
          stmgrs.set(container, connection);
          tracker.register(message, Date.now());
          gpc?.containerRejoined(container);
          log.info(
            { event: "stmgr-registered", container, pid: message.pid, port: message.port },
            "stream manager registered",
          );
          if (!broadcastPlan()) connection.send(tracker.currentPlan());
          return;
        }
        if (container === undefined) return connection.close("heartbeat before registration");
        if (message.t === "gpc-saved") return gpc?.onSaved(message.i, message.tasks);
        if (message.t === "gpc-restored") return gpc?.onRestored(message.r, message.tasks);
        tracker.heartbeat(container, message, Date.now());
        for (const instance of message.instances) {
          if (instance.state === "silent" && instance.pid > 0)
            killHung(instance.pid, instance.task);
        }
        broadcastPlan();
      },
      onClose: (reason) => {
        if (container === undefined || stmgrs.get(container) !== connection) return;
        stmgrs.delete(container);
        tracker.disconnected(container);
        log.warn({ event: "container-lost", container, reason }, "stream manager disconnected");
        broadcastPlan();
      },
    });
  },
);

/** Pids already killed as hung, so that one silence is one kill. */
const killedHung = new Set<number>();

function killHung(pid: number, task: number): void {
  if (killedHung.has(pid)) return;
  killedHung.add(pid);
  const placement = plan.tasks[task]!;
  try {
    process.kill(pid, "SIGKILL");
    log.warn(
      { event: "killed-hung", instance: `${placement.stage}:${placement.index}`, pid },
      "instance silent past the instance timeout: killed for a restart",
    );
  } catch {
    // Already gone: its supervisor restarts it anyway.
  }
}

const expiryTimer = setInterval(() => {
  for (const container of tracker.expire(Date.now())) {
    log.warn(
      { event: "container-silent", container },
      "no heartbeat in time: container considered dead",
    );
    stmgrs.get(container)?.close("heartbeat timeout");
  }
  broadcastPlan();
}, cluster.heartbeatMs);

const admin = createAdminServer({
  tracker,
  planChanged: broadcastPlan,
  secret: cluster.secret,
  log,
  startedAtMs,
  now: () => Date.now(),
});
admin.listen(cluster.adminPort, cluster.host);
await once(admin, "listening");
const adminAddress = admin.address();
const adminPort =
  typeof adminAddress === "object" && adminAddress ? adminAddress.port : cluster.adminPort;

log.info({ event: "started", port, adminPort }, "topology manager started");
announceReady({ port, adminPort });
exitWithParent(() => {
  clearInterval(expiryTimer);
  if (gpcTimer) clearInterval(gpcTimer);
  admin.close();
  log.info({ event: "stopped" }, "topology manager stopped");
});
