import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  checkLinearizable,
  describeOperation,
  type CheckResult,
  type KvOp,
  type KvResult,
  type Operation,
} from "../../src/sim/linearizability.js";
import { int, pick, withSeed, type Random } from "./helpers/random.js";

// ---------------------------------------------------------------------------------------------
// Building histories by hand. `at` is [invokedAt, returnedAt]; a one-element `at` is pending.

type At = [number, number] | [number];

function operation(client: string, op: KvOp, at: At, result?: KvResult): Operation {
  const [invokedAt, returnedAt] = at;
  if (returnedAt === undefined) return { client, op, invokedAt };
  return { client, op, invokedAt, returnedAt, result };
}
const get = (client: string, key: string, at: At, value: string | null = null): Operation =>
  operation(client, { type: "get", key }, at, { type: "get", value });
const put = (client: string, key: string, value: string, at: At): Operation =>
  operation(client, { type: "put", key, value }, at, { type: "put" });
const del = (client: string, key: string, at: At, existed = false): Operation =>
  operation(client, { type: "delete", key }, at, { type: "delete", existed });
const cas = (
  client: string,
  key: string,
  expected: string | null,
  value: string,
  at: At,
  ok = false,
): Operation => operation(client, { type: "cas", key, expected, value }, at, { type: "cas", ok });

// ---------------------------------------------------------------------------------------------
// The reference: try every order of the operations that respects real time, executing each on a
// plain map — no memo, no per-key split, nothing shared with the checker. A pending operation
// may be placed anywhere after the operations that precede it, or left out; its result is not
// checked. Exponential, so only for small histories.

function bruteForce(history: readonly Operation[]): boolean {
  const used = history.map(() => false);
  const completed = history.filter((o) => o.returnedAt !== undefined).length;

  const mayComeNext = (o: Operation): boolean =>
    history.every((p, j) => used[j] || p.returnedAt === undefined || !(p.returnedAt < o.invokedAt));

  const search = (store: ReadonlyMap<string, string>, placedCompleted: number): boolean => {
    if (placedCompleted === completed) return true;
    for (let i = 0; i < history.length; i++) {
      const o = history[i]!;
      if (used[i] || !mayComeNext(o)) continue;
      const { result, next } = execute(store, o.op);
      if (o.returnedAt !== undefined && !sameResult(result, o.result!)) continue;
      used[i] = true;
      const found = search(next, placedCompleted + (o.returnedAt !== undefined ? 1 : 0));
      used[i] = false;
      if (found) return true;
    }
    return false;
  };
  return search(new Map(), 0);
}

/** Sequential specification of the service. */
function execute(
  store: ReadonlyMap<string, string>,
  op: KvOp,
): { result: KvResult; next: ReadonlyMap<string, string> } {
  const current = store.get(op.key) ?? null;
  const withValue = (value: string | null): Map<string, string> => {
    const copy = new Map(store);
    if (value === null) copy.delete(op.key);
    else copy.set(op.key, value);
    return copy;
  };
  switch (op.type) {
    case "get":
      return { result: { type: "get", value: current }, next: store };
    case "put":
      return { result: { type: "put" }, next: withValue(op.value) };
    case "delete":
      return { result: { type: "delete", existed: current !== null }, next: withValue(null) };
    case "cas":
      return current === op.expected
        ? { result: { type: "cas", ok: true }, next: withValue(op.value) }
        : { result: { type: "cas", ok: false }, next: store };
  }
}

function sameResult(a: KvResult, b: KvResult): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

// ---------------------------------------------------------------------------------------------
// Generating histories.

function randomOp(random: Random, keys: readonly string[], values: readonly string[]): KvOp {
  const key = pick(random, keys);
  switch (pick(random, ["get", "get", "put", "put", "delete", "cas", "cas"] as const)) {
    case "get":
      return { type: "get", key };
    case "put":
      return { type: "put", key, value: pick(random, values) };
    case "delete":
      return { type: "delete", key };
    case "cas":
      return {
        type: "cas",
        key,
        expected: random() < 0.3 ? null : pick(random, values),
        value: pick(random, values),
      };
  }
}

