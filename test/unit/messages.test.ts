import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WireError } from "../../src/platform/wire/errors.js";
import { decodeBody, encodeFrame } from "../../src/platform/wire/frames.js";
import {
  backpressureSchema,
  challengeSchema,
  DELIVER,
  EMIT,
  FORWARD,
  heartbeatSchema,
  helloSchema,
  messageParser,
  planSchema,
  registerSchema,
  reportSchema,
  stmgrSchema,
  throttleSchema,
} from "../../src/platform/wire/messages.js";

const payload = Buffer.from([1, 2, 3]);
const stats = { rssBytes: 1000, cpuUserUs: 5, cpuSystemUs: 6 };

/** The stream manager's parser for its instances and peers (tuple frames + controls). */
const stmgrParse = messageParser<unknown>(
  [EMIT, FORWARD],
  [registerSchema, reportSchema, backpressureSchema],
);
/** The instance's parser for its stream manager. */
const instanceParse = messageParser<unknown>([DELIVER], [throttleSchema]);
/** The topology manager's parser. */
const tmasterParse = messageParser<unknown>([], [stmgrSchema, heartbeatSchema]);
/** The stream manager's parser for the topology manager. */
const planParse = messageParser<unknown>([], [planSchema]);

const validRegister = { t: "register", task: 3, incarnation: 1, pid: 1234 };
const validReport = {
  t: "report",
  tuplesIn: 1,
  tuplesOut: 2,
  dropped: 0,
  throttled: false,
  status: { any: ["json", 1] },
  stats,
};
const validInstanceReport = {
  task: 0,
  state: "running",
  pid: 77,
  incarnation: 2,
  tuplesIn: 0,
  tuplesOut: 0,
  dropped: 0,
  throttled: false,
  queueBytes: 0,
  status: {},
  stats: null,
};
const validHeartbeat = {
  t: "heartbeat",
  instances: [validInstanceReport],
  peers: [{ container: 1, connected: true, queueBytes: 0 }],
  backpressure: false,
  routed: 10,
  dropped: 0,
  stats,
};
const validStmgr = {
  t: "stmgr",
  container: 0,
  host: "127.0.0.1",
  port: 4000,
  pid: 10,
  supervisorPid: 9,
};

/** Asserts that parse rejects value with a FRAME_INVALID WireError. */
function rejects(parse: (value: unknown) => unknown, value: unknown, label: string): void {
  assert.throws(
    () => parse(value),
    (error: unknown) => {
      assert.ok(error instanceof WireError, `${label}: ${String(error)} is not a WireError`);
      assert.equal(error.code, "FRAME_INVALID", label);
      return true;
    },
    label,
  );
}

/** Same, after a trip through the frame codec: what a connection actually parses. */
function rejectsOnWire(parse: (value: unknown) => unknown, value: unknown, label: string): void {
  rejects(parse, decodeBody(encodeFrame(value).subarray(4)), `${label} (decoded)`);
}

