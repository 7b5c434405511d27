// Regression tests for bugs found while writing the unit tests (each failed before its fix).
import assert from "node:assert/strict";
import { it } from "node:test";
import { TopologyBuilder, grouping } from "../../src/platform/api/topology.js";
import { pack } from "../../src/platform/plan/physical-plan.js";
import { RoutingTable, fieldsHash } from "../../src/platform/plan/routing.js";
import { WireError } from "../../src/platform/wire/errors.js";
import { decodeBody } from "../../src/platform/wire/frames.js";
import { messageParser, throttleSchema, DELIVER } from "../../src/platform/wire/messages.js";
import { PlanTracker } from "../../src/platform/tmaster/plan-tracker.js";

const noop = () => ({ onTuple() {} });

it("shuffle reaches every replica of each of two shuffle consumers of one stream", () => {
  const plan = pack(
    new TopologyBuilder("t")
      .source("src", { parallelism: 1, outputs: ["s"] }, () => ({}))
      .stage(
        "a",
        { parallelism: 2, inputs: [{ stage: "src", stream: "s", grouping: grouping.shuffle() }] },
        noop,
      )
      .stage(
        "b",
        { parallelism: 2, inputs: [{ stage: "src", stream: "s", grouping: grouping.shuffle() }] },
        noop,
      )
      .build(),
    { containers: 2 },
  );
  const table = new RoutingTable(plan, "src");
  const seen = new Set();
  for (let i = 0; i < 1000; i++) for (const d of table.destinations("s", {})) seen.add(d);
  assert.deepEqual([...seen].sort(), [1, 2, 3, 4]);
});

it("shuffle reaches every replica when the emitter alternates between two streams", () => {
  const plan = pack(
    new TopologyBuilder("t")
      .source("src", { parallelism: 1, outputs: ["s", "u"] }, () => ({}))
      .stage(
        "a",
        { parallelism: 2, inputs: [{ stage: "src", stream: "s", grouping: grouping.shuffle() }] },
        noop,
      )
      .stage(
        "b",
        { parallelism: 2, inputs: [{ stage: "src", stream: "u", grouping: grouping.shuffle() }] },
        noop,
      )
      .build(),
    { containers: 2 },
  );
  const table = new RoutingTable(plan, "src");
  const seen = new Set();
  for (let i = 0; i < 1000; i++) {
    for (const d of table.destinations("s", {})) seen.add(d);
    for (const d of table.destinations("u", {})) seen.add(d);
  }
  assert.deepEqual([...seen].sort(), [1, 2, 3, 4]);
});

it("messageParser rejects a bigint tag with WireError FRAME_INVALID", () => {
  const parse = messageParser([DELIVER], [throttleSchema]);
  const value = decodeBody(Buffer.from([0x81, 0xa1, 0x74, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1])); // {t: 1n}
  assert.throws(
    () => parse(value),
    (e) => e instanceof WireError && e.code === "FRAME_INVALID",
  );
});

it("fields grouping spreads even integer keys over 2 replicas", () => {
  const counts = [0, 0];
  for (let k = 0; k < 128; k += 2) counts[fieldsHash({ k }, ["k"]) % 2]! += 1;
  assert.ok(Math.min(...counts) > 0, `counts ${counts}`);
});

it("fields grouping spreads multiples of 1024 over 4 replicas", () => {
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 60; i++) counts[fieldsHash({ k: i * 1024 }, ["k"]) % 4]! += 1;
  assert.ok(Math.min(...counts) > 0, `counts ${counts}`);
});

it("instances of a container that disconnects before its first heartbeat are dead", () => {
  const plan = pack(
    new TopologyBuilder("t").source("src", { parallelism: 1, outputs: [] }, () => ({})).build(),
    { containers: 1 },
  );
  const tracker = new PlanTracker(plan, 5000);
  tracker.register({ t: "stmgr", container: 0, host: "h", port: 1, pid: 2, supervisorPid: 1 }, 0);
  tracker.disconnected(0);
  assert.equal(tracker.instances()[0]!.state, "dead");
});

it("decodeBody rejects the never-used msgpack byte 0xc1", () => {
  assert.throws(() => decodeBody(Buffer.from([0xc1])), WireError);
});
