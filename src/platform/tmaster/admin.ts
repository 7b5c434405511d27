/**
 * The admin surface: GET /status (JSON), GET /metrics (Prometheus text), POST /kill (a real
 * SIGKILL of one instance or of every process of one container) and POST /move (move a replica
 * to another container); the POSTs need the cluster secret as a bearer token. Served on the
 * loopback interface by the topology manager.
 */
import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Logger } from "pino";
import { Counter, Gauge, Registry } from "prom-client";
import { z } from "zod";
import { parseReplicaName } from "../plan/physical-plan.js";
import { MoveError, type InstanceStatus, type PlanTracker } from "./plan-tracker.js";

const killSchema = z.union([
  z.object({ replica: z.string() }).strict(),
  z.object({ container: z.number().int().min(0) }).strict(),
]);
const moveSchema = z
  .object({ replica: z.string(), to: z.number().int().min(0), force: z.boolean().optional() })
  .strict();

export interface AdminOptions {
  readonly tracker: PlanTracker;
  /** Sends the plan to every stream manager if it changed. */
  readonly planChanged: () => void;
  readonly secret: string;
  readonly log: Logger;
  readonly startedAtMs: number;
  readonly now: () => number;
}

export function createAdminServer(options: AdminOptions): Server {
  const registry = createMetrics(options.tracker);
  return createServer((request, response) => {
    handle(options, registry, request, response).catch((error: Error) => {
      options.log.error({ err: error }, "admin request failed");
      reply(response, 500, { error: error.message });
    });
  });
}

async function handle(
  options: AdminOptions,
  registry: Registry,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  const { tracker } = options;
  const path = new URL(request.url ?? "/", "http://admin").pathname;
  if (request.method === "GET" && path === "/status") {
    return reply(response, 200, {
      topology: tracker.plan.topology.name,
      containers: tracker.containerStatus(options.now()),
      instances: tracker.instances(),
      tmaster: { pid: process.pid, uptimeMs: options.now() - options.startedAtMs },
    });
  }
  if (request.method === "GET" && path === "/metrics") {
    response.writeHead(200, { "content-type": registry.contentType });
    response.end(await registry.metrics());
    return;
  }
  if (request.method === "POST" && path === "/kill") {
    if (!authorized(request, options.secret))
      return reply(response, 401, { error: "bad or missing token" });
    const body = killSchema.safeParse(await readJson(request));
    if (!body.success)
      return reply(response, 400, { error: "expected {replica: 'stage:index'} or {container: n}" });
    let pids: number[];
    if ("replica" in body.data) {
      const instance = findReplica(tracker, body.data.replica);
      if ("error" in instance) return reply(response, instance.status, { error: instance.error });
      if (instance.pid === null)
        return reply(response, 409, { error: `${body.data.replica} is not running` });
      pids = [instance.pid];
    } else {
      if (body.data.container >= tracker.plan.containers) {
        return reply(response, 404, { error: `no container ${body.data.container}` });
      }
      pids = tracker.containerPids(body.data.container);
      if (pids.length === 0) {
        return reply(response, 409, { error: `container ${body.data.container} is down` });
      }
    }
    const killed = pids.filter((pid) => {
      try {
        process.kill(pid, "SIGKILL");
        return true;
      } catch {
        return false;
      }
    });
    options.log.info({ event: "kill", target: body.data, killed }, "fault injected: SIGKILL");
    return reply(response, 200, { killed });
  }
  if (request.method === "POST" && path === "/move") {
    if (!authorized(request, options.secret))
      return reply(response, 401, { error: "bad or missing token" });
    const body = moveSchema.safeParse(await readJson(request));
    if (!body.success) {
      return reply(response, 400, {
        error: "expected {replica: 'stage:index', to: container, force?: boolean}",
      });
    }
    const instance = findReplica(tracker, body.data.replica);
    if ("error" in instance) return reply(response, instance.status, { error: instance.error });
    let move;
    try {
      move = tracker.move(instance.task, body.data.to, body.data.force);
    } catch (error) {
      if (!(error instanceof MoveError)) throw error;
      return reply(response, error.status, { error: error.message });
    }
    options.log.info({ event: "move", replica: body.data.replica, ...move }, "replica moving");
    options.planChanged();
    return reply(response, 200, { from: move.from, to: move.to });
  }
  reply(response, 404, { error: `no route ${request.method} ${path}` });
}

