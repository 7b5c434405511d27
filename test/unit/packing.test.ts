import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  grouping,
  TopologyBuilder,
  TopologyError,
  type Topology,
} from "../../src/platform/api/topology.js";
import {
  pack,
  parseReplicaName,
  replicaName,
  tasksIn,
} from "../../src/platform/plan/physical-plan.js";
import { int, withSeed, type Random } from "./helpers/random.js";
import { noopSource, noopStage, sub } from "./helpers/topologies.js";

/** source "src" (p0) -> "mid" (p1, shuffle) -> "sink" (p2, fields "k"). */
function chain(p0: number, p1: number, p2: number): Topology {
  return new TopologyBuilder("chain")
    .source("src", { parallelism: p0, outputs: ["out"] }, noopSource)
    .stage(
      "mid",
      { parallelism: p1, outputs: ["out"], inputs: [sub("src", "out", grouping.shuffle())] },
      noopStage,
    )
    .stage(
      "sink",
      { parallelism: p2, inputs: [sub("mid", "out", grouping.fields("k"))] },
      noopStage,
    )
    .build();
}

/** A random topology: a source first, then stages reading from random earlier stages. */
function randomTopology(random: Random, maxParallelism: number): Topology {
  const count = int(random, 1, 8);
  const builder = new TopologyBuilder("random");
  builder.source(
    "s0",
    { parallelism: int(random, 1, maxParallelism), outputs: ["out"] },
    noopSource,
  );
  for (let i = 1; i < count; i++) {
    const parallelism = int(random, 1, maxParallelism);
    if (random() < 0.2) {
      builder.source(`s${i}`, { parallelism, outputs: ["out"] }, noopSource);
    } else {
      const from = `s${int(random, 0, i - 1)}`;
      builder.stage(
        `s${i}`,
        { parallelism, outputs: ["out"], inputs: [sub(from, "out", grouping.shuffle())] },
        noopStage,
      );
    }
  }
  return builder.build();
}

describe("pack", () => {
  it("puts replica i of every stage in container i mod C", () => {
    const plan = pack(chain(2, 3, 1), { containers: 3 });
    assert.equal(plan.containers, 3);
    assert.deepEqual(
      plan.tasks.map((t) => [t.stage, t.index, t.container]),
      [
        ["src", 0, 0],
        ["src", 1, 1],
        ["mid", 0, 0],
        ["mid", 1, 1],
        ["mid", 2, 2],
        ["sink", 0, 0],
      ],
    );
  });

  it("numbers tasks sequentially: stages in declaration order, replicas in index order", () => {
    const plan = pack(chain(2, 3, 2), { containers: 4 });
    assert.deepEqual(
      plan.tasks.map((t) => t.task),
      [0, 1, 2, 3, 4, 5, 6],
    );
    assert.deepEqual(
      plan.tasks.map((t) => replicaName(t)),
      ["src:0", "src:1", "mid:0", "mid:1", "mid:2", "sink:0", "sink:1"],
    );
    // tasks[i].task === i: the plan can be indexed by task id.
    plan.tasks.forEach((t, i) => assert.equal(t.task, i));
  });

  it("wraps replicas around the containers when colocation is allowed", () => {
    const plan = pack(chain(1, 5, 1), { containers: 2, allowColocation: true });
    assert.deepEqual(
      plan.tasks.filter((t) => t.stage === "mid").map((t) => t.container),
      [0, 1, 0, 1, 0],
    );
  });

  it("refuses a stage with more replicas than containers unless colocation is allowed", () => {
    assert.throws(
      () => pack(chain(1, 4, 1), { containers: 3 }),
      (error: unknown) =>
        error instanceof TopologyError &&
        /stage mid has 4 replicas but there are only 3 containers/.test(error.message) &&
        /colocation/.test(error.message),
    );
    assert.throws(
      () => pack(chain(1, 4, 1), { containers: 3, allowColocation: false }),
      TopologyError,
    );
    assert.equal(pack(chain(1, 4, 1), { containers: 3, allowColocation: true }).tasks.length, 6);
    // parallelism == containers is fine.
    assert.equal(pack(chain(1, 3, 1), { containers: 3 }).tasks.length, 5);
  });

  for (const containers of [0, -1, 1.5, 257, Number.NaN, Number.POSITIVE_INFINITY]) {
    it(`rejects ${containers} containers`, () => {
      assert.throws(
        () => pack(chain(1, 1, 1), { containers }),
        (error: unknown) =>
          error instanceof TopologyError &&
          /containers must be an integer in 1\.\.256/.test(error.message),
      );
    });
  }

  it("accepts 1 and 256 containers", () => {
    assert.equal(pack(chain(1, 1, 1), { containers: 1 }).containers, 1);
    assert.equal(pack(chain(1, 1, 1), { containers: 256 }).containers, 256);
  });

  it("property: without colocation no container holds two replicas of one stage", () => {
    withSeed("packing property", (random) => {
      for (let round = 0; round < 500; round++) {
        const containers = int(random, 1, 12);
        const topology = randomTopology(random, 12);
        const maxParallelism = Math.max(...topology.stages.map((s) => s.parallelism));
        if (maxParallelism > containers) {
          assert.throws(() => pack(topology, { containers }), TopologyError);
          continue;
        }
        const plan = pack(topology, { containers });
        const expectedTasks = topology.stages.reduce((n, s) => n + s.parallelism, 0);
        assert.equal(plan.tasks.length, expectedTasks, `round ${round}`);
        const seen = new Set<string>();
        for (const [i, t] of plan.tasks.entries()) {
          assert.equal(t.task, i);
          assert.ok(t.container >= 0 && t.container < containers);
          assert.equal(t.container, t.index % containers);
          const key = `${t.stage}@${t.container}`;
          assert.ok(!seen.has(key), `round ${round}: two replicas of ${t.stage} in ${t.container}`);
          seen.add(key);
        }
        // Every replica appears exactly once.
        for (const spec of topology.stages) {
          const indexes = plan.tasks.filter((t) => t.stage === spec.name).map((t) => t.index);
          assert.deepEqual(indexes, [...Array(spec.parallelism).keys()]);
        }
      }
    });
  });
});