function randomResult(random: Random, op: KvOp, values: readonly string[]): KvResult {
  switch (op.type) {
    case "get":
      return { type: "get", value: random() < 0.3 ? null : pick(random, values) };
    case "put":
      return { type: "put" };
    case "delete":
      return { type: "delete", existed: random() < 0.5 };
    case "cas":
      return { type: "cas", ok: random() < 0.5 };
  }
}

/**
 * Fills in every result by executing the operations atomically at a random point inside each
 * one's interval (a pending operation: somewhere after its invocation, or never), so the history
 * is linearizable by construction.
 */
function executeAtRandomPoints(random: Random, history: Operation[]): void {
  const points = history
    .map((o, index) => {
      if (o.returnedAt !== undefined) {
        return { o, index, at: o.invokedAt + random() * (o.returnedAt - o.invokedAt) };
      }
      return { o, index, at: random() < 0.5 ? Infinity : o.invokedAt + random() * 10 };
    })
    .filter((p) => p.at !== Infinity)
    .sort((a, b) => a.at - b.at || a.index - b.index);
  let store: ReadonlyMap<string, string> = new Map();
  for (const { o } of points) {
    const { result, next } = execute(store, o.op);
    store = next;
    if (o.returnedAt !== undefined) o.result = result;
  }
}

/** Up to 7 operations on 1–2 keys over 3 values, with small integer times (so ties happen). */
function smallHistory(random: Random): { history: Operation[]; mode: string } {
  const keys = random() < 0.5 ? ["x"] : ["x", "y"];
  const values = ["a", "b", "c"];
  const pendingShare = pick(random, [0, 0.15, 0.4]);
  const history: Operation[] = Array.from({ length: int(random, 1, 7) }, (_, i) => {
    const op = randomOp(random, keys, values);
    const invokedAt = int(random, 0, 12);
    if (random() < pendingShare) return { client: `c${i}`, op, invokedAt };
    const returnedAt = invokedAt + int(random, 0, 6);
    return { client: `c${i}`, op, invokedAt, returnedAt, result: randomResult(random, op, values) };
  });
  const mode = pick(random, ["executed", "perturbed", "random"]);
  if (mode !== "random") executeAtRandomPoints(random, history);
  if (mode === "perturbed") {
    const returned = history.filter((o) => o.returnedAt !== undefined);
    if (returned.length > 0) {
      const victim = pick(random, returned);
      victim.result = randomResult(random, victim.op, values);
    }
  }
  return { history, mode };
}

/**
 * A realistic run: `clients` clients, each issuing one operation at a time; each operation takes
 * effect atomically at a random point within its interval, and some time out (pending), having
 * taken effect or not. Every written value is unique.
 */
function largeHistory(
  random: Random,
  clients: number,
  total: number,
  keys: readonly string[],
): Operation[] {
  const history: Operation[] = [];
  const points: { o: Operation; at: number }[] = [];
  const clock = Array.from({ length: clients }, () => int(random, 0, 5));
  // Values recently written per key, so that cas sometimes expects the current value.
  const recent = new Map<string, string[]>();
  for (let seq = 0; history.length < total; seq++) {
    const c = seq % clients;
    const key = pick(random, keys);
    const value = `c${c}-${seq}`;
    const seen = recent.get(key) ?? [];
    const roll = random();
    const op: KvOp =
      roll < 0.4
        ? { type: "get", key }
        : roll < 0.7
          ? { type: "put", key, value }
          : roll < 0.85
            ? {
                type: "cas",
                key,
                expected: random() < 0.2 ? null : pick(random, ["?", ...seen]),
                value,
              }
            : { type: "delete", key };
    if (op.type === "put" || op.type === "cas") recent.set(key, [...seen.slice(-3), value]);
    const invokedAt = clock[c]!;
    const duration = int(random, 1, 20);
    const timedOut = random() < 0.03;
    const o: Operation = timedOut
      ? { client: `c${c}`, op, invokedAt }
      : { client: `c${c}`, op, invokedAt, returnedAt: invokedAt + duration };
    history.push(o);
    if (!timedOut || random() < 0.5) points.push({ o, at: invokedAt + random() * duration });
    clock[c] = invokedAt + duration + int(random, 0, 10);
  }
  points.sort((a, b) => a.at - b.at);
  let store: ReadonlyMap<string, string> = new Map();
  for (const { o } of points) {
    const { result, next } = execute(store, o.op);
    store = next;
    if (o.returnedAt !== undefined) o.result = result;
  }
  return history;
}

