/**
 * Linearizability checker for client histories of the replicated key-value service.
 *
 * The simulator records, for every client request, when it was invoked, when (if ever) its reply
 * arrived and what the reply said. The service is correct only if there is a single sequential
 * order of the requests that (a) respects real time — a request that returned before another was
 * invoked comes first — and (b) explains every reply by running the requests one after another
 * on an ordinary key-value map. This module searches for such an order.
 *
 * The search is the Wing & Gong algorithm as improved by Lowe ("Testing for linearizability",
 * 2017; also what Porcupine and Knossos implement): walk the history's call/return events in
 * time order, tentatively linearize a call whose effect explains its result, backtrack when a
 * return is reached whose operation could not be placed, and memoise every (set of linearized
 * operations, model state) already explored, because reaching it again by another order can
 * only fail again. Two properties of the service keep this cheap:
 *
 * - P-compositionality: a history is linearizable iff its restriction to each key is, since
 *   every operation touches one key. So each key is checked on its own, which turns one search
 *   exponential in the whole history's concurrency into several over much smaller ones.
 * - The per-key model is a single register (absent or a string), so a state is one small
 *   integer once the key's values are interned.
 *
 * Before searching, each key gets a cheap sound test that catches a read no write can explain
 * (stale, or of a value never written) in O(n log n): proving such a violation by search means
 * exhausting every order of the operations before it, which for a busy key can exceed any budget.
 *
 * Two refinements keep concurrent histories tractable. The memo's set of linearized operations
 * is encoded relative to how far the search has got, so it stays as small as the history's
 * concurrency however long the history is. And operations that cannot change the register (a
 * get, a failed cas) are committed as soon as the current state explains them rather than
 * branched on, so the search branches only over the order of writes.
 *
 * Operations that never returned (the client timed out or crashed) may have taken effect at any
 * time after their invocation, or not at all, and what they would have returned is unknown. They
 * are the expensive part of the search: each one that is linearized somewhere is one more bit in
 * the memo key, so exploring them freely would double the explored configurations per pending
 * operation. The search therefore only considers linearizations in a canonical form that loses
 * no generality (see "Pending operations" below): a run of pending operations is as short as it
 * can be, and is placed only where the next completed operation could not be explained without
 * it.
 *
 * Everything is deterministic (no clocks, no randomness, a fixed order over keys and events), so
 * a simulator run that fails its check fails it again when replayed from the same seed.
 */

import type { KvOp, KvResult } from "../tara/kv/kv-state-machine.js";

export type { KvOp, KvResult };

export interface Operation {
  client: string;
  op: KvOp;
  invokedAt: number;
  /**
   * Undefined: the operation never returned (pending, timed out). It may or may not have taken
   * effect, and its `result`, if any, is ignored.
   */
  returnedAt?: number;
  /** Required when `returnedAt` is set. */
  result?: KvResult;
}

export type CheckResult =
  | { ok: true }
  /**
   * `operations` explain the verdict. For a read that nothing can explain (see `impossibleRead`):
   * that read, then every operation that might have written the value it saw. Otherwise, those
   * at the point where the search got furthest: the write that produced the value there (when
   * there is one), then every operation on the key that could have come next — including the one
   * that had to take effect before it returned and could not.
   */
  | { ok: false; key: string; reason: string; operations: Operation[] }
  | { ok: "unknown"; reason: string };

export interface CheckOptions {
  /**
   * Search steps allowed over all keys before giving up with `ok: "unknown"`. A step is one
   * configuration explored, i.e. one memo entry, so this bounds memory as well as time (a few
   * microseconds and some tens of bytes each).
   */
  maxSteps?: number;
}

export const DEFAULT_MAX_STEPS = 5_000_000;

/**
 * Checks that `history` is linearizable with respect to a key-value map in which every key starts
 * absent.
 *
 * Real time is strict: operation A precedes B only if A returned strictly before B was invoked,
 * so operations whose endpoints share a timestamp count as concurrent (a simulator tick orders
 * nothing within itself).
 *
 * A malformed history (a completed operation without a result of its type, times out of order)
 * is a bug in whatever recorded it, not a verdict on the service, so it throws.
 */
