/**
 * The topology manager's view of the physical plan: which stream manager serves each
 * container, and the state, pid and incarnation of every instance, as the stream managers
 * report them. A container whose stream manager disconnects or goes silent longer than the
 * heartbeat timeout has all its instances marked dead. Pure: time comes in as arguments.
 */
import type { PhysicalPlan } from "../plan/physical-plan.js";
import type {
  Heartbeat,
  InstanceReport,
  InstanceState,
  PlanUpdate,
  StmgrRegistration,
} from "../wire/messages.js";

interface ContainerState {
  registration: StmgrRegistration | undefined;
  heartbeat: Heartbeat | undefined;
  lastHeartbeatMs: number;
  alive: boolean;
  /** Times this container's stream manager registered; >1 means it was restarted. */
  registrations: number;
}

export interface InstanceStatus {
  stage: string;
  index: number;
  task: number;
  container: number;
  pid: number | null;
  state: InstanceState;
  incarnation: number;
  restarts: number;
  tuplesIn: number;
  tuplesOut: number;
  dropped: number;
  throttled: boolean;
  queueBytes: number;
  rssBytes: number | null;
  cpuSeconds: number | null;
  status: Record<string, unknown>;
}

export interface ContainerStatus {
  container: number;
  state: "up" | "down";
  stmgr: { pid: number; host: string; port: number; restarts: number } | null;
  supervisorPid: number | null;
  backpressure: boolean;
  routed: number;
  dropped: number;
  rssBytes: number | null;
  cpuSeconds: number | null;
  lastHeartbeatAgoMs: number | null;
}

export class PlanTracker {
  private readonly containers = new Map<number, ContainerState>();
  private lastPlan = "";
  private version = 0;

  /**
   * @param started whether the topology already ran with every replica up (persisted by the
   *   topology manager): until then instances wait, so the first tuples find every route.
   */
  constructor(
    readonly plan: PhysicalPlan,
    private readonly heartbeatTimeoutMs: number,
    public started = false,
  ) {}

  register(registration: StmgrRegistration, nowMs: number): void {
    const state = this.container(registration.container);
    state.registration = registration;
    state.heartbeat = undefined;
    state.alive = true;
    state.lastHeartbeatMs = nowMs;
    state.registrations++;
  }

  heartbeat(container: number, heartbeat: Heartbeat, nowMs: number): void {
    const state = this.container(container);
    state.heartbeat = heartbeat;
    state.lastHeartbeatMs = nowMs;
    state.alive = true;
  }

  disconnected(container: number): void {
    this.container(container).alive = false;
  }

  /** Marks silent containers dead; returns the containers that just died. */
  expire(nowMs: number): number[] {
    const died: number[] = [];
    for (const [id, state] of this.containers) {
      if (state.alive && nowMs - state.lastHeartbeatMs > this.heartbeatTimeoutMs) {
        state.alive = false;
        died.push(id);
      }
    }
    return died;
  }

  /** The plan to broadcast if it changed since the last call, else undefined. */
  planUpdate(): PlanUpdate | undefined {
    const body = this.planBody();
    const text = JSON.stringify(body);
    if (text === this.lastPlan) return undefined;
    this.lastPlan = text;
    return { t: "plan", version: ++this.version, ...body };
  }

  /** The whole current plan, for a stream manager that just registered. */
  currentPlan(): PlanUpdate {
    return this.planUpdate() ?? { t: "plan", version: this.version, ...this.planBody() };
  }

  private planBody(): Omit<PlanUpdate, "t" | "version"> {
    const instances = this.plan.tasks.map((t) => {
      const report = this.report(t.task, t.container);
      return {
        task: t.task,
        state: report?.state ?? "starting",
        incarnation: report?.incarnation ?? 0,
      };
    });
    this.started ||= instances.every((i) => i.state === "running");
    return {
      started: this.started,
      stmgrs: [...this.containers.entries()]
        .filter(([, s]) => s.alive && s.registration)
        .map(([container, s]) => ({
          container,
          host: s.registration!.host,
          port: s.registration!.port,
        })),
      instances,
    };
  }

  instances(): InstanceStatus[] {
    return this.plan.tasks.map((t) => {
      const report = this.report(t.task, t.container);
      const incarnation = report?.incarnation ?? 0;
      return {
        stage: t.stage,
        index: t.index,
        task: t.task,
        container: t.container,
        pid: report && report.pid > 0 ? report.pid : null,
        state: report?.state ?? "starting",
        incarnation,
        restarts: Math.max(0, incarnation - 1),
        tuplesIn: report?.tuplesIn ?? 0,
        tuplesOut: report?.tuplesOut ?? 0,
        dropped: report?.dropped ?? 0,
        throttled: report?.throttled ?? false,
        queueBytes: report?.queueBytes ?? 0,
        rssBytes: report?.stats?.rssBytes ?? null,
        cpuSeconds: report?.stats
          ? (report.stats.cpuUserUs + report.stats.cpuSystemUs) / 1e6
          : null,
        status: report?.status ?? {},
      };
    });
  }

  containerStatus(nowMs: number): ContainerStatus[] {
    const list: ContainerStatus[] = [];
    for (let id = 0; id < this.plan.containers; id++) {
      const s = this.containers.get(id);
      const r = s?.registration;
      const stats = s?.heartbeat?.stats;
      list.push({
        container: id,
        state: s?.alive ? "up" : "down",
        stmgr: r ? { pid: r.pid, host: r.host, port: r.port, restarts: s.registrations - 1 } : null,
        supervisorPid: r?.supervisorPid ?? null,
        backpressure: s?.heartbeat?.backpressure ?? false,
        routed: s?.heartbeat?.routed ?? 0,
        dropped: s?.heartbeat?.dropped ?? 0,
        rssBytes: stats?.rssBytes ?? null,
        cpuSeconds: stats ? (stats.cpuUserUs + stats.cpuSystemUs) / 1e6 : null,
        lastHeartbeatAgoMs: s ? nowMs - s.lastHeartbeatMs : null,
      });
    }
    return list;
  }

  /**
   * Pids of every process of a live container: supervisor, stream manager, instances. None
   * for a container that is down: its last known pids may already belong to someone else.
   */
  containerPids(container: number): number[] {
    const s = this.containers.get(container);
    if (!s?.alive) return [];
    const pids = new Set<number>();
    if (s?.registration) {
      pids.add(s.registration.supervisorPid);
      pids.add(s.registration.pid);
    }
    for (const report of s?.heartbeat?.instances ?? []) if (report.pid > 0) pids.add(report.pid);
    return [...pids];
  }

  private report(task: number, container: number): InstanceReport | undefined {
    const s = this.containers.get(container);
    if (!s) return undefined;
    const report = s.heartbeat?.instances.find((i) => i.task === task);
    if (s.alive) return report;
    return {
      task,
      pid: 0,
      incarnation: report?.incarnation ?? 0,
      tuplesIn: report?.tuplesIn ?? 0,
      tuplesOut: report?.tuplesOut ?? 0,
      dropped: report?.dropped ?? 0,
      throttled: false,
      queueBytes: 0,
      status: report?.status ?? {},
      stats: null,
      state: "dead",
    };
  }

  private container(id: number): ContainerState {
    let state = this.containers.get(id);
    if (!state) {
      state = {
        registration: undefined,
        heartbeat: undefined,
        lastHeartbeatMs: 0,
        alive: false,
        registrations: 0,
      };
      this.containers.set(id, state);
    }
    return state;
  }
}