function keyOf(o: Operation): string {
  return o.op.key;
}

function assertViolation(result: CheckResult, key: string): Operation[] {
  assert.equal(result.ok, false, `expected a violation on ${key}`);
  if (result.ok !== false) throw new Error("unreachable");
  assert.equal(result.key, key);
  assert.ok(result.reason.includes(JSON.stringify(key)), result.reason);
  for (const o of result.operations) assert.equal(keyOf(o), key);
  return result.operations;
}

function show(history: readonly Operation[]): string {
  return history.map((o) => `\n  ${describeOperation(o)}`).join("");
}

// ---------------------------------------------------------------------------------------------

describe("checkLinearizable: known histories", () => {
  /** Small cases also go through the reference, so the expectation itself is checked. */
  function expect(history: Operation[], linearizable: boolean): CheckResult {
    if (history.length <= 12) {
      assert.equal(bruteForce(history), linearizable, `reference disagrees:${show(history)}`);
    }
    const result = checkLinearizable(history);
    assert.equal(result.ok, linearizable, `checker:${show(history)}\n${JSON.stringify(result)}`);
    return result;
  }

  it("accepts the empty history and sequential histories", () => {
    expect([], true);
    expect(
      [
        get("a", "x", [0, 1], null),
        put("a", "x", "1", [2, 3]),
        get("b", "x", [4, 5], "1"),
        cas("b", "x", "1", "2", [6, 7], true),
        cas("a", "x", "1", "3", [8, 9], false),
        get("a", "x", [10, 11], "2"),
        del("b", "x", [12, 13], true),
        get("b", "x", [14, 15], null),
      ],
      true,
    );
  });

  it("lets a read concurrent with a write see either value", () => {
    const before = put("a", "x", "old", [0, 1]);
    const write = put("a", "x", "new", [2, 10]);
    expect([before, write, get("b", "x", [3, 5], "old")], true);
    expect([before, write, get("b", "x", [3, 5], "new")], true);
    // Both values, in either order, by reads that overlap each other and the write.
    expect([before, write, get("b", "x", [3, 5], "new"), get("c", "x", [4, 6], "old")], true);
  });

  it("rejects a stale read after a completed write", () => {
    const result = expect(
      [put("a", "x", "old", [0, 1]), put("a", "x", "new", [2, 3]), get("b", "x", [4, 5], "old")],
      false,
    );
    const operations = assertViolation(result, "x");
    assert.ok(
      operations.some((o) => o.op.type === "get"),
      "names the stale read",
    );
  });

  it("rejects reading a value never written", () => {
    expect([put("a", "x", "1", [0, 1]), get("b", "x", [0, 5], "2")], false);
    expect([get("b", "x", [0, 5], "ghost")], false);
  });

  it("rejects two compare-and-sets succeeding from the same expected value", () => {
    const setup = put("a", "x", "v0", [0, 1]);
    expect(
      [setup, cas("a", "x", "v0", "A", [2, 6], true), cas("b", "x", "v0", "B", [3, 7], true)],
      false,
    );
    // One winner is fine, whichever it is.
    expect(
      [setup, cas("a", "x", "v0", "A", [2, 6], false), cas("b", "x", "v0", "B", [3, 7], true)],
      true,
    );
    // Expected null means "absent": create-if-absent, once.
    expect([cas("a", "x", null, "A", [0, 4], true), cas("b", "x", null, "B", [1, 5], true)], false);
    expect([cas("a", "x", null, "A", [0, 4], true), cas("b", "x", null, "B", [1, 5], false)], true);
  });

  it("lets a pending write take effect, late, or not at all", () => {
    const pending = put("a", "x", "p", [0]);
    // Seen by a read that starts long after the write was issued.
    expect([pending, get("b", "x", [100, 101], "p")], true);
    // Never seen.
    expect([pending, get("b", "x", [100, 101], null)], true);
    // Seen, then not: it cannot take effect twice.
    expect([pending, get("b", "x", [10, 11], "p"), get("b", "x", [12, 13], null)], false);
    // Not yet seen, then seen (it took effect between the reads).
    expect([pending, get("b", "x", [10, 11], null), get("b", "x", [12, 13], "p")], true);
    // But not before it was invoked.
    expect([get("b", "x", [0, 1], "q"), put("a", "x", "q", [2])], false);
    // A pending delete and a pending cas, needed in that order.
    expect(
      [
        put("a", "x", "1", [0, 1]),
        del("b", "x", [2]),
        cas("c", "x", null, "2", [3]),
        get("d", "x", [20, 21], "2"),
      ],
      true,
    );
    // A pending cas cannot succeed from a value that never was.
    expect(
      [put("a", "x", "1", [0, 1]), cas("c", "x", null, "2", [3]), get("d", "x", [20, 21], "2")],
      false,
    );
  });

  it("chains pending compare-and-sets, but each at most once", () => {
    const setup = put("a", "x", "1", [0, 1]);
    const oneToTwo = cas("p", "x", "1", "2", [2]);
    const twoToThree = cas("q", "x", "2", "3", [3]);
    expect([setup, oneToTwo, twoToThree, get("r", "x", [20, 21], "3")], true);
    expect([setup, twoToThree, get("r", "x", [20, 21], "3")], false);
    // 1 -> 2 -> 1 -> 2 would need the first cas twice.
    const twoToOne = cas("s", "x", "2", "1", [4]);
    expect(
      [setup, oneToTwo, twoToOne, get("r", "x", [10, 11], "2"), get("r", "x", [12, 13], "1")],
      true,
    );
    expect(
      [
        setup,
        oneToTwo,
        twoToOne,
        get("r", "x", [10, 11], "2"),
        get("r", "x", [12, 13], "1"),
        get("r", "x", [14, 15], "2"),
      ],
      false,
    );
  });

  it("stays fast with a crowd of timed-out writes", () => {
    // Left free, the search would try every subset of the 40 pending puts in every order. The
    // violations below are joint ones: each read alone has a write that could explain it, so
    // only the search can reject them.
    const crowd = Array.from({ length: 40 }, (_, i) => put(`p${i}`, "x", `v${i}`, [i]));
    const reads = [get("r", "x", [0, 1], null), get("r", "x", [100, 101], "v5")];
    const options = { maxSteps: 100_000 };
    const seen = [...reads, get("r", "x", [102, 103], "v30"), get("r", "x", [104, 105], "v12")];
    assert.equal(checkLinearizable([...crowd, ...seen], options).ok, true);
    // v5 again after v30: p5 cannot take effect twice.
    const again = [...reads, get("r", "x", [102, 103], "v30"), get("r", "x", [104, 105], "v5")];
    const result = checkLinearizable([...crowd, ...again], options);
    const operations = assertViolation(result, "x");
    assert.ok(operations.includes(again[3]!), "names the read");
    assert.ok(result.ok === false && result.reason.includes(`leaving the value "v30"`));

    // Pending puts that completed puts would overwrite are not worth trying.
    const overwritten = Array.from({ length: 30 }, (_, i) =>
      put("w", "x", `w${i}`, [50 + 2 * i, 51 + 2 * i]),
    );
    const late = [get("r", "x", [200, 201], "w29"), get("r", "x", [202, 203], "v3")];
    assert.equal(checkLinearizable([...crowd, ...overwritten, ...late], options).ok, true);
    // A pending put seen after the last completed one hides it for good.
    const hidden = [get("r", "x", [200, 201], "v3"), get("r", "x", [202, 203], "w29")];
    assertViolation(checkLinearizable([...crowd, ...overwritten, ...hidden], options), "x");

    // Nor is a pending put worth placing before a completed put that would hide it, even when a
    // concurrent read needs it elsewhere.
    const contested: Operation[] = [];
    for (let i = 0; i < 12; i++) {
      contested.push(
        put(`p${i}`, "y", `v${i}`, [i]),
        get(`g${i}`, "y", [100, 300], `v${i}`),
        put(`w${i}`, "y", `w${i}`, [100, 300]),
      );
    }
    assert.equal(checkLinearizable(contested, options).ok, true);

    // One run needs one pending put at most: with several readers of lost writes at once, chains
    // of them would multiply the search.
    const lost = Array.from({ length: 10 }, (_, i) => put(`p${i}`, "z", `v${i}`, [i]));
    const readers = Array.from({ length: 10 }, (_, i) => get(`g${i}`, "z", [100, 200], `v${i}`));
    const lastSeen = get("r", "z", [201, 202], "v0");
    assert.equal(checkLinearizable([...lost, ...readers, lastSeen], options).ok, true);
    const flip = get("r", "z", [203, 204], "v1");
    assertViolation(checkLinearizable([...lost, ...readers, lastSeen, flip], options), "z");

    // Nor are pending compare-and-sets that go round in circles: A -> B -> A -> ...
    const circles = [put("a", "x", "A", [0, 1])];
    for (let i = 0; i < 12; i++) {
      circles.push(cas(`ab${i}`, "x", "A", "B", [2 + i]), cas(`ba${i}`, "x", "B", "A", [2 + i]));
    }
    circles.push(get("r", "x", [50, 51], "B"), get("r", "x", [52, 53], "A"));
    assert.equal(checkLinearizable([...circles, get("r", "x", [54, 55], "B")], options).ok, true);
    // From C no cas leads back to B.
    const fromC = [put("c", "x", "C", [54, 55]), get("r", "x", [56, 57], "B")];
    assertViolation(checkLinearizable([...circles, ...fromC], options), "x");
  });

  it("spends nothing on timed-out writes that nobody saw", () => {
    // 100 lost writes, then 1,000 sequential operations by one client: a few configurations each.
    const lost = Array.from({ length: 100 }, (_, i) => put(`p${i}`, "x", `lost${i}`, [i]));
    const steady: Operation[] = [];
    for (let i = 0; i < 500; i++) {
      const t = 1_000 + 4 * i;
      steady.push(put("a", "x", `v${i}`, [t, t + 1]), get("a", "x", [t + 2, t + 3], `v${i}`));
    }
    assert.equal(checkLinearizable([...lost, ...steady], { maxSteps: 5_000 }).ok, true);
    steady[601] = get("a", "x", [1_000 + 4 * 300 + 2, 1_000 + 4 * 300 + 3], "v299");
    assertViolation(checkLinearizable([...lost, ...steady], { maxSteps: 5_000 }), "x");
  });

  it("checks delete's existed flag", () => {
    expect([del("a", "x", [0, 1], false)], true);
    expect([del("a", "x", [0, 1], true)], false);
    expect([put("a", "x", "1", [0, 1]), del("a", "x", [2, 3], true)], true);
    expect([put("a", "x", "1", [0, 1]), del("a", "x", [2, 3], false)], false);
    // Two overlapping deletes of one value: only one of them can have removed it.
    const setup = put("a", "x", "1", [0, 1]);
    expect([setup, del("a", "x", [2, 5], true), del("b", "x", [3, 6], true)], false);
    expect([setup, del("a", "x", [2, 5], true), del("b", "x", [3, 6], false)], true);
    expect([setup, del("a", "x", [2, 3], true), get("b", "x", [4, 5], "1")], false);
  });

  it("checks every key of a multi-key history on its own", () => {
    const history: Operation[] = [];
    for (let k = 0; k < 10; k++) {
      const key = `k${k}`;
      history.push(
        put("a", key, `${k}`, [k, k + 10]),
        get("b", key, [k + 1, k + 2], k % 2 === 0 ? `${k}` : null),
        get("c", key, [k + 20, k + 21], `${k}`),
      );
    }
    expect(history, true);
    // The same values under other keys do not help: y never had "1".
    expect([put("a", "x", "1", [0, 1]), get("b", "y", [2, 3], "1")], false);
  });

  it("reports the one bad key among many", () => {
    const history: Operation[] = [];
    for (let k = 0; k < 10; k++) {
      const key = `k${k}`;
      history.push(
        put("a", key, "1", [3 * k, 3 * k + 1]),
        put("a", key, "2", [3 * k + 2, 3 * k + 3]),
        get("b", key, [3 * k + 4, 3 * k + 5], k === 7 ? "1" : "2"),
      );
    }
    const stale = history[3 * 7 + 2]!;
    const operations = assertViolation(expect(history, false), "k7");
    assert.ok(operations.includes(stale), "names the stale read");
  });

  it("rejects a client not reading its own write", () => {
    expect(
      [
        put("b", "x", "0", [0, 1]),
        put("a", "x", "1", [2, 3]),
        put("c", "x", "2", [2, 9]), // concurrent, but its value is not what was read
        get("a", "x", [4, 5], "0"),
      ],
      false,
    );
  });

  it("finds the one interleaving that explains overlapping operations", () => {
    // B's put is invoked first, so trying it first fails; only A, D, B, C works: D saw A's value
    // while both puts were running, and C, after both, saw B's.
    const history = [
      put("b", "x", "2", [0, 10]),
      put("a", "x", "1", [1, 10]),
      get("d", "x", [2, 5], "1"),
      get("c", "x", [11, 12], "2"),
    ];
    expect(history, true);
    // Swap what the reads saw and it is still explained, by B, D, A, C...
    expect(
      [history[0]!, history[1]!, get("d", "x", [2, 5], "2"), get("c", "x", [11, 12], "1")],
      true,
    );
    // ...but D seeing "1" and C seeing "1" after a third write that followed A is not.
    expect(
      [
        history[0]!,
        history[1]!,
        get("d", "x", [2, 5], "1"),
        put("e", "x", "3", [6, 7]),
        get("c", "x", [11, 12], "1"),
      ],
      false,
    );
  });

  it("treats operations meeting at one timestamp as concurrent", () => {
    expect([put("a", "x", "1", [0, 5]), get("b", "x", [5, 6], null)], true);
    expect([put("a", "x", "1", [0, 4]), get("b", "x", [5, 6], null)], false);
  });

  it("gives up with unknown when the step budget runs out, deterministically", () => {
    // Many concurrent writes, then reads of two of them: each read alone is explained, but not
    // both, and only trying every order of the writes shows it.
    const history = [
      ...Array.from({ length: 12 }, (_, i) => put(`c${i}`, "x", `${i}`, [0, 10])),
      get("r", "x", [11, 12], "3"),
      get("r", "x", [13, 14], "5"),
    ];
    const limited = checkLinearizable(history, { maxSteps: 50 });
    assert.equal(limited.ok, "unknown");
    assert.deepEqual(checkLinearizable(history, { maxSteps: 50 }), limited);
    assert.equal(checkLinearizable(history).ok, false);
    assert.deepEqual(checkLinearizable(history), checkLinearizable(history));
    // The budget is shared by all keys.
    const twoKeys = [put("a", "x", "1", [0, 1]), put("a", "y", "1", [0, 1])];
    assert.equal(checkLinearizable(twoKeys, { maxSteps: 1 }).ok, "unknown");
    assert.equal(checkLinearizable(twoKeys, { maxSteps: 2 }).ok, true);
    // Smaller keys go first, so a violation on one is found before a big key uses the budget.
    const stale = [
      put("a", "y", "1", [0, 1]),
      put("a", "y", "2", [2, 3]),
      get("b", "y", [4, 5], "1"),
    ];
    assertViolation(checkLinearizable([...history, ...stale], { maxSteps: 50 }), "y");
  });

  it("throws on malformed histories", () => {
    assert.throws(() => checkLinearizable([put("a", "x", "1", [5, 4])]), RangeError);
    assert.throws(
      () =>
        checkLinearizable([
          { client: "a", op: { type: "get", key: "x" }, invokedAt: 0, returnedAt: 1 },
        ]),
      TypeError,
    );
    assert.throws(
      () => checkLinearizable([operation("a", { type: "get", key: "x" }, [0, 1], { type: "put" })]),
      TypeError,
    );
    assert.throws(() => checkLinearizable([], { maxSteps: -1 }), RangeError);
    // A pending operation's result is ignored, whatever it is.
    assert.equal(
      checkLinearizable([
        operation("a", { type: "get", key: "x" }, [0], undefined),
        get("b", "x", [1, 2]),
      ]).ok,
      true,
    );
  });
});

