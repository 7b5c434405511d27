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
import { TupleWriter } from "../../src/platform/wire/tuples.js";
import { decodeFrame, recordBytes, tupleRecord } from "./helpers/tuples.js";

const payload = Buffer.from([1, 2, 3]);
/** Record bytes of a tuple frame (the parser does not look inside): task 0, stream 0, to 1. */
const records = Buffer.from([0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 3, 0, 0, 0, 1, 2, 3]);
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
  hosting: { version: 3, tasks: [0] },
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
  it("accepts [type, non-empty Buffer] for the types of the link, before and after the codec", () => {
    const emit = [EMIT, records];
    const forward = [FORWARD, records];
    for (const frame of [emit, forward]) {
      assert.equal(stmgrParse(frame), frame, "returned as is");
      assert.deepEqual(stmgrParse(decodeBody(encodeFrame(frame).subarray(4))), frame);
    }
    const deliver = [DELIVER, records];
    assert.equal(instanceParse(deliver), deliver);
    assert.deepEqual(instanceParse(decodeBody(encodeFrame(deliver).subarray(4))), deliver);
  });

  it("accepts the frames a TupleWriter finishes", () => {
    for (const [type, parse] of [
      [EMIT, stmgrParse],
      [FORWARD, stmgrParse],
      [DELIVER, instanceParse],
    ] as const) {
      const writer = new TupleWriter(type);
      if (type === EMIT) writer.append(0, 0, [1, 2], payload);
      else if (type === FORWARD) writer.append(3, 0, 1, payload);
      else writer.append(3, 0, 1, payload);
      const body = decodeFrame(writer.finish());
      const parsed = parse(body) as [number, Buffer];
      assert.equal(parsed[0], type);
      assert.ok(Buffer.isBuffer(parsed[1]) && parsed[1].length > 0);
    }
    // The hand-written records above are what a writer writes for task 0, stream 0, to 1.
    assert.deepEqual(recordBytes(EMIT, [tupleRecord(0, 0, 1, payload)]), records);
  });

  it("leaves record validation to the reader: any non-empty bytes pass the parser", () => {
    const garbage = Buffer.from([0xff]);
    assert.deepEqual(stmgrParse([EMIT, garbage]), [EMIT, garbage]);
    assert.deepEqual(instanceParse([DELIVER, garbage]), [DELIVER, garbage]);
  });

  it("rejects a tuple frame type the link does not carry", () => {
    rejects(stmgrParse, [DELIVER, records], "deliver to stmgr");
    rejects(instanceParse, [EMIT, records], "emit to instance");
    rejects(instanceParse, [FORWARD, records], "forward to instance");
    rejects(tmasterParse, [EMIT, records], "emit to tmaster");
    rejects(planParse, [FORWARD, records], "forward to the plan link");
    for (const type of [0, 4, 99, -1, 1.5, 1n, "1", null, undefined, true, [1], { t: 1 }]) {
      rejects(stmgrParse, [type, records], `type ${String(type)}`);
      rejects(instanceParse, [type, records], `type ${String(type)} to instance`);
    }
    rejectsOnWire(stmgrParse, [4, records], "type 4");
    rejectsOnWire(instanceParse, [EMIT, records], "emit to instance");
  });

  it("rejects wrong array lengths", () => {
    rejects(stmgrParse, [], "empty array");
    rejects(stmgrParse, [EMIT], "emit of 1");
    rejects(stmgrParse, [EMIT, records, records], "emit of 3");
    rejects(stmgrParse, [FORWARD, records, 0], "forward of 3");
    rejects(instanceParse, [DELIVER], "deliver of 1");
    rejects(instanceParse, [DELIVER, records, records, records], "deliver of 4");
    rejectsOnWire(stmgrParse, [EMIT, records, records], "emit of 3");
  });

  it("rejects the old per-tuple array frames", () => {
    rejects(stmgrParse, [EMIT, "s", [1], payload], "old emit");
    rejects(stmgrParse, [EMIT, 0, [1], payload], "old emit with a stream index");
    rejects(stmgrParse, [FORWARD, 0, "s", [1], payload], "old forward");
    rejects(instanceParse, [DELIVER, 0, "s", payload], "old deliver");
    rejectsOnWire(stmgrParse, [EMIT, "s", [1], payload], "old emit");
    rejectsOnWire(instanceParse, [DELIVER, 0, "s", payload], "old deliver");
  });

  it("rejects empty record bytes", () => {
    rejects(stmgrParse, [EMIT, Buffer.alloc(0)], "empty emit");
    rejects(stmgrParse, [FORWARD, Buffer.alloc(0)], "empty forward");
    rejects(instanceParse, [DELIVER, Buffer.alloc(0)], "empty deliver");
    rejectsOnWire(stmgrParse, [EMIT, Buffer.alloc(0)], "empty emit");
    const empty = decodeFrame(new TupleWriter(DELIVER).finish());
    rejects(instanceParse, empty, "a finished writer without records");
  });

  it("rejects records that are not a Buffer", () => {
    for (const bad of [
      "bytes",
      [1, 2, 3],
      null,
      5,
      0,
      { 0: 1, length: 1 },
      undefined,
      new Uint8Array([1, 2, 3]),
      new Uint16Array(2),
      new ArrayBuffer(4),
      new DataView(new ArrayBuffer(4)),
    ]) {
      const label = `records ${Object.prototype.toString.call(bad)}`;
      rejects(stmgrParse, [EMIT, bad], `emit ${label}`);
      rejects(stmgrParse, [FORWARD, bad], `forward ${label}`);
      rejects(instanceParse, [DELIVER, bad], `deliver ${label}`);
    }
    // What the codec can carry instead of bin: strings, arrays, nil, numbers, maps.
    for (const bad of ["bytes", [1, 2, 3], null, 5, { 0: 1 }]) {
      rejectsOnWire(instanceParse, [DELIVER, bad], `deliver ${JSON.stringify(bad)}`);
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
      instances: [{ task: 0, container: null, state: "dead", incarnation: 3 }],
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
    assert.throws(() => stmgrParse([DELIVER, records]), /tuple frame type 3/);
    assert.throws(() => stmgrParse({ ...validRegister, pid: 0 }), /invalid register/);
  });
});