export function checkLinearizable(history: Operation[], options: CheckOptions = {}): CheckResult {
  const maxSteps = options.maxSteps ?? DEFAULT_MAX_STEPS;
  if (!(maxSteps >= 0)) throw new RangeError(`maxSteps must be >= 0, got ${maxSteps}`);
  history.forEach(validate);

  const byKey = new Map<string, Operation[]>();
  for (const operation of history) {
    const list = byKey.get(operation.op.key);
    if (list === undefined) byKey.set(operation.op.key, [operation]);
    else list.push(operation);
  }
  // Smallest sub-histories first: a violation on a small key is found before a large key can use
  // up the shared step budget. Ties by key, compared by code unit (locale-independent).
  const keys = [...byKey.keys()].sort((a, b) => {
    const sizes = byKey.get(a)!.length - byKey.get(b)!.length;
    return sizes !== 0 ? sizes : a < b ? -1 : a > b ? 1 : 0;
  });

  const budget = { remaining: maxSteps };
  for (const key of keys) {
    const outcome = checkKey(key, byKey.get(key)!, budget);
    if (outcome.ok !== true) return outcome;
  }
  return { ok: true };
}

/** One operation as the search sees it, with its values interned. */
interface Entry {
  source: Operation;
  type: KvOp["type"];
  completed: boolean;
  /** Value id written by put / successful cas. */
  write: number;
  /** Value id a cas compares against. */
  expected: number;
  /** Completed get: value id it returned. Completed delete / cas: 1 if existed / ok, else 0. */
  observed: number;
  /** Position among the key's completed operations, or among its pending ones. */
  slot: number;
  /** Completed, and never changes the state wherever it is explained (see `isReadOnly`). */
  readOnly: boolean;
}

// States are value ids: ABSENT, or 1, 2, … for the values written on the key. The negative codes
// below are distinct from each other and from every state.

/** The absent value's id. */
const ABSENT = 0;
/** Run-start marker: the last linearized operation completed (no pending run is open). */
const NO_RUN = -1;
/** From a step function: the operation cannot be linearized at this state. */
const REJECTED = -2;
/** A value that no operation on the key writes (read or expected), so no state ever equals it. */
const NEVER_WRITTEN = -3;

/**
 * Whether completed `e`, at any state that explains its result, leaves that state unchanged: a
 * get, a failed cas, a delete that found nothing (so the key stays absent), a cas writing the
 * value it expected.
 */
function isReadOnly(e: Entry): boolean {
  switch (e.type) {
    case "get":
      return true;
    case "put":
      return false;
    case "delete":
      return e.observed === 0;
    case "cas":
      return e.observed === 0 || e.expected === e.write;
  }
}

/** State after completed `e` at `state`, or REJECTED if that does not explain e's result. */
function stepCompleted(e: Entry, state: number): number {
  switch (e.type) {
    case "get":
      return e.observed === state ? state : REJECTED;
    case "put":
      return e.write;
    case "delete":
      return (state !== ABSENT ? 1 : 0) === e.observed ? ABSENT : REJECTED;
    case "cas": {
      const matches = state === e.expected;
      if ((matches ? 1 : 0) !== e.observed) return REJECTED;
      return matches ? e.write : state;
    }
  }
}

/*
 * Pending operations. The search only builds linearizations in which every maximal run of
 * consecutive pending operations, starting from state `runStart`, is
 *
 * 1. necessary: the completed operation that ends the run could NOT be linearized at
 *    `runStart`;
 * 2. made of effects only: each operation in it changes the state;
 * 3. overwritten at most at its start: a pending put or delete only ever opens a run;
 * 4. free of cycles back to its start: no operation in it returns the state to `runStart`.
 *
 * Every linearization can be rewritten into that form, so nothing linearizable is missed, by
 * steps that each remove a pending operation or move one later (so the rewriting ends):
 *
 * - If the completed operation c after a run is explained at `runStart`, either c overwrites the
 *   register whatever it held (put, delete, successful cas: the prior state matters only through
 *   c's result, which `runStart` explains too) and the run can be dropped; or c leaves the
 *   register alone (get, failed cas) and the run can move after c, joining any run there. A run
 *   pushed past the last completed operation is dropped.
 * - A pending operation that changes nothing can be dropped: its result was never seen.
 * - Whatever a run did before a put or delete in it is overwritten by it and can be dropped (a
 *   delete that then finds the key absent changes nothing and goes too).
 * - A stretch of a run that ends where the run started is a no-op and can be dropped.
 *
 * Pending operations have no return, so placing them later or not at all never violates real
 * time. Each rule depends only on (state, runStart), which is therefore part of the memo key.
 */

