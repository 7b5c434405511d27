/**
 * Stream manager of one container. Local instances connect to it; it keeps one outgoing link
 * to every peer stream manager (found through the topology manager's plan), routes tuples,
 * throttles the container's sources when any link backs up anywhere, and reports the
 * container to the topology manager every heartbeat and at once on any instance change.
 */
import { replicaName } from "../plan/physical-plan.js";
import {
  announceReady,
  exitWithParent,
  type ChildMessage,
  type ParentMessage,
} from "../runtime/child.js";
import {
  logDirOf,
  mechanismOf,
  usesCheckpointManager,
  readProcessConfig,
  isGlobalCheckpointing,
} from "../runtime/config.js";
import { createLogger } from "../runtime/log.js";
import { processStats } from "../runtime/process-stats.js";
import { loadPlan } from "../runtime/topology-loader.js";
import { ClientLink, listen } from "../transport/tcp.js";
import type { Connection } from "../wire/connection.js";
import { WireError } from "../wire/errors.js";
import {
  EMIT,
  FORWARD,
  backpressureSchema,
  ckptErrorSchema,
  ckptLoadSchema,
  ckptOkSchema,
  ckptPartSchema,
  ckptPruneSchema,
  ckptPutSchema,
  gpcCheckpointSchema,
  gpcFenceSchema,
  gpcGlobalSchema,
  gpcRestoredSchema,
  gpcRestoreSchema,
  gpcResumeSchema,
  gpcSavedSchema,
  messageParser,
  planSchema,
  registerSchema,
  reportSchema,
  type Backpressure,
  type CkptReply,
  type CkptRequest,
  type GpcCommand,
  type GpcFence,
  type GpcReport,
  type TupleFrame,
  type InstanceReport,
  type PlanUpdate,
  type Register,
  type Report,
} from "../wire/messages.js";
import { CheckpointRelay, type RelayClient } from "./checkpoint-relay.js";
import { GpcStmgr } from "./gpc.js";
import { Router } from "./router.js";

/** Above this a link is congested (backpressure on); at half of it, drained. */
const HIGH_WATERMARK_BYTES = 4 * 1024 * 1024;
/** A link queue this deep is broken: the connection is closed rather than grow without bound. */
const HARD_LIMIT_BYTES = 64 * 1024 * 1024;

const config = readProcessConfig();
const { cluster } = config;
const container = config.container!;
const plan = await loadPlan(cluster);
const log = createLogger(`stmgr-${container}`, logDirOf(cluster), { container });
const secret = Buffer.from(cluster.secret, "hex");
const router = new Router(plan, container, isGlobalCheckpointing(cluster.checkpoints));

interface LocalInstance {
  task: number;
  connection: Connection<InstanceMessage>;
  incarnation: number;
  pid: number;
  report: Report | undefined;
  /** When the instance last reported (or registered), ms. */
  lastHeardMs: number;
  checkpoints: RelayClient;
}
type InstanceMessage = Register | Report | TupleFrame<typeof EMIT> | CkptRequest | GpcReport;
type PeerMessage = TupleFrame<typeof FORWARD> | Backpressure | GpcFence;

const instances = new Map<number, LocalInstance>();
/** Local instances registered but not yet told to start. */
const awaitingStart = new Set<LocalInstance>();
let latestPlan: PlanUpdate | undefined;
/** The tasks the latest plan places here; none before the first plan. */
let hosted = new Set<number>();
/** What the supervisor last said it runs (ParentMessage "hosting"). */
let hosting: { version: number; tasks: number[] } | null = null;
/** Last known incarnation of local tasks, for the report of a dead one. */
const lastIncarnation = new Map<number, number>();
const peerLinks = new Map<number, ClientLink<never>>();
const remoteBackpressure = new Set<number>();
let localBackpressure = false;
let sourcesThrottled = false;
/** LPC-CM: the link to this container's checkpoint manager, once the supervisor names its port. */
let ckptmgrLink: ClientLink<CkptReply> | undefined;
const relay = new CheckpointRelay(
  `${plan.topology.name}.${cluster.run}`,
  log,
  plan.topology.stages.some((stage) =>
    usesCheckpointManager(mechanismOf(cluster.checkpoints, stage.name)),
  ),
);

/** GPC: commands, reports, the sources' log and the rollback's fences (stmgr/gpc.ts). */
const gpc = isGlobalCheckpointing(cluster.checkpoints)
  ? new GpcStmgr(plan, container, {
      toInstance: (task, command) => instances.get(task)?.connection.send(command),
      toTmaster: (report) => tmaster.ready?.send(report),
      fencePeers: (fence) => {
        for (const link of peerLinks.values()) link.ready?.send(fence);
      },
      replay: (task, records) => router.fromInstance(task, records),
      log,
    })
  : undefined;