describe("checkLinearizable: against a brute-force reference", () => {
  it("agrees on thousands of random small histories", () => {
    withSeed("random small histories", (random) => {
      const counts = { linearizable: 0, not: 0 };
      for (let n = 0; n < 10_000; n++) {
        const { history, mode } = smallHistory(random);
        const expected = bruteForce(history);
        const context = `case ${n} (${mode}):${show(history)}`;
        if (mode === "executed") assert.ok(expected, `generator broke: ${context}`);
        const result = checkLinearizable(history);
        assert.equal(result.ok, expected, `checker says ${JSON.stringify(result)} for ${context}`);
        counts[expected ? "linearizable" : "not"]++;
        if (result.ok === false) {
          // The key named is itself not linearizable, and the operations are its own.
          const own = history.filter((o) => keyOf(o) === result.key);
          assert.equal(bruteForce(own), false, `key ${result.key} is fine: ${context}`);
          for (const o of result.operations) assert.ok(own.includes(o), context);
          assert.ok(result.operations.length > 0, context);
        }
        // A budget may stop the search, never change its answer.
        const limited = checkLinearizable(history, { maxSteps: int(random, 0, 30) });
        assert.ok(limited.ok === "unknown" || limited.ok === expected, `limited: ${context}`);
      }
      // Both outcomes must be common, or the comparison proves little.
      assert.ok(counts.linearizable > 2000 && counts.not > 2000, JSON.stringify(counts));
    });
  });
});

