/**
 * The topology manager's view of the physical plan: which stream manager serves each
 * container, where every task runs, and the state, pid and incarnation of every instance, as
 * the stream managers report them. A container whose stream manager disconnects or goes silent
 * longer than the heartbeat timeout has all its instances marked dead. Pure: time comes in as
 * arguments.
 *
 * Moving a task to another container (`move`) takes two plans: the first places it nowhere, so
 * nothing routes to it and the container it leaves stops it; once that container's supervisor
 * says (in a heartbeat) that, acting on that plan or a later one, it no longer runs the task,
 * the second places it in its new container, whose supervisor starts it with a higher
 * incarnation. So one replica never runs twice. A container that is gone for good cannot say
 * so: the operator asserts it (`force`).
 */
import { replicaName, type PhysicalPlan } from "../plan/physical-plan.js";
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

/** A move under way: the plan of `version` took `task` from container `from`. */
export interface Move {
  task: number;
  from: number;
  to: number;
  /** Unset until that plan is made. */
  version?: number;
}

/** What the topology manager persists so that placements outlive it. */
export interface PlacementState {
  /** Incremented by every topology manager at its start: plan versions of a later one are higher. */
  epoch: number;
  /** Task → container; null while the task moves. */
  placement: (number | null)[];
  moves: Move[];
  /** Highest incarnation each task had. */
  incarnations: number[];
}

export class MoveError extends Error {
  constructor(
    readonly status: 404 | 409,
    message: string,
  ) {
    super(message);
  }
}

export interface PlanTrackerOptions {
  /** The topology already ran with every replica up (persisted by the topology manager). */
  started?: boolean;
  /** What an earlier topology manager persisted; its epoch is the one before ours. */
  persisted?: PlacementState;
  /** Called with the state to persist, durably, before a changed plan goes out. */
  persist?: (state: PlacementState) => void;
  allowColocation?: boolean;
  /** Why tasks cannot move in this deployment, if they cannot. */
  movesRefused?: string;
}

/** Plan versions: the topology manager's epoch above this many plans of one epoch. */
const EPOCH_VERSIONS = 2 ** 32;

export interface InstanceStatus {
  stage: string;
  index: number;
  task: number;
  /** Where it runs; null while it moves. */
  container: number | null;
  move: { from: number; to: number } | null;
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
  private version: number;
  /** Whether the topology ran with every replica up: until then instances wait, so the first
   * tuples find every route. */
  started: boolean;
  private readonly placement: PlacementState;

  constructor(
    readonly plan: PhysicalPlan,
    private readonly heartbeatTimeoutMs: number,
    private readonly options: PlanTrackerOptions = {},
  ) {
    this.started = options.started ?? false;
    const persisted = options.persisted;
    this.placement = {
      epoch: persisted ? persisted.epoch + 1 : 0,
      placement: persisted?.placement ?? plan.tasks.map((t) => t.container),
      moves: persisted?.moves ?? [],
      incarnations: persisted?.incarnations ?? plan.tasks.map(() => 0),
    };
    this.version = this.placement.epoch * EPOCH_VERSIONS;
    this.persist();
  }

  /** Where `task` runs now; null while it moves. */
  containerOf(task: number): number | null {
    return this.placement.placement[task] ?? null;
  }

  /**
   * Starts moving a task to container `to`. `force` asserts that the container it leaves is
   * gone with all its processes; allowed only while that container is down.
   */
  move(task: number, to: number, force = false): Move {
    const placement = this.plan.tasks[task];
    if (!placement) throw new MoveError(404, `no task ${task}`);
    const name = replicaName(placement);
    if (this.options.movesRefused) throw new MoveError(409, this.options.movesRefused);
    if (!Number.isInteger(to) || to < 0 || to >= this.plan.containers)
      throw new MoveError(404, `no container ${to}`);
    if (this.placement.moves.some((m) => m.task === task))
      throw new MoveError(409, `${name} is already moving`);
    const from = this.containerOf(task)!;
    if (from === to) throw new MoveError(409, `${name} already runs in container ${to}`);
    if (!this.options.allowColocation) {
      const sibling = this.plan.tasks.find(
        (t) =>
          t.stage === placement.stage &&
          t.task !== task &&
          (this.containerOf(t.task) === to ||
            this.placement.moves.some((m) => m.task === t.task && m.to === to)),
      );
      if (sibling) {
        throw new MoveError(
          409,
          `container ${to} already has ${replicaName(sibling)}: two replicas of a stage would ` +
            `share a container (allow colocation to accept that)`,
        );
      }
    }
    if (force && this.containers.get(from)?.alive) {
      throw new MoveError(
        409,
        `container ${from} is up: it stops ${name} itself; force is for a container that is gone`,
      );
    }
    const move: Move = { task, from, to };
    this.placement.moves.push(move);
    this.placement.placement[task] = null;
    if (force) this.complete(move);
    else this.persist();
    return move;
  }

  /** The moves under way. */
  moves(): readonly Move[] {
    return this.placement.moves;
  }

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
    const { incarnations } = this.placement;
    for (const report of heartbeat.instances) {
      const here =
        this.containerOf(report.task) === container ||
        this.placement.moves.some((m) => m.task === report.task && m.from === container);
      if (here && report.incarnation > (incarnations[report.task] ?? 0))
        incarnations[report.task] = report.incarnation;
    }
    const hosting = heartbeat.hosting;
    if (!hosting) return;
    for (const move of [...this.placement.moves]) {
      if (
        move.from === container &&
        move.version !== undefined &&
        hosting.version >= move.version &&
        !hosting.tasks.includes(move.task)
      ) {
        this.complete(move);
      }
    }
  }

  /** The container a task left no longer runs it: place it in its new one. */
  private complete(move: Move): void {
    this.placement.moves = this.placement.moves.filter((m) => m !== move);
    this.placement.placement[move.task] = move.to;
    this.persist();
  }

  private persist(): void {
    this.options.persist?.(structuredClone(this.placement));
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
    const version = ++this.version;
    const released = this.placement.moves.filter((m) => m.version === undefined);
    for (const move of released) move.version = version;
    if (released.length > 0) this.persist();
    return { t: "plan", version, ...body };
  }

  /** The whole current plan, for a stream manager that just registered. */
  currentPlan(): PlanUpdate {
    return this.planUpdate() ?? { t: "plan", version: this.version, ...this.planBody() };
  }

  private planBody(): Omit<PlanUpdate, "t" | "version"> {
    const instances = this.plan.tasks.map((t) => {
      const container = this.containerOf(t.task);
      const report = container === null ? undefined : this.report(t.task, container);
      return {
        task: t.task,
        container,
        state: container === null ? ("dead" as const) : (report?.state ?? "starting"),
        // The highest anywhere (heartbeats raise it): a moved task starts above it.
        incarnation: this.placement.incarnations[t.task] ?? 0,
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
      const container = this.containerOf(t.task);
      const move = this.placement.moves.find((m) => m.task === t.task);
      // While it moves: the process the container it leaves may still run.
      const report = this.report(t.task, container ?? move!.from);
      const incarnation = report?.incarnation ?? 0;
      return {
        stage: t.stage,
        index: t.index,
        task: t.task,
        container,
        move: move ? { from: move.from, to: move.to } : null,
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