const { port } = await listen<InstanceMessage | PeerMessage>(
  { host: cluster.host, port: 0 },
  {
    secret,
    log,
    highWatermarkBytes: HIGH_WATERMARK_BYTES,
    parse: messageParser(
      [EMIT, FORWARD],
      [
        registerSchema,
        reportSchema,
        backpressureSchema,
        ckptPutSchema,
        ckptPartSchema,
        ckptLoadSchema,
        ckptPruneSchema,
        gpcSavedSchema,
        gpcRestoredSchema,
        gpcFenceSchema,
      ],
    ),
  },
  (connection) => {
    connection.start({
      onReady: (peer) => {
        if (peer.role === "instance") {
          acceptInstance(connection as Connection<InstanceMessage>, peer.id);
        } else if (peer.role === "peer") acceptPeer(connection as Connection<PeerMessage>, peer.id);
        else connection.close(`role ${peer.role} may not connect to a stream manager`);
      },
      onMessage: () => connection.close("message before role was known"),
    });
  },
);

/** `name`: the `stage:index` the instance authenticated as; it may register only that task. */
function acceptInstance(connection: Connection<InstanceMessage>, name: string): void {
  let self: LocalInstance | undefined;
  connection.start({
    onMessage: (message) => {
      if (Array.isArray(message)) {
        if (message[0] !== EMIT || !self) return connection.close("emit before register");
        if (gpc && !gpc.acceptEmit(self.task, message[1])) return;
        try {
          router.fromInstance(self.task, message[1]);
        } catch (error) {
          log.warn({
            event: "frame-rejected",
            code: codeOf(error),
            reason: (error as Error).message,
            task: self.task,
          });
          connection.close((error as Error).message);
        }
        checkCongestion();
        return;
      }
      switch (message.t) {
        case "register": {
          const placement = plan.tasks[message.task];
          if (self || !placement || replicaName(placement) !== name) {
            return connection.close(`bad registration for task ${message.task}`);
          }
          // Before the first plan too: the supervisor only starts what a plan placed here.
          if (!hosted.has(message.task))
            return connection.close(`${name} does not run in container ${container} now`);
          instances.get(message.task)?.connection.close("replaced by a new incarnation");
          self = {
            task: message.task,
            connection,
            incarnation: message.incarnation,
            pid: message.pid,
            report: undefined,
            lastHeardMs: Date.now(),
            checkpoints: relay.client({
              task: message.task,
              stage: placement.stage,
              index: placement.index,
              send: (reply) => connection.send(reply),
            }),
          };
          instances.set(message.task, self);
          lastIncarnation.set(message.task, message.incarnation);
          router.local.set(message.task, connection);
          if (sourcesThrottled && placement && isSource(message.task))
            connection.send({ t: "throttle", on: true });
          log.info(
            {
              event: "instance-connected",
              instance: replicaName(placement),
              incarnation: message.incarnation,
              pid: message.pid,
            },
            "instance connected",
          );
          awaitingStart.add(self);
          startInstances();
          sendHeartbeat();
          return;
        }
        case "report":
          if (self) {
            self.report = message;
            self.lastHeardMs = Date.now();
          }
          return;
        case "gpc-saved":
        case "gpc-restored":
          if (self) gpc?.fromInstance(self.task, message);
          return;
        case "ckpt-put":
        case "ckpt-part":
        case "ckpt-load":
        case "ckpt-prune":
          if (!self) return connection.close("checkpoint request before register");
          try {
            self.checkpoints.handle(message);
          } catch (error) {
            log.warn({
              event: "frame-rejected",
              code: codeOf(error),
              reason: (error as Error).message,
              task: self.task,
            });
            connection.close((error as Error).message);
          }
          return;
        default:
          return connection.close(`unexpected ${(message as { t: string }).t} from an instance`);
      }
    },
    onDrain: checkCongestion,
    onClose: (reason) => {
      self?.checkpoints.close();
      if (!self || instances.get(self.task) !== self) return;
      instances.delete(self.task);
      awaitingStart.delete(self);
      router.local.delete(self.task);
      log.info(
        {
          event: "instance-disconnected",
          instance: replicaName(plan.tasks[self.task]!),
          incarnation: self.incarnation,
          reason,
        },
        "instance disconnected",
      );
      sendHeartbeat();
      checkCongestion();
    },
  });
}