describe("checkLinearizable: a large generated history", () => {
  it("accepts 2,000 operations by 10 clients on 5 keys, and rejects one corrupted read", (t) => {
    withSeed("large history", (random) => {
      const keys = ["k0", "k1", "k2", "k3", "k4"];
      const history = largeHistory(random, 10, 2_000, keys);
      const pending = history.filter((o) => o.returnedAt === undefined).length;

      let started = performance.now();
      const result = checkLinearizable(history);
      const acceptMs = performance.now() - started;
      assert.deepEqual(result, { ok: true });
      t.diagnostic(
        `accepted ${history.length} operations (${pending} pending) in ${acceptMs.toFixed(0)} ms`,
      );
      assert.ok(acceptMs < 10_000, `took ${acceptMs} ms`);

      // A stale read: a get whose key was overwritten (put or delete) by an operation that itself
      // began after an earlier put had returned, and returned before the get began; the get is
      // made to return that earlier put's value, which was written only once.
      const returned = history.filter((o) => o.returnedAt !== undefined);
      let corrupted: { index: number; value: string } | undefined;
      for (const [index, g] of history.entries()) {
        if (g.op.type !== "get" || g.returnedAt === undefined || index < 500) continue;
        const overwrite = returned.find(
          (w) =>
            keyOf(w) === keyOf(g) &&
            (w.op.type === "put" || w.op.type === "delete") &&
            w.returnedAt! < g.invokedAt &&
            returned.some(
              (p) => keyOf(p) === keyOf(g) && p.op.type === "put" && p.returnedAt! < w.invokedAt,
            ),
        );
        if (overwrite === undefined) continue;
        const earlier = returned.find(
          (p) =>
            keyOf(p) === keyOf(g) && p.op.type === "put" && p.returnedAt! < overwrite.invokedAt,
        );
        if (earlier?.op.type === "put") corrupted = { index, value: earlier.op.value };
        break;
      }
      assert.ok(corrupted, "the generated history has a read to corrupt");
      const victim = history[corrupted.index]!;
      for (const value of [corrupted.value, "never-written"]) {
        const bad = history.map((o, i) =>
          i === corrupted.index ? { ...o, result: { type: "get", value } as KvResult } : o,
        );
        started = performance.now();
        const rejected = checkLinearizable(bad);
        const rejectMs = performance.now() - started;
        t.diagnostic(`rejected a read of ${JSON.stringify(value)} in ${rejectMs.toFixed(0)} ms`);
        const operations = assertViolation(rejected, keyOf(victim));
        assert.ok(
          operations.includes(bad[corrupted.index]!),
          `the corrupted read is among the operations reported:\n${rejected.ok === false ? rejected.reason : ""}`,
        );
        assert.ok(rejectMs < 10_000, `took ${rejectMs} ms`);
      }

      // A violation no single read shows, so only the search finds it, at the very end: two
      // overlapping puts, then reads seeing one value and then the other.
      const end = Math.max(...history.map((o) => o.returnedAt ?? o.invokedAt)) + 10;
      const flipFlop = [
        put("u", "k2", "first", [end, end + 10]),
        put("v", "k2", "second", [end + 1, end + 10]),
        get("w", "k2", [end + 11, end + 12], "second"),
        get("w", "k2", [end + 13, end + 14], "first"),
      ];
      started = performance.now();
      const searched = checkLinearizable([...history, ...flipFlop]);
      const searchMs = performance.now() - started;
      t.diagnostic(`rejected a late flip-flop in ${searchMs.toFixed(0)} ms`);
      assert.ok(assertViolation(searched, "k2").includes(flipFlop[3]!), "names the last read");
      assert.ok(searchMs < 10_000, `took ${searchMs} ms`);
      // Both reads seeing the same one of the two is fine.
      const settled = [...flipFlop.slice(0, 3), get("w", "k2", [end + 13, end + 14], "second")];
      assert.deepEqual(checkLinearizable([...history, ...settled]), { ok: true });
    });
  });

  it("copes with 20 clients contending for one key", (t) => {
    withSeed("contended key", (random) => {
      const history = largeHistory(random, 20, 3_000, ["hot"]);
      const options = { maxSteps: 1_000_000 };
      let started = performance.now();
      assert.deepEqual(checkLinearizable(history, options), { ok: true });
      const acceptMs = performance.now() - started;
      t.diagnostic(`accepted ${history.length} operations on one key in ${acceptMs.toFixed(0)} ms`);
      assert.ok(acceptMs < 10_000, `took ${acceptMs} ms`);

      const victim = history.findLastIndex(
        (o) => o.op.type === "get" && o.returnedAt !== undefined,
      );
      const bad = history.map((o, i) =>
        i === victim ? { ...o, result: { type: "get", value: "never-written" } as KvResult } : o,
      );
      started = performance.now();
      assertViolation(checkLinearizable(bad, options), "hot");
      assert.ok(performance.now() - started < 10_000);
    });
  });

  it("is deterministic", () => {
    withSeed("determinism", (random) => {
      const history = largeHistory(random, 5, 300, ["a", "b"]);
      const victim = history.findLastIndex(
        (o) => o.op.type === "get" && o.returnedAt !== undefined,
      );
      history[victim] = { ...history[victim]!, result: { type: "get", value: "corrupt" } };
      const first = checkLinearizable(history);
      assert.equal(first.ok, false);
      assert.deepEqual(checkLinearizable(history), first);
      assert.deepEqual(checkLinearizable([...history].reverse()).ok, false);
    });
  });
});
