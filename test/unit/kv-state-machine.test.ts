/**
 * The reference key-value state machine: semantics against a plain Map model, determinism,
 * canonical snapshots, and error replies (never exceptions) for commands clients got wrong.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pack } from "msgpackr";
import {
  decodeKvReply,
  encodeKvOp,
  KV_KEY_BYTES_MAX,
  KvStateMachine,
  type KvOp,
  type KvReply,
} from "../../src/tara/kv/kv-state-machine.js";
import { int, pick, randomBytes, withSeed, type Random } from "./helpers/random.js";

function run(machine: KvStateMachine, op: KvOp): KvReply {
  return decodeKvReply(machine.apply(encodeKvOp(op)).reply);
}

function randomOp(random: Random): KvOp {
  const key = pick(random, ["a", "b", "c", "d"]);
  const value = pick(random, ["1", "2", "3"]);
  switch (int(random, 0, 3)) {
    case 0:
      return { type: "get", key };
    case 1:
      return { type: "put", key, value };
    case 2:
      return { type: "delete", key };
    default:
      return { type: "cas", key, expected: pick(random, [null, "1", "2"]), value };
  }
}

/** The dumb reference the machine is compared with. */
function reference(model: Map<string, string>, op: KvOp): KvReply {
  const current = model.get(op.key) ?? null;
  if (op.type === "get") return { type: "get", value: current };
  if (op.type === "put") {
    model.set(op.key, op.value);
    return { type: "put" };
  }
  if (op.type === "delete") {
    model.delete(op.key);
    return { type: "delete", existed: current !== null };
  }
  if (current !== op.expected) return { type: "cas", ok: false };
  model.set(op.key, op.value);
  return { type: "cas", ok: true };
}

describe("KvStateMachine", () => {
  it("get, put, delete and compare-and-set", () => {
    const kv = new KvStateMachine();
    assert.deepEqual(run(kv, { type: "get", key: "x" }), { type: "get", value: null });
    assert.deepEqual(run(kv, { type: "cas", key: "x", expected: "0", value: "1" }), {
      type: "cas",
      ok: false,
    });
    assert.deepEqual(run(kv, { type: "cas", key: "x", expected: null, value: "1" }), {
      type: "cas",
      ok: true,
    });
    assert.deepEqual(run(kv, { type: "put", key: "x", value: "2" }), { type: "put" });
    assert.deepEqual(run(kv, { type: "get", key: "x" }), { type: "get", value: "2" });
    assert.deepEqual(run(kv, { type: "delete", key: "x" }), { type: "delete", existed: true });
    assert.deepEqual(run(kv, { type: "delete", key: "x" }), { type: "delete", existed: false });
    assert.equal(kv.size, 0);
  });

  it("property: matches a Map model on random command sequences", () => {
    withSeed("kv model", (random) => {
      const kv = new KvStateMachine();
      const model = new Map<string, string>();
      for (let i = 0; i < 5000; i++) {
        const op = randomOp(random);
        assert.deepEqual(run(kv, op), reference(model, op), `op ${i}: ${JSON.stringify(op)}`);
      }
      assert.equal(kv.size, model.size);
    });
  });

  it("snapshots are canonical: equal maps give equal bytes, whatever the history", () => {
    const a = new KvStateMachine();
    const b = new KvStateMachine();
    for (const k of ["c", "a", "b"]) run(a, { type: "put", key: k, value: k });
    for (const k of ["b", "z", "c", "a"]) run(b, { type: "put", key: k, value: k });
    run(b, { type: "delete", key: "z" });
    assert.deepEqual(Buffer.from(a.snapshot()), Buffer.from(b.snapshot()));
    run(b, { type: "put", key: "a", value: "other" });
    assert.notDeepEqual(Buffer.from(a.snapshot()), Buffer.from(b.snapshot()));
  });

  it("restore gives a replica that continues exactly like the original", () => {
    withSeed("kv restore", (random) => {
      const original = new KvStateMachine();
      for (let i = 0; i < 500; i++) run(original, randomOp(random));
      const copy = new KvStateMachine();
      run(copy, { type: "put", key: "stale", value: "gone after restore" });
      copy.restore(original.snapshot());
      assert.deepEqual(Buffer.from(copy.snapshot()), Buffer.from(original.snapshot()));
      for (let i = 0; i < 500; i++) {
        const op = randomOp(random);
        assert.deepEqual(run(copy, op), run(original, op));
      }
    });
  });

  it("a bad command gets an error reply and changes nothing", () => {
    const kv = new KvStateMachine();
    run(kv, { type: "put", key: "k", value: "v" });
    const before = Buffer.from(kv.snapshot());
    const bad: Uint8Array[] = [
      Buffer.from([0xc1]),
      Buffer.alloc(0),
      Buffer.from([0x92]),
      pack({ type: "put", key: "k" }),
      pack({ type: "put", key: "k", value: 7 }),
      pack({ type: "drop", key: "k" }),
      pack({ type: "get", key: "k", extra: 1 }),
      pack({ type: "put", key: "x".repeat(KV_KEY_BYTES_MAX + 1), value: "v" }),
      pack(["put", "k", "v"]),
      pack(null),
    ];
    for (const command of bad) {
      const reply = decodeKvReply(kv.apply(command).reply);
      assert.equal(reply.type, "error", `reply to ${Buffer.from(command).toString("hex")}`);
    }
    assert.deepEqual(Buffer.from(kv.snapshot()), before);
  });

  it("random bytes as commands never throw: every reply decodes", () => {
    withSeed("kv random bytes", (random) => {
      const kv = new KvStateMachine();
      for (let i = 0; i < 2000; i++) {
        const reply = decodeKvReply(kv.apply(randomBytes(random, int(random, 0, 40))).reply);
        assert.ok(["error", "get", "put", "delete", "cas"].includes(reply.type));
      }
    });
  });

  it("restore refuses bytes that are not a snapshot and keeps the state", () => {
    const kv = new KvStateMachine();
    run(kv, { type: "put", key: "k", value: "v" });
    for (const bytes of [pack({ k: "v" }), pack([["k", 1]]), pack("x"), Buffer.from([0x92])]) {
      assert.throws(() => kv.restore(bytes));
    }
    assert.deepEqual(run(kv, { type: "get", key: "k" }), { type: "get", value: "v" });
  });
});
