/**
 * One simulated run of TARA replicating the ZooKeeper service (src/zk/zk-state-machine.ts):
 * the topology, the network and the faults (faults.ts) of tara-scenario.ts (crashes, restarts and pauses of
 * any replica, the leader included, lost in-flight messages; PDC, LPC or GPC), with simulated
 * ZooKeeper clients that act like the gateway's front end (src/zk/front-end.ts) and a client
 * behind it: each connection is a TARA client of its own; it sends a connect command, then one
 * requests command at a time holding a few ZooKeeper requests (creates of every mode under a few
 * parents, setData and delete with expected versions, reads with watches, multi), retried on
 * timeout through another request source, and writes what the service sends it in its
 * numbering order (out-of-order messages held, duplicates dropped; one missing for 3 s closes
 * the connection, as the front end does). Now and then a client closes its session and opens a
 * new one, or loses its connection (idle, or with a command on its way) and resumes its session
 * on a new one, re-registering its watches with setWatches as ZooKeeper clients do. The reply sinks' links
 * to the gateway are FIFO with delays of their own, but a few messages overtake others (the
 * contract allows any order). After the faults a last client reads the whole tree.
 *
 * Checkers (besides TARA's own: agreement on executed values and accepts, promises kept, the
 * window, checkpoint digests, executors converging on one state):
 * 1. per connection: reply frames in request order with matching xids; a command's reply holds
 *    a reply for each of its requests; two copies of one message number are the same bytes; no
 *    connection is closed but by its own closeSession; a connect is applied once;
 * 2. the history: what the first application of every command the clients sent answered
 *    (what a client got must be that; an unanswered command of a lost connection counts too),
 *    in zxid order, replayed against a model of ZooKeeper (zk-model.ts): every outcome,
 *    created path, Stat, data and children list matches, no command is applied twice, no zxid
 *    is taken twice or left unaccounted for (so every acknowledged create exists until an
 *    acknowledged delete or the close of its session, exactly once, as the final reads show);
 *    sequential suffixes under a parent increase and are never reused;
 * 3. watches: every notification matches a watch its session registered and not yet fired
 *    (at most once per registration); each connection receives exactly the notifications the
 *    model fires for its session while attached to it (a prefix, if its client dropped it), each
 *    after every reply applied before the write that fired it and before every reply applied
 *    after (reply zxid >= the write's);
 * 4. what a client observes never goes back: reply zxids (its connects' lastZxid is never
 *    refused), and per path the Stat's czxid, then mzxid, version, cversion and pzxid;
 * 5. executors: every command's reply and pushes are the same bytes at every executor, live
 *    executors end in one state (the executor's digest covers the state machine snapshot), and
 *    that state is the model's: last zxid, sessions and their connections, every node's Stat
 *    and data, the watches;
 * liveness: after healing every request completes, and no message a connection waits for stays
 *    missing longer than the front end would wait before closing it.
 *
 * Under GPC a rollback takes every replica back to a consistent cut: the checkers forget every
 * application after it (the highest sequence number an executor had executed in the checkpoint
 * rolled back to) and ignore the stages of older runs still installed until the rollback
 * reaches them; what clients were sent was released only once covered by a global checkpoint.
 */
import { createHash } from "node:crypto";
import { unpack } from "msgpackr";
import type { ReplicaId } from "../platform/api/stage.js";
import { parseTaraConfig, type TaraConfig } from "../tara/config.js";
import type { ClientReply, ClientRequest } from "../tara/messages.js";
import type { Applied, Execution, StateMachine } from "../tara/state-machine.js";
import { Executor } from "../tara/stages/executor.js";
import { stages, taraTopology } from "../tara/topology.js";
import {
  encodeCommand,
  encodeRequests,
  type ConnectReply,
  type ConnectionMessage,
  type ZkCommand,
} from "../zk/commands.js";
import { DataTree } from "../zk/data-tree.js";
import { JuteReader } from "../zk/jute.js";
import {
  decodeMultiResults,
  decodeReplyHeader,
  decodeRequest,
  decodeWatcherEvent,
  readStat,
} from "../zk/protocol.js";
import { Err, EventType, OPEN_ACL, OpCode, type MultiWriteOp, type Stat } from "../zk/types.js";
import { Watches } from "../zk/watches.js";
import { ZkStateMachine } from "../zk/zk-state-machine.js";
import { injectFaults, replicaName } from "./faults.js";
import { Random } from "./random.js";
import { Simulator } from "./simulator.js";
import { rollbackCut, TaraInvariants } from "./tara-invariants.js";
import { scenarioCheckpointing, simConfig, type ScenarioMechanism } from "./tara-scenario.js";
import {
  checkHistory,
  describeRequest,
  statDiff,
  type FinalState,
  type ObservedReply,
  type Transaction,
  type ValidRequest,
} from "./zk-model.js";

export interface ZkScenarioOptions {
  seed: number;
  f: number;
  clients?: number;
  /** Virtual milliseconds of load with faults. */
  safetyMs?: number;
  /** After healing, every request must complete within this many virtual milliseconds. */
  livenessMs?: number;
  faults?: boolean;
  /** TARA parameters over tara-scenario's simConfig. */
  config?: Record<string, number>;
  mechanism?: ScenarioMechanism;
}

export interface ZkScenarioReport {
  seed: number;
  f: number;
  mechanism: ScenarioMechanism;
  ok: boolean;
  violations: string[];
  /** Sessions created (the final reader's included), and re-attached to a new connection. */
  sessions: number;
  reconnects: number;
  /** Requests commands acknowledged, and the ZooKeeper requests they held. */
  commands: number;
  requests: number;
  /** Watch notifications delivered. */
  notifications: number;
  /** Messages that arrived before an earlier one of their connection, and were held. */
  held: number;
  /** Connections their client dropped (or the front end closed: gapCloses of them). */
  abandoned: number;
  gapCloses: number;
  /** Transactions (zxids) the model replayed. */
  transactions: number;
  faults: string[];
  lastExecuted: number;
  views: number;
  events: number;
  /** LPC: committer restarts whose restored state was checked. */
  restored: number;
  /** GPC: rollbacks of the whole topology. */
  rollbacks: number;
  replay: string;
  replicas?: Record<string, Record<string, unknown>>;
}

const CLIENT_RETRY_MS = 400;
const THINK_MS = 20;
/** Requested session timeout: the longest ZooKeeper grants (20 ticks), longer than any run. */
const SESSION_TIMEOUT_MS = 40_000;
const ZK_CONFIG = { tickTime: 2000, containerCheckMs: 60_000 };
/** How long the front end waits for a missing message before it closes the connection. */
const GAP_TIMEOUT_MS = 3000;
/** Virtual time for what is in flight to land before the final checks. */
const SETTLE_MS = 500;
const PARENTS = ["/p0", "/p1", "/p2"];
const NAMES = ["n0", "n1", "n2"];