/** The replica named `stage:index`, or the status and error to answer with. */
function findReplica(
  tracker: PlanTracker,
  name: string,
): InstanceStatus | { status: 400 | 404; error: string } {
  let replica;
  try {
    replica = parseReplicaName(name);
  } catch (error) {
    return { status: 400, error: (error as Error).message };
  }
  const instance = tracker
    .instances()
    .find((i) => i.stage === replica.stage && i.index === replica.index);
  return instance ?? { status: 404, error: `no replica ${name}` };
}

/** Metric labels of a replica; "none" while it moves between containers. */
function labelsOf(i: InstanceStatus): { stage: string; index: string; container: string } {
  return { stage: i.stage, index: String(i.index), container: String(i.container ?? "none") };
}

function authorized(request: IncomingMessage, secret: string): boolean {
  const expected = Buffer.from(`Bearer ${secret}`);
  const given = Buffer.from(request.headers.authorization ?? "");
  return given.length === expected.length && timingSafeEqual(given, expected);
}

async function readJson(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > 64 * 1024) return undefined;
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    return undefined;
  }
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "content-type": "application/json" });
  response.end(JSON.stringify(body));
}

/** The part of a replica's report about its checkpoints (instance/executor.ts). */
interface CheckpointReport {
  instance?: {
    writes: number;
    updatesWritten: number;
    bytes: number;
    lastWriteMs: number;
    stalled: string | null;
  } | null;
  group?: { saves: number; bytes: number; stalled: string | null } | null;
  gpc?: { lastAlignmentMs: number; abandoned: number; restores: number } | null;
}