describe("messageParser: tuple frames", () => {
  it("accepts valid emit and forward frames, before and after the codec", () => {
    const emit = [EMIT, "stream-a", [0, 5, 1 << 20], payload];
    const forward = [FORWARD, 7, "stream-a", [2, 3], payload];
    const emptyDests = [EMIT, "s", [], Buffer.alloc(0)];
    for (const frame of [emit, forward, emptyDests]) {
      assert.deepEqual(stmgrParse(frame), frame);
      assert.deepEqual(stmgrParse(decodeBody(encodeFrame(frame).subarray(4))), frame);
    }
    // A plain Uint8Array is bytes too.
    const u8 = [EMIT, "s", [1], new Uint8Array([1])];
    assert.equal(stmgrParse(u8), u8);
  });

  it("accepts a valid deliver frame on the instance side", () => {
    const deliver = [DELIVER, 0, "s", payload];
    assert.deepEqual(instanceParse(deliver), deliver);
  });

  it("rejects a tuple frame type the link does not carry", () => {
    rejects(stmgrParse, [DELIVER, 0, "s", payload], "deliver to stmgr");
    rejects(instanceParse, [EMIT, "s", [1], payload], "emit to instance");
    rejects(instanceParse, [FORWARD, 0, "s", [1], payload], "forward to instance");
    rejects(tmasterParse, [EMIT, "s", [1], payload], "emit to tmaster");
    for (const type of [0, 4, 99, -1, 1.5, "1", null, undefined, [1], { t: 1 }]) {
      rejects(stmgrParse, [type, "s", [1], payload], `type ${String(type)}`);
    }
    rejects(stmgrParse, [], "empty array");
  });

  it("rejects wrong array lengths", () => {
    rejects(stmgrParse, [EMIT, "s", [1]], "emit of 3");
    rejects(stmgrParse, [EMIT, "s", [1], payload, payload], "emit of 5");
    rejects(stmgrParse, [FORWARD, 0, "s", [1]], "forward of 4");
    rejects(stmgrParse, [FORWARD, 0, "s", [1], payload, 0], "forward of 6");
    rejects(instanceParse, [DELIVER, 0, "s"], "deliver of 3");
    rejects(instanceParse, [DELIVER, 0, "s", payload, 1], "deliver of 5");
    rejects(stmgrParse, [EMIT], "emit of 1");
  });

  it("rejects bad task ids: negative, fractional, too large, not numbers", () => {
    for (const bad of [
      -1,
      0.5,
      1.000001,
      (1 << 20) + 1,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      "1",
      null,
      true,
    ]) {
      rejects(stmgrParse, [EMIT, "s", [0, bad], payload], `emit dest ${String(bad)}`);
      rejects(stmgrParse, [FORWARD, bad, "s", [0], payload], `forward src ${String(bad)}`);
      rejects(stmgrParse, [FORWARD, 0, "s", [bad], payload], `forward dest ${String(bad)}`);
      rejects(instanceParse, [DELIVER, bad, "s", payload], `deliver src ${String(bad)}`);
    }
    rejectsOnWire(stmgrParse, [EMIT, "s", [-3], payload], "negative dest");
    rejectsOnWire(instanceParse, [DELIVER, 2.5, "s", payload], "fractional src");
  });

  it("rejects dests that are not a list and streams that are not strings", () => {
    for (const dests of [1, "1", null, { 0: 1 }, undefined]) {
      rejects(stmgrParse, [EMIT, "s", dests, payload], `emit dests ${JSON.stringify(dests)}`);
      rejects(
        stmgrParse,
        [FORWARD, 0, "s", dests, payload],
        `forward dests ${JSON.stringify(dests)}`,
      );
    }
    for (const stream of [1, null, [], {}, payload, undefined]) {
      rejects(stmgrParse, [EMIT, stream, [1], payload], `emit stream ${String(stream)}`);
      rejects(stmgrParse, [FORWARD, 0, stream, [1], payload], `forward stream ${String(stream)}`);
      rejects(instanceParse, [DELIVER, 0, stream, payload], `deliver stream ${String(stream)}`);
    }
  });

  it("rejects payloads that are not bytes", () => {
    for (const bad of [
      "bytes",
      [1, 2, 3],
      null,
      5,
      { 0: 1, length: 1 },
      undefined,
      new Uint16Array(2),
    ]) {
      const label = `payload ${Object.prototype.toString.call(bad)}`;
      rejects(stmgrParse, [EMIT, "s", [1], bad], `emit ${label}`);
      rejects(stmgrParse, [FORWARD, 0, "s", [1], bad], `forward ${label}`);
      rejects(instanceParse, [DELIVER, 0, "s", bad], `deliver ${label}`);
      // Typed arrays other than bytes do not come out of the codec; the rest can.
      if (!(bad instanceof Uint16Array)) {
        rejectsOnWire(instanceParse, [DELIVER, 0, "s", bad ?? null], `deliver ${label}`);
      }
    }
  });
});