export function zkReplayCommand(seed: number, f: number, mechanism: ScenarioMechanism): string {
  return `npx tara sim --service zk --seed ${seed} --f ${f} --mechanism ${mechanism}`;
}

// ---- Frames ----

type Frame =
  | { kind: "reply"; xid: number; zxid: number; err: number; body: JuteReader }
  | { kind: "event"; type: number; path: string };

function framesOf(bytes: Uint8Array): Frame[] {
  const frames: Frame[] = [];
  const all = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 0; at < all.length;) {
    const length = all.readInt32BE(at);
    const reader = new JuteReader(all.subarray(at + 4, at + 4 + length));
    at += 4 + length;
    const header = decodeReplyHeader(reader);
    if (header.xid === -1) {
      const event = decodeWatcherEvent(reader);
      frames.push({ kind: "event", type: event.type, path: event.path });
    } else {
      frames.push({ kind: "reply", ...header, zxid: Number(header.zxid), body: reader });
    }
  }
  return frames;
}

/** The xids of a requests command's frames. */
function xidsOf(frames: Uint8Array): string {
  const all = Buffer.from(frames.buffer, frames.byteOffset, frames.byteLength);
  const xids: number[] = [];
  for (let at = 0; at + 4 <= all.length;) {
    const length = all.readInt32BE(at);
    xids.push(decodeRequest(all.subarray(at + 4, at + 4 + length)).xid);
    at += 4 + length;
  }
  return xids.join(",");
}

/** The reply's body as the request's type defines it. */
function observe(
  session: number,
  c: number,
  req: ValidRequest,
  frame: Frame & { kind: "reply" },
): ObservedReply {
  const { xid, zxid, err } = frame;
  const reply: ObservedReply = { session, c, xid, req, zxid, err };
  const r = frame.body;
  if (frame.err !== 0) return reply;
  switch (req.type) {
    case OpCode.create:
      return { ...reply, path: r.ustring()! };
    case OpCode.create2:
      return { ...reply, path: r.ustring()!, stat: readStat(r) };
    case OpCode.setData:
    case OpCode.exists:
      return { ...reply, stat: readStat(r) };
    case OpCode.getData:
      return { ...reply, data: r.buffer(), stat: readStat(r) };
    case OpCode.getChildren:
      return { ...reply, children: r.vector((v) => v.ustring()!) ?? [] };
    case OpCode.getChildren2:
      return { ...reply, children: r.vector((v) => v.ustring()!) ?? [], stat: readStat(r) };
    case OpCode.multi:
      return { ...reply, results: decodeMultiResults(r) };
    default:
      return reply;
  }
}

/** What a connection wrote to its client, in order: for the ordering checks. */
type Item = { k: "reply"; xid: number; zxid: number } | { k: "event"; type: number; path: string };

const EVENT_NAMES: Record<number, string> = {
  [EventType.nodeCreated]: "NodeCreated",
  [EventType.nodeDeleted]: "NodeDeleted",
  [EventType.nodeDataChanged]: "NodeDataChanged",
  [EventType.nodeChildrenChanged]: "NodeChildrenChanged",
};
const eventName = (type: number, path: string) => `${EVENT_NAMES[type] ?? type} ${path}`;

// ---- Clients ----

interface Connection {
  /** Its TARA client id. */
  readonly c: number;
  readonly client: ZkClient;
  r: number;
  attempts: number;
  pending?: { r: number; command: ZkCommand; op: Uint8Array; reqs: ValidRequest[] };
  state: "connecting" | "open" | "closed";
  session: number;
  /** The next message number to write, the ones held until then, and those written. */
  expected: number;
  readonly held: Map<number, ConnectionMessage>;
  readonly written: Map<number, Buffer>;
  gapSince?: number;
  /** Requests sent whose reply frame was not written yet, in order. */
  readonly outstanding: ValidRequest[];
  readonly items: Item[];
  /** Commands sent on this connection. */
  commands: number;
  /** It re-attached its client's session (and re-registers its watches first). */
  readonly resumed: boolean;
  /**
   * Closed without its session closing: its client lost it (the TCP connection broke, or the
   * front end gave up on a missing message) and went on with its session on another.
   */
  abandoned: boolean;
  /** Every command it sent, and the reply it got, if it did. */
  readonly submitted: Submitted[];
}

interface Submitted {
  readonly command: ZkCommand;
  readonly op: Uint8Array;
  readonly reqs: ValidRequest[];
  /** Where a connect that resumes the session goes among the session's requests (by xid). */
  readonly order: number;
  reply?: Uint8Array;
}

interface ZkClient {
  readonly index: number;
  readonly random: Random;
  conn?: Connection;
  /** Its session, over connections, and the session's next xid. */
  session: number;
  passwd: Uint8Array;
  nextXid: number;
  /** Watches of the session registered and not fired yet (the client's own bookkeeping). */
  readonly watches: Map<string, "data" | "exist">;
  readonly childWatches: Set<string>;
  /** The highest zxid any reply showed it (check 4, and its connects' lastZxid). */
  lastZxid: number;
  readonly stats: Map<string, Stat>;
  readonly versions: Map<string, number>;
  /** Sequential nodes it created. */
  readonly created: string[];
  /** Requests commands it sent. */
  commands: number;
  /** It sent a closeSession. */
  closing: boolean;
  /** The final reader: reads the tree once, then stops; and the nodes it found. */
  readonly reader: boolean;
  readonly listed: Set<string>;
  done: boolean;
}

/** A replica of the service that records what every command produced (checker 5). */
class ObservedMachine implements StateMachine {
  private s = -1;
  private i = 0;
  constructor(
    private readonly executor: number,
    private readonly inner: ZkStateMachine,
    private readonly onApply: (
      executor: number,
      key: string,
      command: Uint8Array,
      applied: Applied,
    ) => void,
  ) {}

  apply(command: Uint8Array, execution: Execution): Applied {
    if (execution.s !== this.s) {
      this.s = execution.s;
      this.i = 0;
    }
    const applied = this.inner.apply(command, execution);
    this.onApply(this.executor, `${execution.s}:${this.i++}:${execution.c}`, command, applied);
    return applied;
  }

  snapshot(): Uint8Array {
    return this.inner.snapshot();
  }

  restore(snapshot: Uint8Array): void {
    this.inner.restore(snapshot);
    this.s = -1;
  }
}