/** State after pending `e` at `state` within a run from `runStart`, or REJECTED if not allowed. */
function stepPending(e: Entry, state: number, runStart: number): number {
  let after: number;
  switch (e.type) {
    case "get":
      return REJECTED;
    case "put":
      after = e.write;
      break;
    case "delete":
      after = ABSENT;
      break;
    case "cas":
      if (state !== e.expected) return REJECTED;
      after = e.write;
      break;
  }
  if (after === state) return REJECTED; // rule 2
  if (runStart === NO_RUN) return after;
  if (e.type === "put" || e.type === "delete") return REJECTED; // rule 3
  return after === runStart ? REJECTED : after; // rule 4
}

/** State after completed `e` at `state`, closing any run from `runStart`; or REJECTED. */
function stepAfterRun(e: Entry, state: number, runStart: number): number {
  if (runStart !== NO_RUN && stepCompleted(e, runStart) !== REJECTED) return REJECTED; // rule 1
  return stepCompleted(e, state);
}

type KeyOutcome = { ok: true } | Exclude<CheckResult, { ok: true }>;

function checkKey(key: string, operations: Operation[], budget: { remaining: number }): KeyOutcome {
  // Pending gets have no effect and no observed result: they constrain nothing.
  const relevant = operations.filter((o) => o.returnedAt !== undefined || o.op.type !== "get");
  // Invocation order (stable, so ties keep history order): the search then tries earlier
  // operations first, which in a real history is usually the right guess.
  const ordered = relevant
    .map((source, index) => ({ source, index }))
    .sort((a, b) => a.source.invokedAt - b.source.invokedAt || a.index - b.index)
    .map(({ source }) => source);
  const n = ordered.length;

  const valueIds = new Map<string, number>();
  const values: string[] = []; // by id - 1
  const intern = (value: string): void => {
    if (!valueIds.has(value)) valueIds.set(value, values.push(value));
  };
  // Only written values can be states; intern those first so that anything else is NEVER_WRITTEN.
  for (const { op } of ordered) if (op.type === "put" || op.type === "cas") intern(op.value);
  const lookup = (value: string | null): number =>
    value === null ? ABSENT : (valueIds.get(value) ?? NEVER_WRITTEN);
  const entries: Entry[] = ordered.map((source) => {
    const { op, result } = source;
    const completed = source.returnedAt !== undefined;
    const entry: Entry = {
      source,
      type: op.type,
      completed,
      write: op.type === "put" || op.type === "cas" ? lookup(op.value) : ABSENT,
      expected: op.type === "cas" ? lookup(op.expected) : ABSENT,
      observed: 0,
      slot: 0,
      readOnly: false,
    };
    if (completed && result !== undefined) {
      if (result.type === "get") entry.observed = lookup(result.value);
      else if (result.type === "delete") entry.observed = result.existed ? 1 : 0;
      else if (result.type === "cas") entry.observed = result.ok ? 1 : 0;
      entry.readOnly = isReadOnly(entry);
    }
    return entry;
  });
  let completedCount = 0;
  let pendingCount = 0;
  for (const e of entries) e.slot = e.completed ? completedCount++ : pendingCount++;
  if (completedCount === 0) return { ok: true };
  const impossible = impossibleRead(entries);
  if (impossible !== undefined) return impossible.outcome(key);

  // What pending compare-and-sets expect: the only states a run of pending operations can pass
  // through on its way to somewhere else (see `useful` below).
  const pendingCasExpects = new Set<number>();
  for (const e of entries) if (!e.completed && e.type === "cas") pendingCasExpects.add(e.expected);

  // Lowe's event list, as a circular doubly linked list over arrays with node 0 as the sentinel
  // ("dancing links"): linearizing an operation unlinks its call and return, and backtracking
  // relinks them in reverse order, both O(1). Node 2i+1 is operation i's call, 2i+2 its return
  // (pending operations have no return node in the list).
  const events: { node: number; time: number; isCall: boolean; op: number }[] = [];
  entries.forEach((e, i) => {
    events.push({ node: 2 * i + 1, time: e.source.invokedAt, isCall: true, op: i });
    if (e.completed) {
      events.push({ node: 2 * i + 2, time: e.source.returnedAt!, isCall: false, op: i });
    }
  });
  // At equal times calls come first, which makes operations meeting at one timestamp concurrent.
  events.sort(
    (a, b) => a.time - b.time || (a.isCall === b.isCall ? a.op - b.op : a.isCall ? -1 : 1),
  );
  const size = 2 * n + 1;
  const next = new Int32Array(size);
  const prev = new Int32Array(size);
  let last = 0;
  for (const { node } of events) {
    next[last] = node;
    prev[node] = last;
    last = node;
  }
  next[last] = 0;
  prev[0] = last;
  const unlink = (node: number): void => {
    next[prev[node]!] = next[node]!;
    prev[next[node]!] = prev[node]!;
  };
  const relink = (node: number): void => {
    next[prev[node]!] = node;
    prev[next[node]!] = node;
  };
  const lift = (i: number): void => {
    unlink(2 * i + 1);
    if (entries[i]!.completed) unlink(2 * i + 2);
  };
  const unlift = (i: number): void => {
    if (entries[i]!.completed) relink(2 * i + 2);
    relink(2 * i + 1);
  };

  // The memo. A configuration is (the set of linearized operations, state, runStart), and one is
  // only ever revisited after it has been fully explored without success (the linearized set
  // grows along any one path), so membership alone means "fails from here".
  //
  // The set is kept small. Operations are sorted by invocation, so the completed ones linearized
  // on a path are a prefix (`frontier` of them) plus some beyond it, all overlapping the oldest
  // one not yet linearized: a `window` bitset relative to the frontier, as wide as the history
  // is concurrent. Pending operations may
  // stay unplaced forever, which would pin such a frontier, so they have a bitset of their own
  // (`pendingBits`; timeouts are the exception, so it stays short). All of it is packed into one
  // bigint: the (state, runStart) code, the frontier, the pending bits, and on top the window,
  // the only part whose width varies.
  const states = values.length + 1; // ABSENT and every written value
  const runCodes = states + 1; // NO_RUN and every state
  const frontierShift = BigInt((states * runCodes).toString(2).length);
  const pendingShift = frontierShift + 32n;
  const windowShift = pendingShift + BigInt(pendingCount);
  const pendingBit = Array.from({ length: pendingCount }, (_, i) => 1n << BigInt(i));
  // Buckets by a 32-bit hash rather than a Set of bigints: V8 hashes a bigint by its lowest
  // digit only, and here the varying bits are at the top, so a Set degrades to linear probing.
  // The hash of the set is kept incrementally, XOR-ing each operation's fixed pseudo-random word.
  const memo = new Map<number, bigint[]>();

  // The current path, and for each step on it what to restore when it is undone.
  const stackOp = new Int32Array(n);
  const stackState = new Int32Array(n);
  const stackRun = new Int32Array(n);
  const stackFrontier = new Int32Array(n);
  const stackWindow: bigint[] = [];
  const stackPending: bigint[] = [];
  const stackHash = new Int32Array(n);
  const stackForced = new Uint8Array(n);
  let depth = 0;
  let frontier = 0;
  let window = 0n;
  let pendingBits = 0n;
  let setHash = 0;
  let state = ABSENT;
  let runStart = NO_RUN;
  let done = 0; // completed operations on the path; all of them linearized = success

  let node = next[0]!; // the event being considered
  let fresh = true; // the path has just grown: look for a read to commit
  let unwinding = false; // undoing a forced step: its configuration fails, so its parent does too
  let exhausted = false;

  // The completed candidates that reject the state the current run started from (or the current
  // state when no run is open): by rule 1 only these can end a run, so a pending operation is
  // worth placing only if one of them accepts the state it leads to — or a pending cas could
  // continue the run from there. Candidates are the calls before the first return: every
  // operation that must precede them is linearized. Placing pending operations never changes
  // them, so one list serves a whole run.
  const needy: number[] = [];
  let needyValid = false;
  const useful = (after: number): boolean => {
    if (pendingCasExpects.has(after)) return true;
    if (!needyValid) {
      needy.length = 0;
      const from = runStart === NO_RUN ? state : runStart;
      for (let at = next[0]!; at !== 0 && (at & 1) === 1; at = next[at]!) {
        const e = entries[(at - 1) >> 1]!;
        if (e.completed && stepCompleted(e, from) === REJECTED) needy.push((at - 1) >> 1);
      }
      needyValid = true;
    }
    return needy.some((c) => stepCompleted(entries[c]!, after) !== REJECTED);
  };

  /** Extends the path with operation i; false if its configuration failed before, or the budget is spent. */
  const advance = (i: number, after: number, runAfter: number, forced: boolean): boolean => {
    const e = entries[i]!;
    let f = frontier;
    let w = window;
    let p = pendingBits;
    if (e.completed) {
      w |= 1n << BigInt(e.slot - f);
      while ((w & 1n) === 1n) {
        w >>= 1n;
        f++;
      }
    } else {
      p |= pendingBit[e.slot]!;
    }
    const code = after * runCodes + runAfter + 1;
    const k =
      (w << windowShift) | (p << pendingShift) | (BigInt(f) << frontierShift) | BigInt(code);
    const h = setHash ^ mix32(i + 1);
    const hash = mix32(h ^ Math.imul(code, 0x9e3779b1));
    const bucket = memo.get(hash);
    if (bucket?.includes(k)) return false;
    if (budget.remaining <= 0) {
      exhausted = true;
      return false;
    }
    budget.remaining--;
    if (bucket === undefined) memo.set(hash, [k]);
    else bucket.push(k);
    stackOp[depth] = i;
    stackState[depth] = state;
    stackRun[depth] = runStart;
    stackFrontier[depth] = frontier;
    stackWindow[depth] = window;
    stackPending[depth] = pendingBits;
    stackHash[depth] = setHash;
    stackForced[depth] = forced ? 1 : 0;
    depth++;
    frontier = f;
    window = w;
    pendingBits = p;
    setHash = h;
    state = after;
    runStart = runAfter;
    if (e.completed) done++;
    lift(i);
    needyValid = false;
    fresh = true;
    node = next[0]!;
    return true;
  };

  /** A completed read-only candidate explained at the current state, or -1. */
  const committableRead = (): number => {
    for (let at = next[0]!; at !== 0 && (at & 1) === 1; at = next[at]!) {
      const e = entries[(at - 1) >> 1]!;
      if (e.readOnly && stepCompleted(e, state) !== REJECTED) return (at - 1) >> 1;
    }
    return -1;
  };

  // Where the search got furthest (by completed operations linearized), for the report.
  let bestDone = -1;
  let bestBlocked = -1;
  let bestState = ABSENT;
  let bestWriter = -1;
  let bestCandidates: number[] = [];

  for (;;) {
    // Pending operations still unplaced simply never took effect.
    if (done === completedCount) return { ok: true };

    // A read-only operation that the current state explains can be linearized right now without
    // losing anything: in any way to finish from here it can be moved to the front (nothing must
    // precede it in real time, and it changed nothing where it was). So it is committed, not
    // branched on, and if the search fails after it, it fails here too. Not inside a pending run,
    // where rule 1 may forbid it.
    if (fresh) {
      fresh = false;
      if (runStart === NO_RUN) {
        const read = committableRead();
        if (read >= 0 && !advance(read, state, NO_RUN, true)) unwinding = true;
      }
    }
    if (exhausted) {
      return {
        ok: "unknown",
        reason:
          `step budget exhausted while checking key ${JSON.stringify(key)} ` +
          `(${n} operations; ${bestDone < 0 ? 0 : bestDone} of ${completedCount} completed ` +
          `ones linearized at best so far)`,
      };
    }
    if (fresh) continue;

    // A return (or the end, which is only reachable once every completed call is placed) means
    // the operation returning here cannot be placed on the current path: undo the latest choice.
    if (unwinding || node === 0 || (node & 1) === 0) {
      if (!unwinding && node !== 0 && done > bestDone) {
        bestDone = done;
        bestBlocked = (node - 2) >> 1;
        // Describe the state as the completed operations left it: an open run is a guess.
        bestState = runStart === NO_RUN ? state : runStart;
        bestWriter = lastWriter(entries, stackOp, depth, runStart !== NO_RUN);
        bestCandidates = [];
        for (let at = next[0]!; at !== node; at = next[at]!) {
          if ((at & 1) === 1) bestCandidates.push((at - 1) >> 1);
        }
      }
      if (depth === 0) {
        const value = bestState === ABSENT ? null : values[bestState - 1]!;
        return failure(key, entries, bestBlocked, value, bestWriter, bestCandidates, bestDone);
      }
      depth--;
      const i = stackOp[depth]!;
      state = stackState[depth]!;
      runStart = stackRun[depth]!;
      frontier = stackFrontier[depth]!;
      window = stackWindow[depth]!;
      pendingBits = stackPending[depth]!;
      setHash = stackHash[depth]!;
      if (entries[i]!.completed) done--;
      unlift(i);
      needyValid = false;
      unwinding = stackForced[depth] === 1;
      node = next[2 * i + 1]!;
      continue;
    }

    const i = (node - 1) >> 1;
    const e = entries[i]!;
    if (e.completed) {
      const after = stepAfterRun(e, state, runStart);
      if (after !== REJECTED && advance(i, after, NO_RUN, false)) continue;
    } else {
      const after = stepPending(e, state, runStart);
      const runAfter = runStart === NO_RUN ? state : runStart;
      if (after !== REJECTED && useful(after) && advance(i, after, runAfter, false)) continue;
    }
    if (exhausted) continue; // reported at the top
    node = next[node]!;
  }
}

