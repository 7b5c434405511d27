/**
 * Process shell of one stage replica: connects the executor to the local stream manager,
 * reports to it every heartbeat, and follows the stream manager when it restarts elsewhere.
 * A stage with a port gets its environment (run directory, cluster secret, container) here.
 */
import { replicaName } from "../plan/physical-plan.js";
import type { ParentMessage } from "../runtime/child.js";
import { announceReady, exitWithParent } from "../runtime/child.js";
import { ShimChannel, type CheckpointChannel } from "../checkpoint/channel.js";
import { ManagerChannel } from "../checkpoint/manager-channel.js";
import { openStore } from "../checkpoint/store/open-store.js";
import {
  logDirOf,
  mechanismOf,
  usesCheckpointManager,
  readProcessConfig,
  runDirOf,
  storeUrlOf,
} from "../runtime/config.js";
import { createLogger } from "../runtime/log.js";
import { processStats } from "../runtime/process-stats.js";
import { loadPlan } from "../runtime/topology-loader.js";
import { ClientLink } from "../transport/tcp.js";
import {
  DELIVER,
  EMIT,
  ckptErrorSchema,
  ckptOkSchema,
  ckptPartSchema,
  gpcCheckpointSchema,
  gpcGlobalSchema,
  gpcRestoreSchema,
  gpcResumeSchema,
  messageParser,
  startSchema,
  throttleSchema,
  type CkptReply,
  type GpcCommand,
  type TupleFrame,
  type Start,
  type Throttle,
} from "../wire/messages.js";
import { WireError } from "../wire/errors.js";
import { TupleReader } from "../wire/tuples.js";
import { Executor } from "./executor.js";

const config = readProcessConfig();
const { cluster } = config;
const plan = await loadPlan(cluster);
const placement = plan.tasks[config.task!]!;
const name = replicaName(placement);
const incarnation = config.incarnation!;
const log = createLogger(`instance-${placement.stage}-${placement.index}`, logDirOf(cluster), {
  instance: name,
  incarnation,
});
process.on("uncaughtException", (error) => {
  log.fatal({ event: "crashed", err: error }, "stage code threw: exiting");
  process.exit(1);
});

const mechanism = mechanismOf(cluster.checkpoints, placement.stage);
/** LPC-CM's channel: its answers come on the stream manager link (below). */
let managerChannel: ManagerChannel | undefined;
/** LPC-CS: the shim writes from this process; LPC-CM: through the stream manager. */
async function checkpointChannel(): Promise<CheckpointChannel | undefined> {
  if (usesCheckpointManager(mechanism)) {
    managerChannel = new ManagerChannel((message) => {
      const connection = link.ready;
      connection?.send(message);
      return connection !== undefined;
    });
    return managerChannel;
  }
  if (mechanism !== "lpc-cs") return undefined;
  return new ShimChannel(await openStore(storeUrlOf(cluster)), log);
}
const channel = await checkpointChannel();

let stmgrPort = config.stmgrPort!;
let linkFull = false;
const executor = new Executor({
  plan,
  self: placement,
  incarnation,
  log,
  portEnvironment: {
    host: cluster.host,
    runDir: runDirOf(cluster),
    secret: Buffer.from(cluster.secret, "hex"),
    container: config.container!,
    containers: cluster.containers,
    log,
  },
  checkpointing: {
    mechanism,
    config: cluster.checkpoints,
    channel,
    namespace: `${plan.topology.name}.${cluster.run}`,
  },
  gpcReport: (report) => link.ready?.send(report),
  send: (streamIndex, dests, payload) => {
    const connection = link.ready;
    if (!connection) return false;
    connection.tuples(EMIT).append(placement.task, streamIndex, dests, payload);
    connection.queued();
    if (connection.isCongested && !linkFull) {
      linkFull = true;
      // Our link to the stream manager is full: stop taking input until it drains.
      executor.setThrottle("link", true);
      connection.pauseReading();
    }
    return true;
  },
});

const link = new ClientLink<TupleFrame<typeof DELIVER> | Start | Throttle | CkptReply | GpcCommand>(
  { host: cluster.host, port: stmgrPort },
  { role: "instance", id: name },
  {
    secret: Buffer.from(cluster.secret, "hex"),
    parse: messageParser(
      [DELIVER],
      [
        startSchema,
        throttleSchema,
        ckptOkSchema,
        ckptPartSchema,
        ckptErrorSchema,
        gpcCheckpointSchema,
        gpcGlobalSchema,
        gpcRestoreSchema,
        gpcResumeSchema,
      ],
    ),
    log,
  },
  {
    onReady: (connection) => {
      connection.send({ t: "register", task: placement.task, incarnation, pid: process.pid });
      log.info({ event: "connected", stmgrPort }, "connected to stream manager");
    },
    onMessage: (message) => {
      if (Array.isArray(message)) deliver(message[1]);
      else if (message.t === "start") {
        executor.start().catch((error: Error) => {
          log.fatal({ event: "crashed", err: error }, "start failed: exiting");
          process.exit(1);
        });
      } else if (message.t === "throttle") executor.setThrottle("stmgr", message.on);
      else if (message.t.startsWith("gpc-")) executor.gpcCommand(message as GpcCommand);
      else managerChannel?.onReply(message as CkptReply);
    },
    onDown: (reason) => {
      managerChannel?.linkDown(reason);
      linkFull = false;
      executor.setThrottle("stmgr", false);
      executor.setThrottle("link", false);
      log.info({ event: "disconnected", reason }, "lost the stream manager");
    },
    onDrain: () => {
      linkFull = false;
      executor.setThrottle("link", false);
      link.ready?.resumeReading();
    },
  },
);

function deliver(records: Buffer): void {
  const reader = new TupleReader(records);
  for (;;) {
    try {
      if (!reader.next()) return;
      if (reader.destCount !== 1 || reader.dest(0) !== placement.task) {
        throw new WireError("FRAME_INVALID", "a delivered tuple for another task");
      }
      executor.deliver(
        reader.srcTask,
        reader.stream,
        records,
        reader.payloadStart,
        reader.payloadEnd,
      );
    } catch (error) {
      // Bad input from the link closes it; an error thrown by the stage itself crashes us.
      if (!(error instanceof WireError)) throw error;
      log.warn({ event: "frame-rejected", code: error.code, reason: error.message });
      link.ready?.close(error.message);
      return;
    }
  }
}

process.on("message", (message: ParentMessage) => {
  if (message.t === "stmgr-port") {
    stmgrPort = message.port;
    link.retarget({ host: cluster.host, port: stmgrPort });
  }
});

const reportTimer = setInterval(() => {
  link.ready?.send({
    t: "report",
    tuplesIn: executor.tuplesIn,
    tuplesOut: executor.tuplesOut,
    dropped: executor.dropped,
    throttled: executor.throttled,
    status: { ...executor.status, checkpoints: executor.checkpointStatus() },
    stats: processStats(),
  });
}, cluster.heartbeatMs);

log.info({ event: "started", stage: placement.stage, index: placement.index }, "instance started");
announceReady({});
exitWithParent(() => {
  clearInterval(reportTimer);
  executor.stop();
  link.close();
  log.info({ event: "stopped" }, "instance stopped");
});