const commandKey = (c: number, command: Uint8Array) =>
  `${c}:${createHash("sha1").update(command).digest("hex")}`;

const sameBytes = (a: Uint8Array, b: Uint8Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

/** Two executors' outputs for one command: the same reply, pushes and forgotten clients. */
function sameOutput(a: Applied, b: Applied): boolean {
  const pa = a.pushes ?? [];
  const pb = b.pushes ?? [];
  return (
    sameBytes(a.reply, b.reply) &&
    pa.length === pb.length &&
    pa.every((p, i) => p.c === pb[i]!.c && p.g === pb[i]!.g && sameBytes(p.res, pb[i]!.res))
  );
}

export function runZkScenario(options: ZkScenarioOptions): ZkScenarioReport {
  const { seed, f } = options;
  const mechanism = options.mechanism ?? "pdc";
  const lpc = mechanism === "lpc";
  const clientCount = options.clients ?? 5;
  const safetyMs = options.safetyMs ?? 3000;
  const livenessMs = options.livenessMs ?? 15_000;
  const withFaults = options.faults ?? true;
  const config: TaraConfig = parseTaraConfig({ f, ...simConfig, ...options.config });
  const violations: string[] = [];
  const violation = (text: string) => {
    if (violations.length < 25) violations.push(`t=${sim.now.toFixed(1)} ${text}`);
  };

  // TARA's invariants (tara-invariants.ts).
  const invariants: TaraInvariants = new TaraInvariants(config, mechanism, violation, {
    incarnation: (id) => sim.incarnation(id),
    run: (id) => sim.gpcRun(id),
  });

  // Checker 5: each command's output, the first time any executor applied it; and where each
  // connection message was first produced (to explain a gap). A command applied at two places
  // in the order is one applied twice: a retry or a stale copy must get the cached reply.
  const outputs = new Map<string, Applied>();
  /** Every command's first application: where, and its reply (the history is made of these). */
  const appliedAt = new Map<string, { where: string; reply: Uint8Array; s: number }>();
  const sessionsCreated = new Map<number, { text: string; s: number }>();
  const produced = new Map<string, { where: string; at: number; s: number }>();
  let appliedTwice = 0;
  let effectiveTwice = 0;
  let harmlessTwice = 0;
  const noteProduced = (c: number, res: Uint8Array, s: number) => {
    const message = unpack(res) as ConnectionMessage;
    if (message.t === "frames" && message.o !== undefined) {
      const where = `s=${s} t=${sim.now.toFixed(1)}`;
      produced.set(`${c}:${message.o}`, { where, at: sim.now, s });
    }
  };
  // GPC: a rollback forgets every application after its cut (the highest sequence number an
  // executor had executed in the checkpoint rolled back to), and a stage of an older run, still
  // installed until the rollback reaches it, is not observed.
  let run = 0;
  const onRollback = (attempt: number, checkpoint: number) => {
    run = attempt;
    const cut = rollbackCut(sim, checkpoint);
    invariants.onRollback(attempt, cut);
    for (const key of outputs.keys()) if (Number(key.split(":")[0]) > cut) outputs.delete(key);
    for (const map of [appliedAt, produced, sessionsCreated] as Map<unknown, { s: number }>[]) {
      for (const [key, value] of map) if (value.s > cut) map.delete(key);
    }
  };
  const onApply = (executor: number, key: string, command: Uint8Array, applied: Applied) => {
    if (sim.gpcRun({ stage: stages.executor, index: executor }) < run) return;
    const known = outputs.get(key);
    if (known !== undefined) {
      if (!sameOutput(known, applied)) violation(`command ${key} (s:i:c) had different outputs`);
      return;
    }
    outputs.set(key, applied);
    const [s, , c] = key.split(":").map(Number) as [number, number, number];
    const where = `s=${s} t=${sim.now.toFixed(1)}`;
    const reply = unpack(applied.reply) as ConnectReply | ConnectionMessage;
    if (reply.t === "connected")
      sessionsCreated.set(reply.z, { text: `connection ${c}'s connect, ${where}`, s });
    else noteProduced(c, applied.reply, s);
    for (const push of applied.pushes ?? []) noteProduced(push.c, push.res, s);
    const key2 = commandKey(c, command);
    const first = appliedAt.get(key2)?.where;
    if (first === undefined) {
      appliedAt.set(key2, { where, reply: applied.reply, s });
      return;
    }
    appliedTwice++;
    // Shown: the first few that changed something (a session, a write), and of the others
    // (answered that their session is gone or moved) the first two.
    const replies = reply.t === "frames" ? framesOf(reply.f) : [];
    const writes = replies.filter((f) => f.kind === "reply" && f.err !== Err.sessionExpired);
    const effective = reply.t === "connected" || writes.length > 0;
    if (effective ? effectiveTwice++ >= 4 : harmlessTwice++ >= 2) return;
    const zk = unpack(command) as ZkCommand;
    const what =
      zk.t === "connect"
        ? `the connect (session ${zk.session})`
        : `the command of xids ${xidsOf(zk.frames)} (session ${zk.session})`;
    const forgotten = connections.get(c)?.state === "closed" ? " (closed)" : "";
    const result =
      reply.t === "connected"
        ? `session ${reply.session} ${zk.t === "connect" && zk.session !== 0 ? "moved back to it" : "created, nobody's"}`
        : reply.t === "frames"
          ? `${writes.length} replies${reply.close ? `, close: ${reply.close}` : ""}`
          : reply.t;
    violation(
      `${what} of connection ${c}${forgotten} applied again at ${where} (first at ${first}): ${result}`,
    );
  };

  const topology = taraTopology({
    name: "tara-zk-sim",
    config,
    createMachine: (executor) =>
      new ObservedMachine(executor, new ZkStateMachine(ZK_CONFIG), onApply),
    observer: invariants.onExecuted,
  });

  const sim = new Simulator({
    seed,
    topology,
    checkpoints: scenarioCheckpointing(mechanism, seed),
    onRestored: invariants.onRestored,
    onRolledBack: invariants.onRolledBack,
    onRollback,
    network: {
      minDelayMs: 0.1,
      maxDelayMs: 3,
      lossOnCrash: 0.5,
      stallChance: withFaults ? 0.003 : 0,
      stallMs: 200,
    },
    onExternalOutput: (from, output) => toGateway(from, output as ClientReply),
    onEmit: invariants.onEmit,
  });
  const random = sim.random.fork();

  // The reply sinks' links to the gateway: FIFO each, with delays of their own and stalls, and,
  // as the contract allows (pushes and replies in any order: they carry their own numbering),
  // now and then a message that overtakes or falls behind the others.
  const linkRandom = random.fork();
  const linkLast = new Map<number, number>();
  function toGateway(from: ReplicaId, reply: ClientReply): void {
    let delay = linkRandom.between(0.1, 3);
    if (withFaults && linkRandom.chance(0.003)) delay += 200;
    if (linkRandom.chance(0.05)) {
      sim.schedule(delay + linkRandom.between(0, 20), () => onOutput(reply));
      return;
    }
    const at = Math.max(sim.now + delay, linkLast.get(from.index) ?? 0);
    linkLast.set(from.index, at);
    sim.schedule(at - sim.now, () => onOutput(reply));
  }

  // ---- Clients ----
  const sources = sim.replicasOf(stages.requestSource);
  const connections = new Map<number, Connection>();
  const all: Connection[] = [];
  let nextC = 1;
  /** When faults stopped (a message that goes missing later is a liveness violation). */
  let healedAt = Infinity;
  let abandoned = 0;
  let gapCloses = 0;
  let held = 0;
  let issuing = true;
  let commands = 0;
  let requests = 0;
  let notifications = 0;

  const clients: ZkClient[] = Array.from({ length: clientCount }, (_, i) => newClient(i, false));

  function newClient(index: number, reader: boolean): ZkClient {
    return {
      index,
      random: random.fork(),
      session: 0,
      passwd: Buffer.alloc(16),
      nextXid: 1,
      watches: new Map(),
      childWatches: new Set(),
      lastZxid: 0,
      stats: new Map(),
      versions: new Map(),
      created: [],
      commands: 0,
      closing: false,
      reader,
      listed: new Set(),
      done: false,
    };
  }

  /** A new connection, with a new session or (`resume`) the client's session. */
  function connect(client: ZkClient, resume = false): void {
    if (!resume) {
      client.session = 0;
      client.nextXid = 1;
      client.closing = false;
      client.watches.clear();
      client.childWatches.clear();
    }
    const conn: Connection = {
      c: nextC++,
      client,
      r: 0,
      attempts: 0,
      state: "connecting",
      session: 0,
      expected: 1,
      held: new Map(),
      written: new Map(),
      outstanding: [],
      items: [],
      commands: 0,
      resumed: resume,
      abandoned: false,
      submitted: [],
    };
    client.conn = conn;
    connections.set(conn.c, conn);
    all.push(conn);
    submit(conn, {
      t: "connect",
      session: resume ? client.session : 0,
      passwd: resume ? client.passwd : Buffer.alloc(16),
      timeout: SESSION_TIMEOUT_MS,
      lastZxid: client.lastZxid,
      newPasswd: Buffer.alloc(16, conn.c & 0xff),
      ip: `10.0.0.${client.index + 1}`,
    });
  }

  function submit(conn: Connection, command: ZkCommand, reqs: ValidRequest[] = []): void {
    conn.r++;
    conn.attempts = 0;
    conn.pending = { r: conn.r, command, op: encodeCommand(command), reqs };
    conn.submitted.push({ command, op: conn.pending.op, reqs, order: conn.client.nextXid - 0.5 });
    send(conn);
  }

  function send(conn: Connection): void {
    const pending = conn.pending!;
    const source = sources[(conn.c + conn.attempts) % sources.length]!;
    const request: ClientRequest = { c: conn.c, r: pending.r, g: 0, op: pending.op };
    sim.deliverExternal(source, request);
    const attempt = conn.attempts;
    sim.schedule(CLIENT_RETRY_MS, () => {
      if (conn.pending?.r === pending.r && conn.attempts === attempt) {
        conn.attempts++;
        send(conn);
      }
    });
  }

  /** The next command, once every reply of the previous one was written (a synchronous client). */
  function maybeIssue(conn: Connection): void {
    const client = conn.client;
    if (conn.state !== "open" || conn.pending || conn.outstanding.length > 0) return;
    if (client.conn !== conn || client.done) return;
    if (client.reader) {
      // It walks the tree: the parents' children, then every node's data.
      if (conn.commands === 0) return request(conn, listTree(conn));
      if (conn.commands === 1) return request(conn, readNodes(conn));
      client.done = true;
      return;
    }
    if (conn.resumed && conn.commands === 0) {
      // A ZooKeeper client's first request after a reconnect: its watches, with its last zxid.
      const watched = (kind: "data" | "exist") =>
        [...client.watches].filter(([, k]) => k === kind).map(([path]) => path);
      return request(conn, [
        {
          xid: client.nextXid++,
          type: OpCode.setWatches,
          relativeZxid: client.lastZxid,
          dataWatches: watched("data"),
          existWatches: watched("exist"),
          childWatches: [...client.childWatches],
          persistentWatches: [],
          persistentRecursiveWatches: [],
        },
      ]);
    }
    if (!issuing) return;
    sim.schedule(client.random.between(0, THINK_MS), () => {
      if (!issuing || conn.state !== "open" || conn.pending || conn.outstanding.length > 0) return;
      if (conn.commands >= 2 && client.random.chance(0.02)) return abandon(conn);
      request(conn, chooseRequests(conn));
    });
  }

  function request(conn: Connection, reqs: ValidRequest[]): void {
    const client = conn.client;
    conn.outstanding.push(...reqs);
    conn.commands++;
    const command: ZkCommand = {
      t: "requests",
      session: conn.session,
      frames: encodeRequests(reqs),
    };
    if (client.reader) return submit(conn, command, reqs);
    client.commands++;
    if (reqs.some((req) => req.type === OpCode.closeSession)) client.closing = true;
    submit(conn, command, reqs);
    if (issuing && client.random.chance(0.01)) {
      // The connection breaks while the command is on its way: its outcome is unknown.
      const r = conn.r;
      sim.schedule(client.random.between(0, 15), () => {
        if (conn.state === "open" && conn.pending?.r === r) abandon(conn);
      });
    }
  }

  /**
   * The connection is lost (or closed by the front end): what it waited for is withdrawn, and
   * the client resumes its session on a new connection.
   */
  function abandon(conn: Connection): void {
    conn.state = "closed";
    conn.abandoned = true;
    conn.pending = undefined;
    conn.outstanding.length = 0;
    conn.held.clear();
    conn.gapSince = undefined;
    abandoned++;
    if (conn.client.conn === conn) connect(conn.client, true);
  }

  function listTree(conn: Connection): ValidRequest[] {
    const read = (path: string, type: 8 | 12): ValidRequest => {
      return { xid: conn.client.nextXid++, type, path, watch: false };
    };
    return [read("/", OpCode.getChildren), ...PARENTS.map((p) => read(p, OpCode.getChildren2))];
  }

  function readNodes(conn: Connection): ValidRequest[] {
    const paths = new Set<string>(PARENTS.flatMap((p) => NAMES.map((n) => `${p}/${n}`)));
    for (const client of clients) for (const path of client.created) paths.add(path);
    for (const path of conn.client.listed) paths.add(path);
    return [...paths].sort().map((path) => {
      return { xid: conn.client.nextXid++, type: OpCode.getData, path, watch: false };
    });
  }

  function chooseRequests(conn: Connection): ValidRequest[] {
    const { client } = conn;
    const rnd = client.random;
    if (client.commands === 0) {
      // The client's very first command: the parents (NodeExists for all but the first).
      return PARENTS.map((path) => create(conn, path, 0, OpCode.create));
    }
    if (conn.commands >= 2 && rnd.chance(0.02)) {
      return [{ xid: conn.client.nextXid++, type: OpCode.closeSession }];
    }
    return Array.from({ length: rnd.int(1, 4) }, () => chooseRequest(conn));
  }

  function create(conn: Connection, path: string, flags: number, type: 1 | 15): ValidRequest {
    const xid = conn.client.nextXid++;
    const data = Buffer.from(`${conn.session}:${xid}`);
    return { xid, type, path, data, acl: OPEN_ACL, flags, ttl: -1 };
  }

  function chooseRequest(conn: Connection): ValidRequest {
    const rnd = conn.client.random;
    const parent = rnd.pick(PARENTS);
    const named = `${parent}/${rnd.pick(NAMES)}`;
    const created = conn.client.created;
    const some = created.length > 0 && rnd.chance(0.3) ? rnd.pick(created) : named;
    const version = (path: string) => {
      const known = conn.client.versions.get(path);
      const roll = rnd.next();
      if (known === undefined || roll < 0.2) return -1;
      return roll < 0.3 ? known + 1 : known;
    };
    const roll = rnd.next();
    const watch = rnd.chance(0.5);
    if (roll < 0.3) {
      const xid = conn.client.nextXid++;
      const kind = rnd.int(0, 3);
      if (kind === 0) return { xid, type: OpCode.exists, path: some, watch };
      if (kind === 1) return { xid, type: OpCode.getData, path: some, watch };
      const type = kind === 2 ? OpCode.getChildren : OpCode.getChildren2;
      return { xid, type, path: rnd.chance(0.8) ? parent : some, watch };
    }
    const type = rnd.pick([OpCode.create, OpCode.create2] as const);
    if (roll < 0.45) return create(conn, named, rnd.pick([0, 1]), type);
    if (roll < 0.58) return create(conn, `${parent}/s-`, rnd.pick([2, 3]), type);
    if (roll < 0.73) {
      const xid = conn.client.nextXid++;
      const data = Buffer.from(`${conn.session}:${xid}`);
      return { xid, type: OpCode.setData, path: some, data, version: version(some) };
    }
    if (roll < 0.86) {
      return {
        xid: conn.client.nextXid++,
        type: OpCode.delete,
        path: some,
        version: version(some),
      };
    }
    const xid = conn.client.nextXid++;
    const data = (i: number) => Buffer.from(`${conn.session}:${xid}:${i}`);
    const other = `${rnd.pick(PARENTS)}/${rnd.pick(NAMES)}`;
    const variant = rnd.int(0, 2);
    const ops: MultiWriteOp[] =
      variant === 0
        ? [
            { type: OpCode.check, path: named, version: version(named) },
            { type: OpCode.setData, path: named, data: data(1), version: -1 },
            {
              type: OpCode.create,
              path: `${parent}/s-`,
              data: data(2),
              acl: OPEN_ACL,
              flags: 2,
              ttl: -1,
            },
          ]
        : variant === 1
          ? [
              { type: OpCode.create, path: named, data: data(0), acl: OPEN_ACL, flags: 0, ttl: -1 },
              { type: OpCode.delete, path: other, version: -1 },
            ]
          : [
              { type: OpCode.setData, path: other, data: data(0), version: version(other) },
              { type: OpCode.delete, path: some, version: -1 },
            ];
    return { xid, type: OpCode.multi, ops };
  }

  function onOutput(reply: ClientReply): void {
    const conn = connections.get(reply.c);
    if (!conn) return violation(`a message for client ${reply.c}, which never connected`);
    if (reply.r === 0) return receive(conn, unpack(reply.res) as ConnectionMessage);
    if (reply.r > conn.r) return violation(`reply to request ${reply.r} never sent by ${reply.c}`);
    const pending = conn.pending;
    if (!pending || pending.r !== reply.r) {
      // A late copy: still one of the connection's numbered messages, to compare.
      if (reply.r > 1) receive(conn, unpack(reply.res) as ConnectionMessage);
      return;
    }
    conn.pending = undefined;
    conn.submitted[conn.submitted.length - 1]!.reply = reply.res;
    if (pending.command.t === "connect")
      return onConnected(conn, unpack(reply.res) as ConnectReply);
    const message = unpack(reply.res) as ConnectionMessage;
    commands++;
    acknowledge(conn, pending.reqs, message);
    receive(conn, message);
    maybeIssue(conn);
  }

  function onConnected(conn: Connection, reply: ConnectReply): void {
    const client = conn.client;
    if (reply.t !== "connected") {
      conn.state = "closed";
      if (conn.resumed && reply.reason === "expired" && client.closing) {
        // It had closed its session, and lost the connection before the reply.
        if (issuing) connect(client);
        return;
      }
      return violation(`client ${client.index} refused a session (${reply.reason})`);
    }
    if (conn.resumed && reply.session !== client.session) {
      violation(`client ${client.index} resumed session ${client.session}, got ${reply.session}`);
    }
    client.session = reply.session;
    client.passwd = reply.passwd;
    conn.session = reply.session;
    conn.state = "open";
    // ZooKeeper clients take their last zxid from replies only: it is what setWatches sends.
    if (reply.z < client.lastZxid) {
      violation(`client ${client.index}: connected at zxid ${reply.z} after ${client.lastZxid}`);
    }
    drain(conn);
    maybeIssue(conn);
  }

  /** A command's reply: one reply frame per request, in order. */
  function acknowledge(conn: Connection, reqs: ValidRequest[], message: ConnectionMessage): void {
    let frames: Frame[];
    try {
      frames = framesOf(message.f);
    } catch (error) {
      return violation(`connection ${conn.c}: undecodable reply: ${(error as Error).message}`);
    }
    const replies = frames.filter((frame) => frame.kind === "reply");
    if (message.o === undefined || message.close !== undefined) {
      if (reqs[0]?.type !== OpCode.closeSession || message.close !== "session closed") {
        violation(`connection ${conn.c} closed by the service: ${message.close ?? "no number"}`);
      }
    }
    const xids = replies.map((frame) => frame.xid).join(",");
    if (xids !== reqs.map((req) => req.xid).join(",")) {
      return violation(
        `connection ${conn.c}: reply to xids ${reqs.map((q) => q.xid).join(",")} holds [${xids}]`,
      );
    }
    requests += replies.length;
  }

  /** A numbered message of the connection, reply or push (front-end.ts's receive). */
  function receive(conn: Connection, message: ConnectionMessage): void {
    if (message.t !== "frames") return violation(`connection ${conn.c}: not a frames message`);
    if (message.o === undefined) {
      if (conn.state !== "closed") write(conn, message);
      return;
    }
    const bytes = Buffer.concat([Buffer.from(message.f), Buffer.from(message.close ?? "")]);
    const before = conn.written.get(message.o) ?? heldCopy(conn, message.o);
    if (before !== undefined) {
      if (!before.equals(bytes)) violation(`connection ${conn.c}: two messages ${message.o}`);
      return;
    }
    if (message.o < conn.expected) {
      return violation(`connection ${conn.c}: message ${message.o} after ${conn.expected - 1}`);
    }
    if (conn.state === "closed") return;
    conn.held.set(message.o, message);
    if (message.o > conn.expected) held++;
    if (conn.state === "open") drain(conn);
  }

  function heldCopy(conn: Connection, o: number): Buffer | undefined {
    const message = conn.held.get(o);
    if (!message) return undefined;
    return Buffer.concat([Buffer.from(message.f), Buffer.from(message.close ?? "")]);
  }

  function drain(conn: Connection): void {
    for (;;) {
      const next = conn.held.get(conn.expected);
      if (!next) break;
      conn.held.delete(conn.expected);
      conn.written.set(
        conn.expected,
        Buffer.concat([Buffer.from(next.f), Buffer.from(next.close ?? "")]),
      );
      conn.expected++;
      write(conn, next);
      if (conn.state === "closed") break;
    }
    if (conn.held.size === 0) conn.gapSince = undefined;
    else if (conn.gapSince === undefined) {
      const since = (conn.gapSince = sim.now);
      const o = conn.expected;
      sim.schedule(GAP_TIMEOUT_MS, () => {
        if (conn.state === "open" && conn.gapSince === since && conn.expected === o) gapClose(conn);
      });
    }
    maybeIssue(conn);
  }

  /** The frames as the client reads them: checkers 1, 3 (client side) and 4. */
  function write(conn: Connection, message: ConnectionMessage): void {
    let frames: Frame[] = [];
    try {
      frames = framesOf(message.f);
    } catch (error) {
      violation(`connection ${conn.c}: undecodable frames: ${(error as Error).message}`);
    }
    const deleted = new Set<string>();
    for (const frame of frames) {
      if (frame.kind === "event") {
        notifications++;
        conn.items.push({ k: "event", type: frame.type, path: frame.path });
        const { watches, childWatches } = conn.client;
        const kind = watches.get(frame.path);
        let had: boolean;
        if (frame.type === EventType.nodeChildrenChanged) had = childWatches.delete(frame.path);
        else if (frame.type === EventType.nodeDeleted) {
          // It fires the data and the child watch (as ZooKeeper's clients take it); the reply
          // to a setWatches sends one per watch list, as ZooKeeper does.
          const data = kind === "data" && watches.delete(frame.path);
          had = [data, childWatches.delete(frame.path), deleted.has(frame.path)].some(Boolean);
          deleted.add(frame.path);
        } else {
          had = kind === (frame.type === EventType.nodeCreated ? "exist" : "data");
          if (had) watches.delete(frame.path);
        }
        if (!had) {
          violation(
            `session ${conn.session}: ${eventName(frame.type, frame.path)} without a watch ` +
              `registered and not yet fired`,
          );
        }
        continue;
      }
      const req = conn.outstanding.shift();
      if (!req || req.xid !== frame.xid) {
        violation(
          `session ${conn.session}: reply xid ${frame.xid} written, expected ${req?.xid ?? "none"}`,
        );
        continue;
      }
      conn.items.push({ k: "reply", xid: frame.xid, zxid: frame.zxid });
      noteZxid(conn, frame.zxid, `xid ${frame.xid}`);
      let observed: ObservedReply;
      try {
        observed = observe(conn.session, conn.c, req, frame);
      } catch {
        continue; // reported when acknowledged
      }
      clientSide(conn, req, observed);
    }
    if (message.close !== undefined) {
      conn.state = "closed";
      conn.held.clear();
      conn.gapSince = undefined;
      if (message.close !== "session closed") {
        violation(`connection ${conn.c} closed: ${message.close}`);
      }
      if (conn.outstanding.length > 0 && message.close === "session closed") {
        violation(`session ${conn.session} closed with requests unanswered`);
      }
      if (conn.client.conn === conn && issuing && !conn.client.reader) {
        sim.schedule(conn.client.random.between(0, THINK_MS), () => {
          if (issuing) connect(conn.client);
        });
      }
    }
  }

  /**
   * The front end closes a connection whose next message stays missing: a message lost under
   * faults (a push has no retry), a liveness violation if it went missing after healing, a
   * hole in the numbering if the service never produced it.
   */
  function gapClose(conn: Connection): void {
    const o = conn.expected;
    const made = produced.get(`${conn.c}:${o}`);
    const what = `connection ${conn.c} (session ${conn.session}) waited ${GAP_TIMEOUT_MS}ms for message ${o}`;
    if (made === undefined) violation(`${what}, which the service never sent (later ones it did)`);
    else if (made.at > healedAt) {
      violation(`liveness: ${what}, sent at ${made.where} after healing; the front end closes it`);
    }
    gapCloses++;
    abandon(conn);
  }

  function noteZxid(conn: Connection, zxid: number, what: string): void {
    const client = conn.client;
    if (zxid < client.lastZxid) {
      violation(`client ${client.index}: ${what} at zxid ${zxid} after seeing ${client.lastZxid}`);
    }
    client.lastZxid = Math.max(client.lastZxid, zxid);
  }

  /** Registers watches, remembers versions and created nodes, checks Stats never go back. */
  function clientSide(conn: Connection, req: ValidRequest, reply: ObservedReply): void {
    const client = conn.client;
    const ok = reply.err === 0;
    if (req.type === OpCode.exists && req.watch)
      client.watches.set(req.path, ok ? "data" : "exist");
    if (req.type === OpCode.getData && req.watch && ok) client.watches.set(req.path, "data");
    if ((req.type === OpCode.getChildren || req.type === OpCode.getChildren2) && req.watch && ok) {
      client.childWatches.add(req.path);
    }
    if (!ok) return;
    if (client.reader && "path" in req) {
      for (const child of reply.children ?? []) {
        client.listed.add(`${req.path === "/" ? "" : req.path}/${child}`);
      }
    }
    const statPath =
      req.type === OpCode.create2 ? reply.path : "path" in req ? req.path : undefined;
    if (reply.stat && statPath !== undefined) noteStat(client, statPath, reply.stat);
    if (req.type === OpCode.multi) {
      req.ops.forEach((op, i) => {
        const result = reply.results?.[i];
        if (result?.type === 5) noteStat(client, op.path, result.stat);
        if (result?.type === 1 && op.type === OpCode.create && op.flags === 2) {
          client.created.push(result.path);
        }
      });
    }
    if ((req.type === OpCode.create || req.type === OpCode.create2) && reply.path) {
      if (req.flags === 2 || req.flags === 3) client.created.push(reply.path);
      client.versions.set(reply.path, 0);
    }
  }

  function noteStat(client: ZkClient, path: string, stat: Stat): void {
    client.versions.set(path, stat.version);
    const last = client.stats.get(path);
    client.stats.set(path, stat);
    if (!last) return;
    const back =
      stat.czxid < last.czxid
        ? "czxid"
        : stat.czxid > last.czxid
          ? undefined
          : (["mzxid", "version", "cversion", "pzxid"] as const).find((k) => stat[k] < last[k]);
    if (back) {
      violation(
        `client ${client.index}: ${path}'s ${back} went back from ${last[back]} to ${stat[back]}`,
      );
    }
  }

  // ---- Faults ----
  const faults = injectFaults(sim, random, {
    f,
    store: mechanism !== "pdc",
    lpc,
    viewChangeMs: config.viewChangeMs,
    active: () => issuing,
  });

  // ---- The run ----
  sim.start();
  for (const client of clients) sim.schedule(random.between(0, THINK_MS), () => connect(client));
  if (withFaults) faults.start();
  sim.runUntil(safetyMs);

  issuing = false;
  faults.heal();
  healedAt = sim.now;
  const busy = (conn: Connection) =>
    conn.state !== "closed" && (conn.pending !== undefined || conn.held.size > 0);
  const stuck = () =>
    all
      .filter(busy)
      .map((conn) =>
        conn.pending
          ? `connection ${conn.c} request ${conn.pending.r} unanswered`
          : `connection ${conn.c} waits for message ${conn.expected} (sent ` +
            `${produced.get(`${conn.c}:${conn.expected}`)?.where ?? "never"}, ` +
            `${conn.held.size} held since t=${conn.gapSince?.toFixed(1)})`,
      );
  let live = sim.runWhile(() => all.some(busy), healedAt + livenessMs);
  if (!live) violation(`liveness ${livenessMs}ms after healing: ${stuck().join("; ")}`);

  // The final reader: a new session reads every parent's children and every node's data.
  const reader = newClient(clientCount, true);
  if (live) {
    connect(reader);
    live = sim.runWhile(() => !reader.done || all.some(busy), sim.now + livenessMs);
    if (!live) violation(`liveness: the final reads did not complete: ${stuck().join("; ")}`);
  }

  // Every executor converges on the same state.
  const converged = invariants.checkConvergence(sim, livenessMs);
  invariants.checkDeltas(sim);

  if (appliedTwice > 0) violation(`${appliedTwice} commands in all applied twice`);

  // What is still on its way (a push can be a connection's last message) arrives.
  sim.runUntil(sim.now + SETTLE_MS);

  // The history: what the first application of each command the clients sent answered (for
  // a command acknowledged, what its client got must be that).
  const history: Transaction[] = [];
  for (const conn of all) {
    for (const sent of conn.submitted) {
      const first = appliedAt.get(commandKey(conn.c, sent.op));
      if (!first) {
        if (sent.reply) violation(`connection ${conn.c}: a reply to a command never applied`);
        continue;
      }
      if (sent.reply && Buffer.compare(Buffer.from(sent.reply), Buffer.from(first.reply)) !== 0) {
        violation(
          `connection ${conn.c}: the reply to its command ${sent.command.t} (xids ` +
            `${sent.reqs.map((q) => q.xid).join(",")}) is not what its first application ` +
            `(${first.where}) answered`,
        );
      }
      const reply = unpack(first.reply) as ConnectReply | ConnectionMessage;
      if (sent.command.t === "connect") {
        if (reply.t !== "connected") continue;
        const { session, z: zxid } = reply;
        if (sent.command.session === 0) history.push({ t: "session", zxid, session, c: conn.c });
        else history.push({ t: "move", zxid, session, c: conn.c, order: sent.order });
        continue;
      }
      if (reply.t !== "frames") continue;
      const frames = framesOf(reply.f).filter((frame) => frame.kind === "reply");
      frames.forEach((frame, i) => {
        const req = sent.reqs[i];
        if (req?.xid !== frame.xid) return;
        try {
          const observed = observe(sent.command.session, conn.c, req, frame);
          history.push({ t: "reply", reply: observed });
        } catch (error) {
          violation(`connection ${conn.c}: undecodable reply to ${describeRequest(req)}: ${error}`);
        }
      });
    }
  }

  // Sequential suffixes: per parent, increasing with the zxid, never reused.
  const suffixes = new Map<string, { suffix: number; zxid: number }[]>();
  const noteSequential = (path: string, zxid: number) => {
    const parent = path.slice(0, path.lastIndexOf("/"));
    let list = suffixes.get(parent);
    if (!list) suffixes.set(parent, (list = []));
    list.push({ suffix: Number(path.slice(-10)), zxid });
  };
  for (const tx of history) {
    if (tx.t !== "reply" || tx.reply.err !== 0) continue;
    const { req, path, results, zxid } = tx.reply;
    if ((req.type === OpCode.create || req.type === OpCode.create2) && req.flags & 2 && path) {
      noteSequential(path, zxid);
    }
    if (req.type === OpCode.multi) {
      req.ops.forEach((op, j) => {
        const result = results?.[j];
        if (op.type === OpCode.create && op.flags & 2 && result?.type === 1) {
          noteSequential(result.path, zxid);
        }
      });
    }
  }
  for (const [parent, list] of suffixes) {
    list.sort((a, b) => a.zxid - b.zxid);
    for (let i = 1; i < list.length; i++) {
      if (list[i]!.suffix <= list[i - 1]!.suffix) {
        violation(
          `${parent}: sequential suffix ${list[i]!.suffix} at zxid ${list[i]!.zxid} after ` +
            `${list[i - 1]!.suffix} at zxid ${list[i - 1]!.zxid}`,
        );
      }
    }
  }

  // The history against the model; each connection's notifications against the model's.
  const model = checkHistory(history, {
    complete: true,
    explain: (zxid) => sessionsCreated.get(zxid)?.text,
  });
  for (const text of model.violations) violation(`model: ${text}`);
  for (const conn of all) {
    if (!busy(conn)) checkNotifications(conn, model.notifications.get(conn.c) ?? []);
  }
  // (Executors that did not converge were reported: their state says nothing more.)
  if (converged) {
    checkFinalState(sim.stage<Executor>(sim.replicasOf(stages.executor)[0]!), model.final);
  }

  /**
   * The service's state at a live executor (all end in one) against the model's: the last zxid,
   * the sessions and their connections, every node's Stat and data, and the watches.
   */
  function checkFinalState(executor: Executor, want: FinalState): void {
    // The executor's checkpoint body (tara/stages/executor.ts) holds the service's snapshot,
    // laid out by zk-state-machine.ts: [zxid, next container check, tree, watches, sessions],
    // a session being [id, passwd, timeout, deadline, g, c, ...].
    const body = unpack(executor.snapshot().body) as { state: Uint8Array };
    const [zxid, , treeBytes, watchBytes, rows] = unpack(body.state) as [
      number,
      number,
      Uint8Array,
      Uint8Array,
      [number, Uint8Array, number, number, number, number][],
    ];
    const final = (text: string) => violation(`final state: ${text}`);
    if (zxid !== want.zxid) final(`last zxid ${zxid}, model ${want.zxid}`);
    const sessions = new Map(rows.map((row) => [row[0], row[5]]));
    const extra = [...sessions.keys()].filter((id) => !want.sessions.has(id));
    const gone = [...want.sessions.keys()].filter((id) => !sessions.has(id));
    if (extra.length > 0) final(`sessions ${extra.join(", ")} open, nobody's in the model`);
    if (gone.length > 0) final(`sessions ${gone.join(", ")} missing`);
    for (const [id, c] of want.sessions) {
      const at = sessions.get(id);
      if (at !== undefined && at !== c) final(`session ${id} on connection ${at}, model ${c}`);
    }
    const tree = DataTree.restore(treeBytes);
    const paths: string[] = [];
    const walk = (path: string) => {
      paths.push(path);
      const listed = tree.getChildren(path, []);
      if (listed.err !== 0) return;
      for (const child of listed.children) walk(`${path === "/" ? "" : path}/${child}`);
    };
    walk("/");
    const unexpected = paths.filter((path) => !want.nodes.has(path));
    const missing = [...want.nodes.keys()].filter((path) => tree.stat(path) === undefined);
    if (unexpected.length > 0) final(`nodes ${unexpected.slice(0, 10).join(", ")} unexpected`);
    if (missing.length > 0) final(`nodes ${missing.slice(0, 10).join(", ")} missing`);
    for (const [path, node] of want.nodes) {
      const got = tree.getData(path, []);
      if (got.err !== 0) continue;
      const diff = statDiff(got.stat, node.stat);
      if (diff) final(`${path}: ${diff}`);
      const same =
        got.data === null || node.data === null
          ? got.data === node.data
          : Buffer.compare(Buffer.from(got.data), Buffer.from(node.data)) === 0;
      if (!same) final(`${path}: other data`);
    }
    const watches = Watches.restore(watchBytes);
    let count = 0;
    for (const [table, type] of [
      [want.dataWatches, 2],
      [want.childWatches, 1],
    ] as const) {
      for (const [path, watchers] of table) {
        for (const session of watchers) {
          count++;
          if (!watches.has(session, path, type)) {
            final(`session ${session}'s ${type === 2 ? "data" : "child"} watch on ${path} lost`);
          }
        }
      }
    }
    if (watches.count !== count) final(`${watches.count} watches, model ${count}`);
  }

  function checkNotifications(
    conn: Connection,
    expected: readonly { type: number; path: string; zxid: number }[],
  ): void {
    const got = conn.items.filter((item) => item.k === "event");
    const show = (list: readonly { type: number; path: string }[]) =>
      list.map((e) => eventName(e.type, e.path)).join(", ");
    // An abandoned connection's last messages may never have reached its client.
    const due = conn.abandoned ? expected.slice(0, got.length) : expected;
    if (show(got) !== show(due)) {
      let i = 0;
      while (i < got.length && i < due.length && show([got[i]!]) === show([due[i]!])) i++;
      const first = due[i] ? `model's fired at zxid ${due[i]!.zxid}` : "an extra one";
      violation(
        `connection ${conn.c} (session ${conn.session}): notifications [${show(got)}], ` +
          `model [${show(due)}] (first difference at #${i}: ${first})`,
      );
      return;
    }
    // Ordered by zxid: a notification's is the write that fired it; replies after a
    // notification were applied after that write, those before it, before.
    let key = 0;
    let last = "the start";
    let e = 0;
    for (const item of conn.items) {
      const what =
        item.k === "reply"
          ? `the reply to xid ${item.xid} (zxid ${item.zxid})`
          : `${eventName(item.type, item.path)} (fired at zxid ${expected[e]!.zxid})`;
      const at = item.k === "reply" ? 2 * item.zxid + 1 : 2 * expected[e++]!.zxid;
      if (at < key) {
        violation(`connection ${conn.c} (session ${conn.session}): ${what} written after ${last}`);
      }
      key = Math.max(key, at);
      last = what;
    }
  }

  return {
    seed,
    f,
    mechanism,
    ok: violations.length === 0,
    violations,
    sessions: history.filter((tx) => tx.t === "session").length,
    reconnects: history.filter((tx) => tx.t === "move").length,
    commands,
    requests,
    notifications,
    held,
    transactions: model.transactions,
    abandoned,
    gapCloses,
    faults: faults.log,
    lastExecuted: invariants.maxExecuted,
    views: invariants.views,
    events: sim.stats.events,
    restored: invariants.restored,
    rollbacks: sim.gpc?.coordinator.stats.restores ?? 0,
    replay: zkReplayCommand(seed, f, mechanism),
    ...(violations.length > 0
      ? {
          replicas: Object.fromEntries(
            sim.replicas().map((id) => {
              const checkpoints = sim.checkpointStatus(id);
              const status = { alive: sim.isAlive(id), ...sim.status(id) };
              return [replicaName(id), checkpoints ? { ...status, checkpoints } : status];
            }),
          ),
        }
      : {}),
  };
}