/**
 * A quick, sound test run before the search: an operation that reads a value (a get, a successful
 * cas reading what it expected, a delete that found the key absent) needs some write of that
 * value — or, for "absent", the initial state — that is not wholly after it and is not followed
 * by another completed write wholly before it: completed operations take effect within their
 * intervals, so such a write would always overwrite the value first. When no write qualifies the
 * history is certainly not linearizable. This is how the commonest violations (stale reads,
 * values never written) show up, and here they cost O(n log n) instead of an exhaustive search,
 * which for a heavily concurrent key can exceed any budget.
 */
function impossibleRead(entries: Entry[]): { outcome: (key: string) => KeyOutcome } | undefined {
  // Completed operations that certainly wrote (entries are in invocation order), and for each
  // position the earliest return among those invoked from there on.
  const writes = entries.filter(
    (e) => e.completed && e.type !== "get" && (e.type !== "cas" || e.observed === 1),
  );
  const invoked = writes.map((e) => e.source.invokedAt);
  const earliestReturnFrom = new Float64Array(writes.length + 1).fill(Infinity);
  for (let j = writes.length - 1; j >= 0; j--) {
    earliestReturnFrom[j] = Math.min(earliestReturnFrom[j + 1]!, writes[j]!.source.returnedAt!);
  }
  /** Whether some completed write was invoked after `from` and returned before `to`. */
  const overwrittenBetween = (from: number, to: number): boolean => {
    let lo = 0;
    let hi = invoked.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (invoked[mid]! > from) hi = mid;
      else lo = mid + 1;
    }
    return earliestReturnFrom[lo]! < to;
  };

  // Every operation that may have written each state, pending ones included.
  const writers = new Map<number, Entry[]>();
  for (const e of entries) {
    const casMayHaveSucceeded = !e.completed || e.observed === 1;
    const wrote =
      e.type === "put" || (e.type === "cas" && casMayHaveSucceeded)
        ? e.write
        : e.type === "delete"
          ? ABSENT
          : undefined;
    if (wrote === undefined) continue;
    const list = writers.get(wrote);
    if (list === undefined) writers.set(wrote, [e]);
    else list.push(e);
  }

  for (const reader of entries) {
    if (!reader.completed) continue;
    let read: number;
    if (reader.type === "get") read = reader.observed;
    else if (reader.type === "cas" && reader.observed === 1) read = reader.expected;
    else if (reader.type === "delete" && reader.observed === 0) read = ABSENT;
    else continue;
    const { invokedAt, returnedAt } = reader.source;
    if (read === ABSENT && !overwrittenBetween(-Infinity, invokedAt)) continue; // initial state
    const sources = writers.get(read) ?? [];
    const explained = sources.some(
      (w) =>
        w !== reader &&
        !(returnedAt! < w.source.invokedAt) &&
        !(w.completed && overwrittenBetween(w.source.returnedAt!, invokedAt)),
    );
    if (explained) continue;
    return {
      outcome: (key) => ({
        ok: false,
        key,
        reason:
          `key ${JSON.stringify(key)}: ${describeOperation(reader.source)} cannot be explained: ` +
          (sources.length === 0 && read !== ABSENT
            ? "no operation writes the value it read"
            : `each of the ${sources.length} operation(s) that may have written the value it ` +
              `read either began after it returned or was overwritten by a write that completed ` +
              `before it began` +
              (read === ABSENT ? " (as was the initial absent state)" : "")),
        operations: [reader.source, ...sources.map((w) => w.source)],
      }),
    };
  }
  return undefined;
}