function acceptPeer(connection: Connection<PeerMessage>, id: string): void {
  const from = Number(id);
  connection.start({
    onMessage: (message) => {
      if (Array.isArray(message)) {
        if (message[0] !== FORWARD) return connection.close("peers only forward tuples");
        if (gpc && !gpc.acceptForward(from)) return; // the old run's, before a rollback
        try {
          router.fromPeer(message[1]);
        } catch (error) {
          log.warn({
            event: "frame-rejected",
            code: codeOf(error),
            reason: (error as Error).message,
            peer: from,
          });
          connection.close((error as Error).message);
        }
        checkCongestion();
        return;
      }
      if (message.t === "gpc-fence") return gpc?.fence(from, message);
      if (message.t !== "backpressure")
        return connection.close(`unexpected ${(message as { t: string }).t} from a peer`);
      if (message.on) remoteBackpressure.add(message.container);
      else remoteBackpressure.delete(message.container);
      updateSourceThrottle();
    },
    onClose: () => {
      remoteBackpressure.delete(from);
      updateSourceThrottle();
    },
  });
}

function codeOf(error: unknown): string {
  return error instanceof WireError ? error.code : "INTERNAL";
}

function isSource(task: number): boolean {
  const stage = plan.tasks[task]!.stage;
  return plan.topology.stages.find((s) => s.name === stage)!.isSource;
}

/** Every outgoing queue of this stream manager: local instances and peers. */
function outgoing(): Connection<unknown>[] {
  const list: Connection<unknown>[] = [];
  for (const instance of instances.values()) list.push(instance.connection as Connection<unknown>);
  for (const link of peerLinks.values()) {
    const ready = link.ready;
    if (ready) list.push(ready as Connection<unknown>);
  }
  return list;
}

function checkCongestion(): void {
  let congested = false;
  for (const connection of outgoing()) {
    if (connection.queuedBytes > HARD_LIMIT_BYTES) {
      log.warn({
        event: "link-overflow",
        remote: connection.peer?.id,
        bytes: connection.queuedBytes,
      });
      connection.close("queue over the hard limit");
      continue;
    }
    congested ||= connection.isCongested;
  }
  if (congested === localBackpressure) return;
  localBackpressure = congested;
  log.info({ event: congested ? "backpressure-on" : "backpressure-off" }, "backpressure changed");
  for (const link of peerLinks.values())
    link.ready?.send({ t: "backpressure", container, on: congested });
  updateSourceThrottle();
}

function updateSourceThrottle(): void {
  const throttle = localBackpressure || remoteBackpressure.size > 0;
  if (throttle === sourcesThrottled) return;
  sourcesThrottled = throttle;
  for (const instance of instances.values()) {
    if (isSource(instance.task)) instance.connection.send({ t: "throttle", on: throttle });
  }
}

/**
 * Instances start once the topology has started (every replica was up at least once) and this
 * stream manager is connected to every live peer, so that their first tuples find every route.
 */
function startInstances(): void {
  if (awaitingStart.size === 0 || !latestPlan?.started) return;
  const peersUp = latestPlan.stmgrs.every(
    (s) => s.container === container || router.peers.has(s.container),
  );
  if (!peersUp) return;
  for (const instance of awaitingStart) {
    instance.connection.send({ t: "start" });
    gpc?.instanceStarted(instance.task);
  }
  awaitingStart.clear();
}

function applyPlan(update: PlanUpdate): void {
  latestPlan = update;
  router.place(update.instances);
  router.remoteRunning = new Set(
    update.instances
      .filter((i) => i.state === "running" && i.container !== container)
      .map((i) => i.task),
  );
  const here = update.instances.filter((i) => i.container === container);
  const nowHosted = new Set(here.map((i) => i.task));
  const changed = nowHosted.size !== hosted.size || here.some((i) => !hosted.has(i.task));
  hosted = nowHosted;
  for (const instance of instances.values()) {
    if (!hosted.has(instance.task)) instance.connection.close("moved to another container");
  }
  // The supervisor starts and stops instances by this; the first plan tells a new one.
  if (changed || hosting === null) {
    process.send?.({
      t: "host",
      version: update.version,
      tasks: here.map((i) => ({ task: i.task, incarnation: i.incarnation })),
    } satisfies ChildMessage);
  }
  for (const endpoint of update.stmgrs) {
    if (endpoint.container === container) continue;
    const address = { host: endpoint.host, port: endpoint.port };
    const existing = peerLinks.get(endpoint.container);
    if (existing) {
      existing.retarget(address);
      continue;
    }
    const peer = endpoint.container;
    const link = new ClientLink<never>(
      address,
      { role: "peer", id: String(container) },
      { secret, log, highWatermarkBytes: HIGH_WATERMARK_BYTES, parse: messageParser([], []) },
      {
        onReady: (connection) => {
          router.peers.set(peer, connection);
          if (localBackpressure) connection.send({ t: "backpressure", container, on: true });
          // A new connection carries nothing of an older run: it starts fenced (GPC).
          const fence = gpc?.fenceForNewLink();
          if (fence) connection.send(fence);
          log.info({ event: "peer-connected", peer }, "connected to peer stream manager");
          startInstances();
        },
        onMessage: () => undefined,
        onDown: (reason) => {
          if (router.peers.delete(peer)) {
            log.info({ event: "peer-disconnected", peer, reason }, "lost peer stream manager");
          }
          checkCongestion();
        },
        onDrain: checkCongestion,
      },
    );
    peerLinks.set(peer, link);
  }
  startInstances();
}