function createMetrics(tracker: PlanTracker): Registry {
  const registry = new Registry();
  const labelNames = ["stage", "index", "container"] as const;
  const perInstance = <K extends keyof ReturnType<PlanTracker["instances"]>[number]>(
    metric: Counter<(typeof labelNames)[number]> | Gauge<(typeof labelNames)[number]>,
    key: K,
  ) => {
    metric.reset();
    for (const i of tracker.instances()) {
      const value = i[key];
      if (typeof value !== "number") continue;
      const labels = labelsOf(i);
      if (metric instanceof Counter) metric.inc(labels, value);
      else metric.set(labels, value);
    }
  };
  const counter = (
    name: string,
    help: string,
    key: "tuplesIn" | "tuplesOut" | "dropped" | "restarts" | "cpuSeconds",
  ) =>
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        perInstance(this, key);
      },
    });
  const gauge = (name: string, help: string, key: "queueBytes" | "rssBytes" | "incarnation") =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        perInstance(this, key);
      },
    });
  counter("tara_instance_tuples_in_total", "Tuples delivered to the instance", "tuplesIn");
  counter("tara_instance_tuples_out_total", "Tuples emitted by the instance", "tuplesOut");
  counter(
    "tara_instance_dropped_total",
    "Tuples the instance could not hand to its stream manager",
    "dropped",
  );
  counter("tara_instance_restarts_total", "Restarts of the replica", "restarts");
  counter("tara_instance_cpu_seconds_total", "CPU time of the instance process", "cpuSeconds");
  gauge(
    "tara_instance_queue_bytes",
    "Bytes queued in the stream manager for the instance",
    "queueBytes",
  );
  gauge("tara_instance_rss_bytes", "Resident memory of the instance process", "rssBytes");
  gauge("tara_instance_incarnation", "Incarnation number of the replica", "incarnation");
  new Gauge({
    name: "tara_instance_up",
    help: "1 when the instance is connected to its stream manager",
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const i of tracker.instances()) {
        this.set(labelsOf(i), i.state === "running" ? 1 : 0);
      }
    },
  });
  // Checkpoints, from what each replica reports (docs/CHECKPOINTING.md).
  const fromCheckpoints = (
    name: string,
    help: string,
    kind: "counter" | "gauge",
    pick: (c: CheckpointReport) => number | undefined,
  ) => {
    const collect = function (this: Counter<string> | Gauge<string>) {
      this.reset();
      for (const i of tracker.instances()) {
        const report = i.status.checkpoints as CheckpointReport | undefined;
        const value = report ? pick(report) : undefined;
        if (value === undefined) continue;
        const labels = labelsOf(i);
        if (this instanceof Counter) this.inc(labels, value);
        else this.set(labels, value);
      }
    };
    if (kind === "counter") new Counter({ name, help, labelNames, registers: [registry], collect });
    else new Gauge({ name, help, labelNames, registers: [registry], collect });
  };
  fromCheckpoints(
    "tara_checkpoint_writes_total",
    "Instance checkpoint writes (each a group commit of updates)",
    "counter",
    (c) => c.instance?.writes,
  );
  fromCheckpoints(
    "tara_checkpoint_updates_total",
    "Instance updates written (divided by writes: the batch size)",
    "counter",
    (c) => c.instance?.updatesWritten,
  );
  fromCheckpoints(
    "tara_checkpoint_bytes_total",
    "Checkpoint bytes written (instance and group)",
    "counter",
    (c) => (c.instance?.bytes ?? 0) + (c.group?.bytes ?? 0),
  );
  fromCheckpoints(
    "tara_checkpoint_write_seconds",
    "Duration of the last instance checkpoint write",
    "gauge",
    (c) => (c.instance ? c.instance.lastWriteMs / 1000 : undefined),
  );
  fromCheckpoints(
    "tara_checkpoint_group_saves_total",
    "Group checkpoints saved by the platform (LPC)",
    "counter",
    (c) => c.group?.saves,
  );
  fromCheckpoints(
    "tara_checkpoint_stalled",
    "1 while the replica cannot write its checkpoints (store unreachable)",
    "gauge",
    (c) => (c.instance?.stalled || c.group?.stalled ? 1 : 0),
  );
  fromCheckpoints(
    "tara_gpc_alignment_seconds",
    "GPC: from the replica's snapshot to the last input's marker, for its last checkpoint",
    "gauge",
    (c) => (c.gpc ? c.gpc.lastAlignmentMs / 1000 : undefined),
  );
  fromCheckpoints(
    "tara_gpc_abandoned_total",
    "GPC: checkpoints the replica abandoned (markers timed out or overtaken)",
    "counter",
    (c) => c.gpc?.abandoned,
  );
  fromCheckpoints(
    "tara_gpc_rollbacks_total",
    "GPC: rollbacks of the replica to a global checkpoint",
    "counter",
    (c) => c.gpc?.restores,
  );
  const containerLabels = ["container"] as const;
  const perContainer = (
    name: string,
    help: string,
    pick: (c: ReturnType<PlanTracker["containerStatus"]>[number]) => number | null,
    kind: "counter" | "gauge",
  ) => {
    const collect = function (this: Counter<"container"> | Gauge<"container">) {
      this.reset();
      for (const c of tracker.containerStatus(Date.now())) {
        const value = pick(c);
        if (value === null) continue;
        if (this instanceof Counter) this.inc({ container: String(c.container) }, value);
        else this.set({ container: String(c.container) }, value);
      }
    };
    if (kind === "counter")
      new Counter({ name, help, labelNames: containerLabels, registers: [registry], collect });
    else new Gauge({ name, help, labelNames: containerLabels, registers: [registry], collect });
  };
  perContainer(
    "tara_stmgr_routed_total",
    "Tuple deliveries routed by the stream manager",
    (c) => c.routed,
    "counter",
  );
  perContainer(
    "tara_stmgr_dropped_total",
    "Tuples dropped for replicas or peers that were down",
    (c) => c.dropped,
    "counter",
  );
  perContainer(
    "tara_stmgr_cpu_seconds_total",
    "CPU time of the stream manager process",
    (c) => c.cpuSeconds,
    "counter",
  );
  perContainer(
    "tara_stmgr_rss_bytes",
    "Resident memory of the stream manager process",
    (c) => c.rssBytes,
    "gauge",
  );
  perContainer(
    "tara_stmgr_restarts_total",
    "Restarts of the stream manager",
    (c) => c.stmgr?.restarts ?? null,
    "counter",
  );
  perContainer(
    "tara_container_backpressure",
    "1 while the container's sources are throttled",
    (c) => (c.backpressure ? 1 : 0),
    "gauge",
  );
  perContainer(
    "tara_container_up",
    "1 while the container's stream manager heartbeats",
    (c) => (c.state === "up" ? 1 : 0),
    "gauge",
  );
  return registry;
}