/** A 32-bit integer mix (MurmurHash3's finalizer): spreads nearby inputs over all bits. */
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return x ^ (x >>> 16);
}

/** The most recent operation on the path that wrote the register, before any open run; or -1. */
function lastWriter(entries: Entry[], stackOp: Int32Array, depth: number, inRun: boolean): number {
  let d = depth - 1;
  if (inRun) while (d >= 0 && !entries[stackOp[d]!]!.completed) d--;
  for (; d >= 0; d--) {
    const e = entries[stackOp[d]!]!;
    const wrote =
      e.type === "put" ||
      e.type === "delete" ||
      // A pending cas is only ever placed where it succeeds.
      (e.type === "cas" && (!e.completed || e.observed === 1));
    if (wrote) return stackOp[d]!;
  }
  return -1;
}

function failure(
  key: string,
  entries: Entry[],
  blocked: number,
  value: string | null,
  writer: number,
  candidates: number[],
  linearized: number,
): KeyOutcome {
  const completed = entries.filter((e) => e.completed).length;
  const pending = candidates.filter((i) => !entries[i]!.completed).length;
  const blockedEntry = entries[blocked]!;
  const writerEntry = writer >= 0 ? entries[writer] : undefined;
  const reason =
    `key ${JSON.stringify(key)}: no linearization of its ${entries.length} operations. ` +
    `At best ${linearized} of the ${completed} completed ones can be ordered, leaving the value ` +
    `${value === null ? "absent" : JSON.stringify(value)}` +
    (writerEntry ? ` (last written by ${describeOperation(writerEntry.source)})` : "") +
    `; then ${describeOperation(blockedEntry.source)} must take effect before it returns, ` +
    `but no order of the ${candidates.length} operation(s) that could come next ` +
    `(${pending} of them pending) explains it.`;
  const operations = candidates.map((i) => entries[i]!.source);
  if (writerEntry) operations.unshift(writerEntry.source);
  return { ok: false, key, reason, operations };
}

