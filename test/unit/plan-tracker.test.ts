import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";
import { TopologyBuilder, grouping } from "../../src/platform/api/topology.js";
import { pack } from "../../src/platform/plan/physical-plan.js";
import {
  MoveError,
  PlanTracker,
  type PlacementState,
} from "../../src/platform/tmaster/plan-tracker.js";
import type {
  Heartbeat,
  InstanceReport,
  PlanUpdate,
  StmgrRegistration,
} from "../../src/platform/wire/messages.js";
import { noopSource, noopStage, sub } from "./helpers/topologies.js";

/** src:0 -> task 0 (c0), src:1 -> 1 (c1), work:0 -> 2 (c0), work:1 -> 3 (c1). */
const plan = pack(
  new TopologyBuilder("tracked")
    .source("src", { parallelism: 2, outputs: ["out"] }, noopSource)
    .stage("work", { parallelism: 2, inputs: [sub("src", "out", grouping.shuffle())] }, noopStage)
    .build(),
  { containers: 2 },
);
const TIMEOUT_MS = 5000;
const stats = { rssBytes: 2048, cpuUserUs: 1_500_000, cpuSystemUs: 500_000 };

function registration(container: number, pid = 500 + container): StmgrRegistration {
  return {
    t: "stmgr",
    container,
    host: "127.0.0.1",
    port: 7000 + container,
    pid,
    supervisorPid: 400 + container,
  };
}

function instance(task: number, overrides: Partial<InstanceReport> = {}): InstanceReport {
  return {
    task,
    state: "running",
    pid: 1000 + task,
    incarnation: 1,
    tuplesIn: 10,
    tuplesOut: 20,
    dropped: 0,
    throttled: false,
    queueBytes: 0,
    status: {},
    stats,
    ...overrides,
  };
}

function heartbeat(instances: InstanceReport[], overrides: Partial<Heartbeat> = {}): Heartbeat {
  return {
    t: "heartbeat",
    instances,
    peers: [],
    backpressure: false,
    routed: 100,
    dropped: 1,
    stats,
    hosting: null,
    ...overrides,
  };
}

const byTask = (tracker: PlanTracker, task: number) =>
  tracker.instances().find((i) => i.task === task)!;
const states = (update: PlanUpdate) => update.instances.map((i) => i.state);