/** Connects (or reconnects) to the checkpoint manager where the supervisor says it listens. */
function connectCkptmgr(ckptmgrPort: number): void {
  const address = { host: cluster.host, port: ckptmgrPort };
  if (ckptmgrLink) return ckptmgrLink.retarget(address);
  ckptmgrLink = new ClientLink<CkptReply>(
    address,
    { role: "stmgr", id: String(container) },
    { secret, log, parse: messageParser([], [ckptOkSchema, ckptPartSchema, ckptErrorSchema]) },
    {
      onReady: (connection) => {
        relay.managerUp((request) => connection.send(request));
        log.info({ event: "ckptmgr-connected", port: ckptmgrPort }, "checkpoint manager connected");
      },
      onMessage: (reply) => {
        try {
          relay.fromManager(reply);
        } catch (error) {
          log.warn({ event: "frame-rejected", code: codeOf(error), reason: String(error) });
          ckptmgrLink?.ready?.close((error as Error).message);
        }
      },
      onDown: (reason) => {
        if (!relay.connected) return;
        relay.managerDown(reason);
        log.info({ event: "ckptmgr-disconnected", reason }, "lost the checkpoint manager");
      },
    },
  );
}

process.on("message", (message: ParentMessage) => {
  if (message.t === "ckptmgr-port") connectCkptmgr(message.port);
  if (message.t === "hosting") {
    hosting = { version: message.version, tasks: message.tasks };
    sendHeartbeat();
  }
});

const tmaster = new ClientLink<PlanUpdate | GpcCommand>(
  { host: cluster.host, port: cluster.tmasterPort },
  { role: "stmgr", id: String(container) },
  {
    secret,
    log,
    parse: messageParser(
      [],
      [planSchema, gpcCheckpointSchema, gpcGlobalSchema, gpcRestoreSchema, gpcResumeSchema],
    ),
  },
  {
    onReady: (connection) => {
      connection.send({
        t: "stmgr",
        container,
        host: cluster.host,
        port,
        pid: process.pid,
        supervisorPid: process.ppid,
      });
      sendHeartbeat();
      log.info({ event: "tmaster-connected" }, "registered with the topology manager");
    },
    onMessage: (message) => {
      if (message.t === "plan") applyPlan(message);
      else gpc?.command(message);
    },
    onDown: (reason) =>
      log.info({ event: "tmaster-disconnected", reason }, "lost the topology manager"),
  },
);

/** Connected but not reporting: its event loop is stuck (the topology manager kills it). */
function isSilent(instance: LocalInstance): boolean {
  return Date.now() - instance.lastHeardMs > cluster.instanceTimeoutMs;
}

function instanceReports(): InstanceReport[] {
  return plan.tasks
    .filter((t) => hosted.has(t.task))
    .map((t) => {
      const instance = instances.get(t.task);
      const report = instance?.report;
      return {
        task: t.task,
        state: !instance ? "dead" : isSilent(instance) ? "silent" : "running",
        pid: instance?.pid ?? 0,
        incarnation: instance?.incarnation ?? lastIncarnation.get(t.task) ?? 0,
        tuplesIn: report?.tuplesIn ?? 0,
        tuplesOut: report?.tuplesOut ?? 0,
        dropped: report?.dropped ?? 0,
        throttled: report?.throttled ?? false,
        queueBytes: instance?.connection.queuedBytes ?? 0,
        status: report?.status ?? {},
        stats: report?.stats ?? null,
      };
    });
}

function sendHeartbeat(): void {
  tmaster.ready?.send({
    t: "heartbeat",
    instances: instanceReports(),
    peers: [...peerLinks.entries()].map(([peer, link]) => ({
      container: peer,
      connected: link.ready !== undefined,
      queueBytes: link.ready?.queuedBytes ?? 0,
    })),
    backpressure: sourcesThrottled,
    routed: router.routed,
    dropped: router.dropped,
    stats: processStats(),
    hosting,
  });
}

const heartbeatTimer = setInterval(sendHeartbeat, cluster.heartbeatMs);
log.info({ event: "started", port }, "stream manager started");
announceReady({ port });
exitWithParent(() => {
  clearInterval(heartbeatTimer);
  tmaster.close();
  ckptmgrLink?.close();
  for (const link of peerLinks.values()) link.close();
  log.info({ event: "stopped" }, "stream manager stopped");
});