/** `client: put("k", "v") @[invokedAt, returnedAt] -> result`, for reports and logs. */
export function describeOperation(operation: Operation): string {
  const { op } = operation;
  const args =
    op.type === "put"
      ? `, ${JSON.stringify(op.value)}`
      : op.type === "cas"
        ? `, ${JSON.stringify(op.expected)} -> ${JSON.stringify(op.value)}`
        : "";
  const call = `${operation.client}: ${op.type}(${JSON.stringify(op.key)}${args})`;
  if (operation.returnedAt === undefined) return `${call} @[${operation.invokedAt}, pending]`;
  const result = operation.result;
  const shown =
    result === undefined
      ? "?"
      : result.type === "get"
        ? JSON.stringify(result.value)
        : result.type === "delete"
          ? `existed=${result.existed}`
          : result.type === "cas"
            ? `ok=${result.ok}`
            : "ok";
  return `${call} @[${operation.invokedAt}, ${operation.returnedAt}] -> ${shown}`;
}

function validate(operation: Operation, index: number): void {
  const where = `history[${index}] (client ${operation.client})`;
  const { op, invokedAt, returnedAt, result } = operation;
  if (typeof op?.key !== "string") throw new TypeError(`${where}: operation has no string key`);
  if (!Number.isFinite(invokedAt)) throw new RangeError(`${where}: invokedAt is not finite`);
  if (returnedAt === undefined) return;
  if (!Number.isFinite(returnedAt) || returnedAt < invokedAt) {
    throw new RangeError(`${where}: returnedAt ${returnedAt} is before invokedAt ${invokedAt}`);
  }
  if (result?.type !== op.type) {
    throw new TypeError(
      `${where}: a returned ${op.type} needs a ${op.type} result, got ${result?.type ?? "none"}`,
    );
  }
}