describe("PlanTracker", () => {
  let tracker: PlanTracker;
  let lastVersion: number;

  /** planUpdate must return a new plan with the next version. */
  function expectUpdate(): PlanUpdate {
    const update = tracker.planUpdate();
    assert.ok(update, "expected a plan update");
    assert.equal(update.t, "plan");
    assert.equal(update.version, lastVersion + 1, "versions increase by one");
    lastVersion = update.version;
    return update;
  }

  function expectNoUpdate(): void {
    assert.equal(tracker.planUpdate(), undefined, "expected no plan update");
  }

  /** Both containers registered and reporting every instance running. */
  function allUp(nowMs: number): void {
    tracker.register(registration(0), nowMs);
    tracker.register(registration(1), nowMs);
    tracker.heartbeat(0, heartbeat([instance(0), instance(2)]), nowMs);
    tracker.heartbeat(1, heartbeat([instance(1), instance(3)]), nowMs);
  }

  beforeEach(() => {
    tracker = new PlanTracker(plan, TIMEOUT_MS);
    lastVersion = 0;
  });

  it("starts with every instance starting and every container down", () => {
    assert.deepEqual(
      tracker
        .instances()
        .map((i) => [i.stage, i.index, i.task, i.container, i.state, i.pid, i.incarnation]),
      [
        ["src", 0, 0, 0, "starting", null, 0],
        ["src", 1, 1, 1, "starting", null, 0],
        ["work", 0, 2, 0, "starting", null, 0],
        ["work", 1, 3, 1, "starting", null, 0],
      ],
    );
    assert.deepEqual(
      tracker.containerStatus(0).map((c) => [c.container, c.state, c.stmgr, c.lastHeartbeatAgoMs]),
      [
        [0, "down", null, null],
        [1, "down", null, null],
      ],
    );
    const first = expectUpdate();
    assert.deepEqual(first.stmgrs, []);
    assert.deepEqual(states(first), ["starting", "starting", "starting", "starting"]);
    expectNoUpdate();
    assert.deepEqual(tracker.containerPids(0), []);
  });

  it("register + heartbeat: instances run with their pid and incarnation", () => {
    expectUpdate();
    tracker.register(registration(0), 1000);
    const registered = expectUpdate();
    assert.deepEqual(registered.stmgrs, [{ container: 0, host: "127.0.0.1", port: 7000 }]);
    assert.deepEqual(states(registered), ["starting", "starting", "starting", "starting"]);

    tracker.heartbeat(
      0,
      heartbeat([instance(0), instance(2, { incarnation: 3, pid: 4242 })]),
      1500,
    );
    const running = expectUpdate();
    assert.deepEqual(
      running.instances.map((i) => [i.task, i.state, i.incarnation]),
      [
        [0, "running", 1],
        [1, "starting", 0],
        [2, "running", 3],
        [3, "starting", 0],
      ],
    );
    const work0 = byTask(tracker, 2);
    assert.equal(work0.state, "running");
    assert.equal(work0.pid, 4242);
    assert.equal(work0.incarnation, 3);
    assert.equal(work0.restarts, 2);
    assert.equal(work0.tuplesIn, 10);
    assert.equal(work0.tuplesOut, 20);
    assert.equal(work0.rssBytes, 2048);
    assert.equal(work0.cpuSeconds, 2);
    assert.equal(byTask(tracker, 0).pid, 1000);
    assert.equal(byTask(tracker, 0).restarts, 0);
    assert.equal(byTask(tracker, 1).pid, null);

    const [c0, c1] = tracker.containerStatus(2000);
    assert.equal(c0!.state, "up");
    assert.deepEqual(c0!.stmgr, { pid: 500, host: "127.0.0.1", port: 7000, restarts: 0 });
    assert.equal(c0!.supervisorPid, 400);
    assert.equal(c0!.routed, 100);
    assert.equal(c0!.dropped, 1);
    assert.equal(c0!.cpuSeconds, 2);
    assert.equal(c0!.lastHeartbeatAgoMs, 500);
    assert.equal(c1!.state, "down");
  });

  it("planUpdate returns an update only when the plan changed", () => {
    allUp(0);
    const up = expectUpdate();
    assert.deepEqual(up.stmgrs.map((s) => s.container).sort(), [0, 1]);
    assert.deepEqual(states(up), ["running", "running", "running", "running"]);
    expectNoUpdate();

    // Counters, queue sizes and timestamps are not part of the plan.
    tracker.heartbeat(
      0,
      heartbeat([instance(0, { tuplesIn: 999 }), instance(2, { queueBytes: 5 })], { routed: 7 }),
      100,
    );
    expectNoUpdate();

    // A restart (new incarnation) is.
    tracker.heartbeat(0, heartbeat([instance(0, { incarnation: 2, pid: 77 }), instance(2)]), 200);
    const restarted = expectUpdate();
    assert.equal(restarted.instances[0]!.incarnation, 2);
    expectNoUpdate();

    // An instance reported dead by its stream manager is.
    tracker.heartbeat(
      0,
      heartbeat([instance(0, { incarnation: 2, state: "dead", pid: 0 }), instance(2)]),
      300,
    );
    const died = expectUpdate();
    assert.equal(died.instances[0]!.state, "dead");
    assert.equal(byTask(tracker, 0).pid, null, "a dead instance has no pid");

    // A stream manager moving to another port is.
    tracker.register({ ...registration(1), port: 9999 }, 400);
    const moved = expectUpdate();
    assert.deepEqual(
      moved.stmgrs.find((s) => s.container === 1),
      { container: 1, host: "127.0.0.1", port: 9999 },
    );
  });

  it("currentPlan always returns the whole plan, without bumping the version needlessly", () => {
    allUp(0);
    const first = tracker.currentPlan();
    assert.equal(first.version, 1);
    const again = tracker.currentPlan();
    assert.equal(again.version, 1);
    assert.deepEqual(again.instances, first.instances);
    assert.deepEqual(again.stmgrs, first.stmgrs);
    assert.equal(tracker.planUpdate(), undefined, "currentPlan counted as broadcast");
  });

  it("disconnected() marks the container's instances dead and drops its stream manager", () => {
    allUp(0);
    expectUpdate();
    tracker.disconnected(1);
    const update = expectUpdate();
    assert.deepEqual(
      update.stmgrs.map((s) => s.container),
      [0],
    );
    assert.deepEqual(
      update.instances.map((i) => [i.task, i.state, i.incarnation]),
      [
        [0, "running", 1],
        [1, "dead", 1],
        [2, "running", 1],
        [3, "dead", 1],
      ],
    );
    assert.equal(byTask(tracker, 1).state, "dead");
    assert.equal(byTask(tracker, 1).pid, null);
    assert.equal(byTask(tracker, 3).incarnation, 1, "the last incarnation is kept");
    assert.equal(tracker.containerStatus(0)[1]!.state, "down");
    expectNoUpdate();
    // Much later both are silent, but only container 0 dies now: 1 is dead already.
    assert.deepEqual(tracker.expire(1_000_000), [0]);
  });

  it("expire() marks containers dead only after the heartbeat timeout", () => {
    allUp(0);
    expectUpdate();
    tracker.heartbeat(0, heartbeat([instance(0), instance(2)]), 1000);
    tracker.heartbeat(1, heartbeat([instance(1), instance(3)]), 3000);

    assert.deepEqual(tracker.expire(1000 + TIMEOUT_MS), [], "exactly the timeout is not late");
    expectNoUpdate();
    assert.deepEqual(tracker.expire(1001 + TIMEOUT_MS), [0]);
    assert.deepEqual(tracker.expire(1002 + TIMEOUT_MS), [], "reported once");
    const update = expectUpdate();
    assert.deepEqual(
      update.stmgrs.map((s) => s.container),
      [1],
    );
    assert.deepEqual(states(update), ["dead", "running", "dead", "running"]);
    assert.equal(byTask(tracker, 0).state, "dead");
    assert.equal(byTask(tracker, 2).pid, null);

    assert.deepEqual(tracker.expire(3001 + TIMEOUT_MS), [1]);
    assert.deepEqual(states(expectUpdate()), ["dead", "dead", "dead", "dead"]);
    assert.deepEqual(
      tracker.containerStatus(3001 + TIMEOUT_MS).map((c) => c.state),
      ["down", "down"],
    );
  });

  it("a heartbeat keeps a container alive, and revives a dead one", () => {
    allUp(0);
    for (let now = 4000; now <= 40_000; now += 4000) {
      tracker.heartbeat(0, heartbeat([instance(0), instance(2)]), now);
      tracker.heartbeat(1, heartbeat([instance(1), instance(3)]), now);
      assert.deepEqual(tracker.expire(now + 1), [], `at ${now}`);
    }
    assert.deepEqual(tracker.expire(40_001 + TIMEOUT_MS), [0, 1]);
    tracker.heartbeat(1, heartbeat([instance(1), instance(3)]), 50_000);
    assert.equal(byTask(tracker, 1).state, "running");
    assert.equal(byTask(tracker, 0).state, "dead");
  });

  it("a re-registered stream manager counts as a restart and waits for its heartbeat", () => {
    allUp(0);
    tracker.disconnected(1);
    tracker.register(registration(1, 888), 100);
    const c1 = tracker.containerStatus(100)[1]!;
    assert.equal(c1.state, "up");
    assert.deepEqual(c1.stmgr, { pid: 888, host: "127.0.0.1", port: 7001, restarts: 1 });
    assert.equal(byTask(tracker, 1).state, "starting", "no report from the new stream manager yet");
    tracker.heartbeat(1, heartbeat([instance(1, { incarnation: 2, pid: 31 }), instance(3)]), 200);
    assert.equal(byTask(tracker, 1).state, "running");
    assert.equal(byTask(tracker, 1).pid, 31);
    assert.equal(byTask(tracker, 1).restarts, 1);
  });

  it("ignores reports about tasks of another container", () => {
    tracker.register(registration(0), 0);
    tracker.heartbeat(0, heartbeat([instance(0), instance(1), instance(3)]), 0);
    assert.equal(byTask(tracker, 0).state, "running");
    assert.equal(byTask(tracker, 1).state, "starting");
    assert.equal(byTask(tracker, 3).state, "starting");
  });

  it("containerPids lists the supervisor, the stream manager and the instances", () => {
    allUp(0);
    const sortedPids = (container: number) =>
      tracker.containerPids(container).sort((a, b) => a - b);
    assert.deepEqual(sortedPids(0), [400, 500, 1000, 1002]);
    assert.deepEqual(sortedPids(1), [401, 501, 1001, 1003]);
    // A dead instance (pid 0) is not listed; duplicates are listed once.
    tracker.heartbeat(
      0,
      heartbeat([instance(0, { state: "dead", pid: 0 }), instance(2, { pid: 500 })]),
      10,
    );
    assert.deepEqual(sortedPids(0), [400, 500]);
    // Before any heartbeat: the processes the registration names.
    tracker.register(registration(1, 600), 20);
    assert.deepEqual(sortedPids(1), [401, 600]);
    assert.deepEqual(new PlanTracker(plan, TIMEOUT_MS).containerPids(0), []);
  });
});