describe("plan lookups", () => {
  const plan = pack(chain(2, 3, 1), { containers: 3 });

  it("tasksIn lists the tasks of one container", () => {
    assert.deepEqual(
      tasksIn(plan, 1).map((t) => replicaName(t)),
      ["src:1", "mid:1"],
    );
    assert.deepEqual(
      tasksIn(plan, 2).map((t) => t.task),
      [4],
    );
  });

  it("parseReplicaName inverts replicaName and rejects anything else", () => {
    assert.deepEqual(parseReplicaName("mid-2:17"), { stage: "mid-2", index: 17 });
    assert.deepEqual(parseReplicaName(replicaName({ stage: "a", index: 0 })), {
      stage: "a",
      index: 0,
    });
    for (const bad of ["mid", "mid:", ":1", "Mid:1", "mid:-1", "mid:1.5", "mid:1 ", "1a:0"]) {
      assert.throws(() => parseReplicaName(bad), TopologyError, bad);
    }
  });
});

describe("TopologyBuilder validation", () => {
  const error = (pattern: RegExp) => (e: unknown) =>
    e instanceof TopologyError && pattern.test(e.message);

  it("builds a valid topology with cycles", () => {
    const topology = new TopologyBuilder("loop")
      .source("src", { parallelism: 1, outputs: ["out"] }, noopSource)
      .stage(
        "a",
        {
          parallelism: 2,
          outputs: ["fwd", "back"],
          inputs: [sub("src", "out", grouping.all()), sub("b", "back", grouping.direct())],
        },
        noopStage,
      )
      .stage(
        "b",
        { parallelism: 2, outputs: ["back"], inputs: [sub("a", "fwd", grouping.fields("k", "j"))] },
        noopStage,
      )
      .build();
    assert.equal(topology.name, "loop");
    assert.deepEqual(
      topology.stages.map((s) => [s.name, s.isSource, s.parallelism]),
      [
        ["src", true, 1],
        ["a", false, 2],
        ["b", false, 2],
      ],
    );
    assert.deepEqual(topology.stages[0]!.inputs, []);
  });

  it("rejects a duplicate stage", () => {
    const builder = new TopologyBuilder("t").source("a", { parallelism: 1 }, noopSource);
    assert.throws(
      () => builder.source("a", { parallelism: 1 }, noopSource),
      error(/duplicate stage a/),
    );
    assert.throws(
      () => builder.stage("a", { parallelism: 1, inputs: [] }, noopStage),
      error(/duplicate stage a/),
    );
  });

  it("rejects an input from an unknown stage", () => {
    const builder = new TopologyBuilder("t")
      .source("a", { parallelism: 1, outputs: ["out"] }, noopSource)
      .stage("b", { parallelism: 1, inputs: [sub("ghost", "out", grouping.shuffle())] }, noopStage);
    assert.throws(() => builder.build(), error(/b reads from unknown stage ghost/));
  });

  it("rejects an input on a stream the producer does not declare", () => {
    const builder = new TopologyBuilder("t")
      .source("a", { parallelism: 1, outputs: ["out"] }, noopSource)
      .stage("b", { parallelism: 1, inputs: [sub("a", "other", grouping.shuffle())] }, noopStage);
    assert.throws(() => builder.build(), error(/b reads undeclared stream a\/other/));
  });

  it("rejects a non-source stage without inputs", () => {
    const builder = new TopologyBuilder("t")
      .source("a", { parallelism: 1, outputs: ["out"] }, noopSource)
      .stage("b", { parallelism: 1, inputs: [] }, noopStage);
    assert.throws(() => builder.build(), error(/stage b has no inputs/));
  });

  it("rejects a double subscription to one stream", () => {
    const builder = new TopologyBuilder("t")
      .source("a", { parallelism: 1, outputs: ["out"] }, noopSource)
      .stage(
        "b",
        {
          parallelism: 1,
          inputs: [sub("a", "out", grouping.shuffle()), sub("a", "out", grouping.all())],
        },
        noopStage,
      );
    assert.throws(() => builder.build(), error(/b subscribes twice to a\/out/));
  });

  it("rejects a fields grouping with no field", () => {
    const builder = new TopologyBuilder("t")
      .source("a", { parallelism: 1, outputs: ["out"] }, noopSource)
      .stage("b", { parallelism: 1, inputs: [sub("a", "out", grouping.fields())] }, noopStage);
    assert.throws(() => builder.build(), error(/fields grouping on a\/out names no field/));
  });

  const badNames = ["", "A", "1a", "-a", "a_b", "a b", "a/b", "é", "a".repeat(64)];

  it("rejects bad topology names", () => {
    for (const name of badNames) {
      assert.throws(
        () => new TopologyBuilder(name),
        error(/invalid topology name/),
        JSON.stringify(name),
      );
    }
    assert.doesNotThrow(() => new TopologyBuilder("a".repeat(63)));
    assert.doesNotThrow(() => new TopologyBuilder("a-0"));
  });

  it("rejects bad stage names", () => {
    for (const name of badNames) {
      const builder = new TopologyBuilder("t");
      assert.throws(
        () => builder.source(name, { parallelism: 1 }, noopSource),
        error(/invalid stage name/),
        JSON.stringify(name),
      );
    }
  });

  it("rejects bad and duplicate stream names", () => {
    for (const name of badNames) {
      assert.throws(
        () => new TopologyBuilder("t").source("a", { parallelism: 1, outputs: [name] }, noopSource),
        error(/invalid stream name/),
        JSON.stringify(name),
      );
    }
    assert.throws(
      () =>
        new TopologyBuilder("t").source("a", { parallelism: 1, outputs: ["x", "x"] }, noopSource),
      error(/declares a stream twice/),
    );
  });

  it("rejects a parallelism outside 1..1024", () => {
    for (const parallelism of [0, -1, 1.5, 1025, Number.NaN]) {
      assert.throws(
        () => new TopologyBuilder("t").source("a", { parallelism }, noopSource),
        error(/parallelism must be an integer in 1\.\.1024/),
        String(parallelism),
      );
    }
    assert.doesNotThrow(() =>
      new TopologyBuilder("t").source("a", { parallelism: 1024 }, noopSource),
    );
  });
});