describe("messageParser: control messages", () => {
  it("accepts valid control messages and returns the parsed message", () => {
    assert.deepEqual(stmgrParse(validRegister), validRegister);
    assert.deepEqual(stmgrParse(validReport), validReport);
    assert.deepEqual(stmgrParse({ t: "backpressure", container: 2, on: true }), {
      t: "backpressure",
      container: 2,
      on: true,
    });
    assert.deepEqual(instanceParse({ t: "throttle", on: false }), { t: "throttle", on: false });
    assert.deepEqual(tmasterParse(validStmgr), validStmgr);
    assert.deepEqual(tmasterParse(validHeartbeat), validHeartbeat);
    // Through the codec as well.
    assert.deepEqual(
      tmasterParse(decodeBody(encodeFrame(validHeartbeat).subarray(4))),
      validHeartbeat,
    );
    const plan = planParse({
      t: "plan",
      version: 4,
      started: false,
      stmgrs: [{ container: 0, host: "h", port: 1 }],
      instances: [{ task: 0, state: "dead", incarnation: 3 }],
    }) as { t: string; version: number };
    assert.equal(plan.t, "plan");
    assert.equal(plan.version, 4);
  });

  it("drops unknown keys of a control message", () => {
    assert.deepEqual(stmgrParse({ ...validRegister, extra: "x" }), validRegister);
  });

  it("rejects unknown tags and tags of other links", () => {
    for (const tag of ["nope", "", "REGISTER", "plan", "heartbeat", "throttle", "deliver"]) {
      rejects(stmgrParse, { ...validRegister, t: tag }, `tag ${tag} on stmgr`);
    }
    rejects(instanceParse, validRegister, "register on instance");
    rejects(tmasterParse, validRegister, "register on tmaster");
    rejects(planParse, validHeartbeat, "heartbeat on stmgr-from-tmaster");
    // The handshake messages are not link messages once the link is up.
    const hello = { t: "hello", role: "instance", id: "x", nonce: payload, proof: payload };
    assert.equal(helloSchema.safeParse(hello).success, true);
    rejects(stmgrParse, hello, "hello after handshake");
    assert.equal(challengeSchema.safeParse({ t: "challenge", nonce: payload }).success, true);
    rejects(instanceParse, { t: "challenge", nonce: payload }, "challenge after handshake");
  });

  it("rejects values that are neither tuple frames nor tagged objects", () => {
    for (const value of [
      null,
      undefined,
      0,
      1,
      "register",
      true,
      payload,
      {},
      { tag: "register" },
    ]) {
      rejects(stmgrParse, value, `value ${String(value)}`);
    }
    for (const tag of [1, null, true, ["register"], { t: "register" }]) {
      rejects(stmgrParse, { ...validRegister, t: tag }, `tag ${JSON.stringify(tag)}`);
    }
  });

  it("rejects missing fields", () => {
    const cases: [(v: unknown) => unknown, Record<string, unknown>][] = [
      [stmgrParse, validRegister],
      [stmgrParse, validReport],
      [instanceParse, { t: "throttle", on: true }],
      [tmasterParse, validStmgr],
      [tmasterParse, validHeartbeat],
    ];
    for (const [parse, message] of cases) {
      for (const key of Object.keys(message)) {
        if (key === "t") continue;
        const rest = { ...message };
        delete rest[key];
        rejects(parse, rest, `${String(message.t)} without ${key}`);
      }
    }
  });

  it("rejects fields of the wrong type or range", () => {
    const cases: [(v: unknown) => unknown, Record<string, unknown>, string, unknown][] = [
      [stmgrParse, validRegister, "task", -1],
      [stmgrParse, validRegister, "task", 1.5],
      [stmgrParse, validRegister, "task", (1 << 20) + 1],
      [stmgrParse, validRegister, "task", "3"],
      [stmgrParse, validRegister, "incarnation", 0],
      [stmgrParse, validRegister, "pid", 0],
      [stmgrParse, validReport, "tuplesIn", -1],
      [stmgrParse, validReport, "throttled", "no"],
      [stmgrParse, validReport, "status", []],
      [stmgrParse, validReport, "stats", { rssBytes: 1 }],
      [instanceParse, { t: "throttle", on: true }, "on", 1],
      [tmasterParse, validStmgr, "port", 0],
      [tmasterParse, validStmgr, "port", 65536],
      [tmasterParse, validStmgr, "host", "h".repeat(256)],
      [tmasterParse, validHeartbeat, "instances", [{ ...validInstanceReport, state: "zombie" }]],
      [tmasterParse, validHeartbeat, "instances", [{ ...validInstanceReport, task: -2 }]],
      [tmasterParse, validHeartbeat, "peers", [{ container: -1, connected: true, queueBytes: 0 }]],
    ];
    for (const [parse, message, key, value] of cases) {
      rejects(
        parse,
        { ...message, [key]: value },
        `${String(message.t)}.${key} = ${JSON.stringify(value)}`,
      );
    }
  });

  it("rejects with a message naming the problem", () => {
    assert.throws(() => stmgrParse({ t: "mystery" }), /unexpected message "mystery"/);
    assert.throws(() => stmgrParse([DELIVER, 0, "s", payload]), /tuple frame type 3/);
    assert.throws(() => stmgrParse({ ...validRegister, pid: 0 }), /invalid register/);
  });
});