describe("PlanTracker moves", () => {
  /** The same topology on three containers: container 2 hosts nothing. */
  const spare = pack(plan.topology, { containers: 3 });
  let tracker: PlanTracker;
  let persisted: PlacementState[];

  const placed = (update: PlanUpdate | undefined) => update?.instances.map((i) => i.container);
  /** Container `c` reports its instances and what its supervisor runs after plan `version`. */
  function report(c: number, tasks: number[], version: number, incarnation = 1): void {
    tracker.heartbeat(
      c,
      heartbeat(
        tasks.map((t) => instance(t, { incarnation })),
        { hosting: { version, tasks } },
      ),
      0,
    );
  }

  beforeEach(() => {
    persisted = [];
    tracker = new PlanTracker(spare, TIMEOUT_MS, { persist: (s) => persisted.push(s) });
    for (const c of [0, 1, 2]) tracker.register(registration(c), 0);
    report(0, [0, 2], 0, 3);
    report(1, [1, 3], 0);
    report(2, [], 0);
    assert.deepEqual(placed(tracker.planUpdate()), [0, 1, 0, 1]);
  });

  it("places a task nowhere until the container it leaves stopped it, then in the new one", () => {
    tracker.move(2, 2);
    const released = tracker.planUpdate()!;
    assert.deepEqual(placed(released), [0, 1, null, 1]);
    assert.equal(released.instances[2]!.state, "dead", "nothing routes to it meanwhile");
    assert.deepEqual(byTask(tracker, 2).move, { from: 0, to: 2 });
    assert.equal(persisted.at(-1)!.moves[0]!.version, released.version, "its release persisted");

    report(0, [0, 2], released.version - 1, 3); // acted on an older plan: still runs it
    report(0, [0, 2], released.version, 3); // acted on this plan: still stopping it
    assert.equal(tracker.planUpdate(), undefined, "still moving");

    report(0, [0], released.version, 3);
    const placedAgain = tracker.planUpdate()!;
    assert.deepEqual(placed(placedAgain), [0, 1, 2, 1]);
    assert.equal(placedAgain.instances[2]!.incarnation, 3, "its highest incarnation goes along");
    assert.deepEqual(tracker.moves(), []);
    assert.equal(byTask(tracker, 2).move, null);
    assert.deepEqual(persisted.at(-1)!.placement, [0, 1, 2, 1]);
  });

  it("refuses moves that would break the packing or cannot be done", () => {
    const refused = (task: number, to: number, status: number, pattern: RegExp, force = false) =>
      assert.throws(
        () => tracker.move(task, to, force),
        (error: unknown) =>
          error instanceof MoveError && error.status === status && pattern.test(error.message),
      );
    refused(9, 2, 404, /no task 9/);
    refused(2, 3, 404, /no container 3/);
    refused(2, 0, 409, /already runs in container 0/);
    refused(2, 1, 409, /container 1 already has work:1/);
    refused(2, 2, 409, /container 0 is up/, true);
    tracker.move(2, 2);
    refused(2, 1, 409, /already moving/);
    refused(3, 2, 409, /container 2 already has work:0/);
    const gpc = new PlanTracker(spare, TIMEOUT_MS, { movesRefused: "not under GPC" });
    assert.throws(() => gpc.move(2, 2), /not under GPC/);
    const colocated = new PlanTracker(spare, TIMEOUT_MS, { allowColocation: true });
    assert.equal(colocated.move(2, 1).to, 1);
  });

  it("moves at once, when forced, a task whose container is down", () => {
    tracker.disconnected(0);
    tracker.move(2, 2, true);
    assert.deepEqual(placed(tracker.planUpdate()), [0, 1, 2, 1]);
    assert.equal(tracker.planUpdate(), undefined);
  });

  it("a new topology manager keeps the placements and moves, with higher plan versions", () => {
    tracker.move(2, 2);
    const released = tracker.planUpdate()!;
    const next = new PlanTracker(spare, TIMEOUT_MS, { persisted: persisted.at(-1)! });
    const first = next.currentPlan();
    assert.ok(first.version > released.version, "versions of a later epoch are higher");
    assert.deepEqual(
      placed(first),
      [null, null, null, null].map((_, t) => (t === 2 ? null : t % 2)),
    );
    assert.deepEqual(next.moves(), [{ task: 2, from: 0, to: 2, version: released.version }]);
  });
});
