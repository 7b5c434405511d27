import assert from "node:assert/strict";
import { once } from "node:events";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { after, describe, it } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import type { Logger } from "pino";
import { ClientLink, listen } from "../../src/platform/transport/tcp.js";
import { Connection, type Peer } from "../../src/platform/wire/connection.js";
import {
  DEFAULT_MAX_FRAME_BYTES,
  decodeBody,
  encodeFrame,
  FrameDecoder,
} from "../../src/platform/wire/frames.js";
import { newNonce, serverProof } from "../../src/platform/wire/handshake.js";
import {
  messageParser,
  reportSchema,
  throttleSchema,
  type Report,
  type Throttle,
  type TupleFrame,
} from "../../src/platform/wire/messages.js";
import {
  DELIVER,
  EMIT,
  FORWARD,
  TupleWriter,
  type TupleFrameType,
} from "../../src/platform/wire/tuples.js";
import { captureLog, Inbox, RawClient, rejected, unless, type LogLine } from "./helpers/net.js";
import { int, mulberry32, pick, testSeed, withSeed } from "./helpers/random.js";
import {
  append,
  deliverRecord,
  emitRecord,
  forwardRecord,
  readRecords,
  recordBytes,
  tupleRecord,
  type TupleRecord,
} from "./helpers/tuples.js";

const SECRET = Buffer.from("a".repeat(64), "hex");
const OTHER_SECRET = Buffer.from("b".repeat(64), "hex");
const HOST = "127.0.0.1";
const TEST_TIMEOUT = { timeout: 15_000 };

type ServerIn = TupleFrame<typeof EMIT> | TupleFrame<typeof FORWARD> | Report;
type ClientIn = TupleFrame<typeof DELIVER> | Throttle;
const serverParse = messageParser<ServerIn>([EMIT, FORWARD], [reportSchema]);
const clientParse = messageParser<ClientIn>([DELIVER], [throttleSchema]);

const TYPE_NAME = { [EMIT]: "emit", [FORWARD]: "forward", [DELIVER]: "deliver" } as const;

/** The tuple records a message carries (none for a control message). */
function recordsOf(message: unknown): { type: TupleFrameType; record: TupleRecord }[] {
  if (!Array.isArray(message)) return [];
  const type = message[0] as TupleFrameType;
  return readRecords(message[1] as Buffer).map((record) => ({ type, record }));
}

/** The sequence number a test tuple carries in its first payload bytes. */
function sequenceOf(record: TupleRecord): number {
  return record.payload.readUInt32BE(0);
}

/**
 * One line per arrival, for order checks across frame kinds: "emit:17" for a tuple record of
 * sequence 17, "report:3" for a report whose tuplesIn is 3, "throttle:true".
 */
function eventsOf(message: unknown): string[] {
  if (Array.isArray(message)) {
    return recordsOf(message).map(({ type, record }) => `${TYPE_NAME[type]}:${sequenceOf(record)}`);
  }
  const control = message as { t: string; tuplesIn?: number; on?: boolean };
  return [`${control.t}:${control.t === "report" ? control.tuplesIn : control.on}`];
}

/** What a test sees of one connection: its events, as awaitable lists. */
class Observed<In> {
  readonly ready = new Inbox<Peer>();
  readonly messages = new Inbox<In>();
  /** Every tuple record received, in order. */
  readonly records = new Inbox<TupleRecord>();
  /** Tuple records and control messages, in order (see eventsOf). */
  readonly events = new Inbox<string>();
  readonly closes = new Inbox<string>();
  constructor(readonly connection: Connection<In>) {
    connection.start({
      onReady: (peer) => this.ready.push(peer),
      onMessage: (message) => {
        this.messages.push(message);
        for (const { record } of recordsOf(message)) this.records.push(record);
        for (const event of eventsOf(message)) this.events.push(event);
      },
      onClose: (reason) => this.closes.push(reason),
    });
  }
  get closed(): Promise<string> {
    return this.closes.count(1).then(() => this.closes.items[0]!);
  }
}

interface TestServer {
  port: number;
  lines: Inbox<LogLine>;
  accepted: Inbox<Observed<ServerIn>>;
  stop(): Promise<void>;
}

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function startServer(secret = SECRET): Promise<TestServer> {
  const { log, lines } = captureLog();
  const accepted = new Inbox<Observed<ServerIn>>();
  const { server, port } = await listen<ServerIn>(
    { host: HOST, port: 0 },
    { secret, parse: serverParse, log },
    (connection) => accepted.push(new Observed(connection)),
  );
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const observed of accepted.items) observed.connection.close("test over");
    await closeServer(server);
  };
  cleanups.push(stop);
  return { port, lines, accepted, stop };
}

async function closeServer(server: Server): Promise<void> {
  const closed = once(server, "close");
  server.close();
  await closed;
}

/** A client Connection on a fresh socket (not a ClientLink: tests may queue before the handshake). */
function connectClient(
  port: number,
  secret: Buffer,
  log: Logger,
  options: { me?: Peer; handshakeTimeoutMs?: number } = {},
): Observed<ClientIn> {
  const socket = createConnection(port, HOST);
  const observed = new Observed(
    new Connection<ClientIn>({
      socket,
      secret,
      side: options.me ?? { role: "instance", id: "client:0" },
      parse: clientParse,
      log,
      handshakeTimeoutMs: options.handshakeTimeoutMs,
    }),
  );
  cleanups.push(() => observed.connection.close("test over"));
  return observed;
}

function sequencePayload(i: number, length: number): Buffer {
  const payload = Buffer.alloc(Math.max(4, length), i & 0xff);
  payload.writeUInt32BE(i, 0);
  return payload;
}

/** The task of the test instance: the srcTask of its emits, the dest of its deliveries. */
const INSTANCE_TASK = 4;

/** Test tuple i an instance emits: every fifth one goes to two destinations. */
function emit(i: number, payloadBytes = 8): TupleRecord {
  const dests = i % 5 === 0 ? [i % 1000, 1000 + (i % 7)] : [i % 1000];
  return emitRecord(INSTANCE_TASK, i % 3, dests, sequencePayload(i, payloadBytes));
}

function forward(i: number): TupleRecord {
  return forwardRecord(i % 11, i % 3, [i % 1000], sequencePayload(i, 6));
}

/** Test tuple i a stream manager delivers. */
function deliver(i: number): TupleRecord {
  return deliverRecord(i % 1000, i % 3, INSTANCE_TASK, sequencePayload(i, 4));
}

/** Appends one tuple to the connection's open batch, the hot path. */
function queue<In>(connection: Connection<In>, type: TupleFrameType, record: TupleRecord): void {
  append(connection.tuples(type), record);
  connection.queued();
}

/** One tuple frame holding `records`, as a value for send(). */
function tupleFrame(type: TupleFrameType, ...records: TupleRecord[]): [TupleFrameType, Buffer] {
  return [type, recordBytes(type, records)];
}

/** One encoded tuple frame holding `records`, as bytes for a raw socket or sendFrame(). */
function encodedTuples(type: TupleFrameType, ...records: TupleRecord[]): Buffer {
  const writer = new TupleWriter(type);
  for (const record of records) append(writer, record);
  return writer.finish();
}

const range = (n: number) => [...Array(n).keys()];

describe("authenticated links over loopback TCP", () => {
  it(
    "same secret: both sides become ready and 10,000 tuples each way arrive in order (tuples())",
    TEST_TIMEOUT,
    async () => {
      const N = 10_000;
      const server = await startServer();
      // The server answers with N deliveries as soon as its side is ready.
      const serverReady = server.accepted
        .first(() => true)
        .then(async (observed) => {
          await observed.ready.count(1);
          for (let i = 0; i < N; i++) queue(observed.connection, DELIVER, deliver(i));
          return observed;
        });

      const { log: clientLog, lines: clientLines } = captureLog();
      const clientMessages = new Inbox<ClientIn>();
      const clientRecords = new Inbox<TupleRecord>();
      const clientReady = new Inbox<Connection<ClientIn>>();
      const link = new ClientLink<ClientIn>(
        { host: HOST, port: server.port },
        { role: "instance", id: "a:3" },
        { secret: SECRET, parse: clientParse, log: clientLog },
        {
          onReady: (connection) => clientReady.push(connection),
          onMessage: (message) => {
            clientMessages.push(message);
            for (const { type, record } of recordsOf(message)) {
              assert.equal(type, DELIVER);
              clientRecords.push(record);
            }
          },
        },
      );
      cleanups.push(() => link.close());

      await clientReady.count(1);
      const connection = clientReady.items[0]!;
      assert.equal(link.ready, connection);
      assert.equal(connection.isReady, true);
      for (let i = 0; i < N; i++) queue(connection, EMIT, emit(i));
      assert.ok(connection.queuedBytes > 0, "the open batch counts as queued");

      const observed = await serverReady;
      assert.deepEqual(observed.ready.items, [{ role: "instance", id: "a:3" }]);
      assert.deepEqual(observed.connection.peer, { role: "instance", id: "a:3" });
      await observed.records.count(N);
      await clientRecords.count(N);

      assert.deepEqual(
        observed.records.items,
        range(N).map((i) => emit(i)),
      );
      assert.deepEqual(
        clientRecords.items,
        range(N).map((i) => deliver(i)),
      );
      assert.ok(
        observed.messages.items.length < N / 100 && clientMessages.items.length < N / 100,
        `tuples of one turn share frames: ${observed.messages.items.length} and ` +
          `${clientMessages.items.length} frames for ${N} tuples`,
      );
      assert.equal(observed.records.items.length, N, "nothing extra");
      assert.equal(observed.connection.isClosed, false);
      assert.deepEqual(server.lines.items, [], "the server logged no warning");
      assert.deepEqual(clientLines.items, [], "the client logged no warning");
      link.close();
      await server.stop();
    },
  );

  it(
    "2,000 tuples each way sent as single frames through send() and sendFrame() arrive in order",
    TEST_TIMEOUT,
    async () => {
      const N = 2_000;
      const server = await startServer();
      const { log } = captureLog();
      const client = connectClient(server.port, SECRET, log);
      await client.ready.count(1);
      const observed = await server.accepted.first(() => true);
      await observed.ready.count(1);
      for (let i = 0; i < N; i++) {
        if (i % 2 === 0) client.connection.send(tupleFrame(EMIT, emit(i)));
        else client.connection.sendFrame(encodedTuples(EMIT, emit(i)));
        if (i % 2 === 0) observed.connection.send(tupleFrame(DELIVER, deliver(i)));
        else observed.connection.sendFrame(encodedTuples(DELIVER, deliver(i)));
      }
      await observed.records.count(N);
      await client.records.count(N);
      assert.deepEqual(
        observed.records.items,
        range(N).map((i) => emit(i)),
      );
      assert.deepEqual(
        client.records.items,
        range(N).map((i) => deliver(i)),
      );
      assert.equal(observed.messages.items.length, N, "one frame per send");
      assert.equal(client.messages.items.length, N, "one frame per send");
      assert.deepEqual(server.lines.items, []);
      await server.stop();
    },
  );

  it(
    "order is kept when control messages, send() and tuple types interleave with tuples()",
    TEST_TIMEOUT,
    async () => {
      const server = await startServer();
      const { log } = captureLog();
      const client = connectClient(server.port, SECRET, log);
      await client.ready.count(1);
      const observed = await server.accepted.first(() => true);
      await observed.ready.count(1);

      // A seeded script of steps: client sends (tuples(), send(), controls, two tuple types),
      // server sends (tuples(), controls), and turn boundaries that let the batches flush.
      const kinds = ["report", "emit-frame", "forward", "throttle", "turn", "tuples"] as const;
      let script: (typeof kinds)[number][] = [];
      let seed = 0;
      withSeed("interleaving", (random, s) => {
        seed = s;
        script = range(4_000).map(() => kinds[Math.min(int(random, 0, 9), 5)]!);
      });
      const toServer: string[] = [];
      const toClient: string[] = [];
      for (const [i, kind] of script.entries()) {
        switch (kind) {
          case "report":
            client.connection.send({
              t: "report",
              tuplesIn: i,
              tuplesOut: 0,
              dropped: 0,
              throttled: false,
              status: {},
              stats: { rssBytes: 0, cpuUserUs: 0, cpuSystemUs: 0 },
            });
            toServer.push(`report:${i}`);
            break;
          case "emit-frame":
            client.connection.send(tupleFrame(EMIT, emit(i)));
            toServer.push(`emit:${i}`);
            break;
          case "forward":
            queue(client.connection, FORWARD, forward(i));
            toServer.push(`forward:${i}`);
            break;
          case "throttle":
            observed.connection.send({ t: "throttle", on: i % 2 === 0 });
            toClient.push(`throttle:${i % 2 === 0}`);
            break;
          case "turn":
            await nextTurn();
            break;
          case "tuples":
            queue(client.connection, EMIT, emit(i));
            toServer.push(`emit:${i}`);
            queue(observed.connection, DELIVER, deliver(i));
            toClient.push(`deliver:${i}`);
            break;
        }
      }
      await observed.events.count(toServer.length);
      await client.events.count(toClient.length);
      assert.deepEqual(observed.events.items, toServer, `seed ${seed} (TEST_SEED to replay)`);
      assert.deepEqual(client.events.items, toClient, `seed ${seed} (TEST_SEED to replay)`);
      assert.deepEqual(server.lines.items, []);
      await server.stop();
    },
  );

  it(
    "a turn's tuples beyond the batch size go out in several frames, in order",
    TEST_TIMEOUT,
    async () => {
      const N = 3_000;
      const server = await startServer();
      const { log } = captureLog();
      const client = connectClient(server.port, SECRET, log);
      await client.ready.count(1);
      const observed = await server.accepted.first(() => true);
      for (let i = 0; i < N; i++) queue(client.connection, EMIT, emit(i, 1024));
      assert.ok(client.connection.queuedBytes > N * 1024, "all of it is queued");
      await observed.records.count(N);
      assert.deepEqual(
        observed.records.items,
        range(N).map((i) => emit(i, 1024)),
      );
      const frames = observed.messages.items.length;
      assert.ok(frames >= 2 && frames < N / 100, `${frames} frames for 3 MB of tuples`);
      assert.deepEqual(server.lines.items, []);
      await server.stop();
    },
  );

  it("tuples queued before the handshake are sent after it, in order", TEST_TIMEOUT, async () => {
    const server = await startServer();
    const { log } = captureLog();
    const client = connectClient(server.port, SECRET, log);
    const expected: string[] = [];
    for (let i = 0; i < 100; i++) {
      if (i % 10 === 9) client.connection.send(tupleFrame(EMIT, emit(i)));
      else queue(client.connection, EMIT, emit(i));
      expected.push(`emit:${i}`);
    }
    assert.equal(client.connection.isReady, false);
    const observed = await server.accepted.first(() => true);
    await observed.events.count(100);
    await client.ready.count(1);
    assert.deepEqual(observed.events.items, expected);
    assert.deepEqual(
      observed.records.items,
      range(100).map((i) => emit(i)),
    );
    await server.stop();
  });

  it(
    "tuples appended to a closed connection go nowhere and throw nothing",
    TEST_TIMEOUT,
    async () => {
      const server = await startServer();
      const { log } = captureLog();
      const client = connectClient(server.port, SECRET, log);
      await client.ready.count(1);
      const observed = await server.accepted.first(() => true);
      queue(client.connection, EMIT, emit(0));
      await observed.records.count(1);
      client.connection.close("done");
      queue(client.connection, EMIT, emit(1));
      client.connection.send(tupleFrame(EMIT, emit(2)));
      assert.equal(client.connection.queuedBytes, 0);
      await observed.closed;
      assert.deepEqual(observed.records.items, [emit(0)]);
      await server.stop();
    },
  );

  it(
    "a client with a wrong secret is rejected: AUTH_FAILED, closed, nothing delivered",
    TEST_TIMEOUT,
    async () => {
      const server = await startServer();
      const { log, lines: clientLines } = captureLog();
      const client = connectClient(server.port, OTHER_SECRET, log, {
        me: { role: "stmgr", id: "intruder" },
      });
      // Queued before the handshake: must never reach the server's handler.
      for (let i = 0; i < 50; i++) queue(client.connection, EMIT, emit(i));
      client.connection.send(tupleFrame(EMIT, emit(50)));

      const line = await unless(
        server.lines.first(rejected("AUTH_FAILED")),
        Promise.race([
          client.ready.count(1),
          server.accepted.first(() => true).then((o) => o.ready.count(1)),
        ]),
        "a client with the wrong secret was accepted",
      );
      assert.match(line.reason ?? "", /bad proof from stmgr intruder/);
      const observed = server.accepted.items[0]!;
      assert.match(await observed.closed, /^AUTH_FAILED/);
      assert.equal(await client.closed, "socket closed");

      assert.equal(observed.ready.items.length, 0, "server side never ready");
      assert.equal(observed.connection.peer, undefined);
      assert.equal(observed.messages.items.length, 0, "no message reached the server handler");
      assert.equal(client.ready.items.length, 0, "client side never ready");
      assert.equal(client.connection.isReady, false);
      assert.deepEqual(clientLines.items, [], "the client saw no bad frame, only a close");
      await server.stop();
    },
  );

  it(
    "a wrong hello followed at once by tuples in the same write: none is delivered",
    TEST_TIMEOUT,
    async () => {
      const server = await startServer();
      const raw = await RawClient.connect(server.port);
      const hello = await raw.hello(OTHER_SECRET, "instance", "x:0", false);
      raw.write(
        Buffer.concat([
          hello,
          ...Array.from({ length: 20 }, (_, i) => encodedTuples(EMIT, emit(i))),
          encodeFrame(tupleFrame(EMIT, emit(20))),
        ]),
      );
      const observed = server.accepted.items[0]!;
      await unless(raw.closed, observed.ready.count(1), "a wrong hello was accepted");
      assert.match(await observed.closed, /^AUTH_FAILED/);
      assert.equal(observed.messages.items.length, 0);
      assert.equal(observed.ready.items.length, 0);
      // The server sent its challenge and nothing else: no welcome.
      assert.equal(raw.frames.items.length, 1);
      await server.stop();
    },
  );

  it(
    "a ClientLink with a wrong secret never becomes ready and keeps being refused",
    TEST_TIMEOUT,
    async () => {
      const server = await startServer();
      const { log } = captureLog();
      const downs = new Inbox<string>();
      const readies = new Inbox<Connection<ClientIn>>();
      const link = new ClientLink<ClientIn>(
        { host: HOST, port: server.port },
        { role: "instance", id: "a:0" },
        { secret: OTHER_SECRET, parse: clientParse, log },
        {
          onReady: (c) => readies.push(c),
          onMessage: () => {},
          onDown: (reason) => downs.push(reason),
        },
      );
      cleanups.push(() => link.close());
      // Two refusals: the link retried after the first.
      await unless(
        server.lines.waitFor((lines) => lines.filter(rejected("AUTH_FAILED")).length >= 2),
        readies.count(1),
        "a ClientLink with the wrong secret became ready",
      );
      await downs.count(2);
      link.close();
      assert.equal(readies.items.length, 0);
      assert.equal(link.ready, undefined);
      for (const observed of server.accepted.items) {
        assert.equal(observed.ready.items.length, 0);
        assert.equal(observed.messages.items.length, 0);
      }
      await server.stop();
    },
  );

  it(
    "a server that does not know the secret is rejected by the client (AUTH_FAILED)",
    TEST_TIMEOUT,
    async () => {
      // An impostor: it plays the server side with its own secret and accepts any hello.
      const received: Buffer[] = [];
      const impostorDone = new Inbox<Socket>();
      const impostor = createServer((socket) => {
        const decoder = new FrameDecoder();
        const serverNonce = newNonce();
        socket.on("error", () => {});
        socket.on("data", (chunk: Buffer) => {
          received.push(chunk);
          for (const body of decoder.push(chunk)) {
            const hello = decodeBody(body) as { t: string; nonce: Uint8Array };
            if (hello.t === "hello") {
              socket.write(
                encodeFrame({
                  t: "welcome",
                  proof: serverProof(OTHER_SECRET, hello.nonce, serverNonce),
                }),
              );
            }
          }
        });
        socket.on("close", () => impostorDone.push(socket));
        socket.write(encodeFrame({ t: "challenge", nonce: serverNonce }));
      });
      impostor.listen(0, HOST);
      await once(impostor, "listening");
      cleanups.push(() => closeServer(impostor).catch(() => {}));
      const port = (impostor.address() as { port: number }).port;

      const { log, lines } = captureLog();
      const client = connectClient(port, SECRET, log, { me: { role: "instance", id: "victim:0" } });
      for (let i = 0; i < 50; i++) queue(client.connection, EMIT, emit(i));
      client.connection.send({
        t: "report",
        tuplesIn: 0,
        tuplesOut: 0,
        dropped: 0,
        throttled: false,
        status: {},
        stats: { rssBytes: 0, cpuUserUs: 0, cpuSystemUs: 0 },
      });

      const line = await unless(
        lines.first(rejected("AUTH_FAILED")),
        client.ready.count(1),
        "the client accepted a server that does not know the secret",
      );
      assert.match(line.reason ?? "", /server does not know the cluster secret/);
      assert.match(await client.closed, /^AUTH_FAILED/);
      assert.equal(client.ready.items.length, 0);
      assert.equal(client.connection.isReady, false);

      // Everything the client ever wrote has arrived once the impostor sees the close: only the
      // hello, none of the queued tuples or messages.
      await impostorDone.count(1);
      const frames = new FrameDecoder().push(Buffer.concat(received)).map((b) => decodeBody(b));
      assert.equal(frames.length, 1, `the impostor got ${frames.length} frames`);
      assert.equal((frames[0] as { t: string }).t, "hello");
      await closeServer(impostor);
    },
  );

  it(
    "client and server with different secrets: neither side becomes ready",
    TEST_TIMEOUT,
    async () => {
      const server = await startServer(OTHER_SECRET);
      const { log } = captureLog();
      const client = connectClient(server.port, SECRET, log);
      queue(client.connection, EMIT, emit(1));
      // The server refuses the hello (and logs it) before the client sees its socket close.
      await client.closed;
      assert.ok(server.lines.items.some(rejected("AUTH_FAILED")), "the server refused the hello");
      const observed = server.accepted.items[0]!;
      await observed.closed;
      assert.equal(observed.ready.items.length + client.ready.items.length, 0);
      assert.equal(observed.messages.items.length, 0);
      await server.stop();
    },
  );
});

describe("misbehaving peers are disconnected, others are not", () => {
  /** A well-behaved ClientLink to the server, and a round trip proving it still works. */
  async function goodClient(port: number) {
    const { log, lines } = captureLog();
    const received = new Inbox<TupleRecord>();
    const ready = new Inbox<Connection<ClientIn>>();
    const link = new ClientLink<ClientIn>(
      { host: HOST, port },
      { role: "instance", id: "good:0" },
      { secret: SECRET, parse: clientParse, log },
      {
        onReady: (c) => ready.push(c),
        onMessage: (m) => recordsOf(m).forEach(({ record }) => received.push(record)),
      },
    );
    cleanups.push(() => link.close());
    await ready.count(1);
    let sequence = 0;
    return {
      link,
      lines,
      /** Sends one message each way over the same connection and waits for both. */
      async roundTrip(server: Observed<ServerIn>): Promise<void> {
        const n = sequence++;
        assert.equal(link.ready, ready.items[0], "still the first connection");
        queue(link.ready!, EMIT, emit(n));
        await server.records.first((r) => sequenceOf(r) === n);
        queue(server.connection, DELIVER, deliver(n));
        await received.first((r) => sequenceOf(r) === n);
      },
    };
  }

  const attacks: { name: string; bytes: () => Buffer; code: string }[] = [
    {
      name: "an oversized length header (no body ever sent)",
      bytes: () => Buffer.from([0xff, 0xff, 0xff, 0xff]),
      code: "FRAME_TOO_LARGE",
    },
    {
      name: "a length just over the frame limit",
      bytes: () => {
        const head = Buffer.alloc(4);
        head.writeUInt32BE(DEFAULT_MAX_FRAME_BYTES + 1, 0);
        return head;
      },
      code: "FRAME_TOO_LARGE",
    },
    { name: "a zero-length frame", bytes: () => Buffer.alloc(4), code: "FRAME_EMPTY" },
    {
      name: "a garbage body",
      bytes: () => Buffer.from([0, 0, 0, 3, 0xc4, 0x09, 0x01]),
      code: "FRAME_MALFORMED",
    },
    {
      name: "an unexpected message (a plan on an instance link)",
      bytes: () => encodeFrame({ t: "plan", version: 1, stmgrs: [], instances: [] }),
      code: "FRAME_INVALID",
    },
    {
      name: "an unexpected tuple frame (deliver sent to the server)",
      bytes: () => encodedTuples(DELIVER, deliver(1)),
      code: "FRAME_INVALID",
    },
    {
      name: "a tuple frame without records",
      bytes: () => encodeFrame([EMIT, Buffer.alloc(0)]),
      code: "FRAME_INVALID",
    },
    {
      name: "a tuple frame whose records are not bytes",
      bytes: () => encodeFrame([EMIT, [1, 2, 3]]),
      code: "FRAME_INVALID",
    },
    {
      name: "an old per-tuple emit frame",
      bytes: () => encodeFrame([EMIT, "s", [1], Buffer.from([1])]),
      code: "FRAME_INVALID",
    },
    {
      name: "a tuple frame cut short inside its records (a bin longer than the body)",
      bytes: () => {
        const frame = encodedTuples(EMIT, emit(1));
        const cut = Buffer.from(frame.subarray(0, frame.length - 1));
        cut.writeUInt32BE(cut.length - 4, 0);
        return cut;
      },
      code: "FRAME_MALFORMED",
    },
    {
      name: "a second hello",
      bytes: () =>
        encodeFrame({
          t: "hello",
          role: "instance",
          id: "x",
          nonce: newNonce(),
          proof: newNonce(),
        }),
      code: "FRAME_INVALID",
    },
  ];

  it(
    "after the handshake, each bad frame closes only the connection that sent it",
    TEST_TIMEOUT,
    async () => {
      const server = await startServer();
      const good = await goodClient(server.port);
      const goodServerSide = await server.accepted.first(() => true);
      await goodServerSide.ready.count(1);
      await good.roundTrip(goodServerSide);

      for (const attack of attacks) {
        const raw = await RawClient.connect(server.port);
        await raw.handshake(SECRET, "instance", "bad:0");
        const observed = server.accepted.items.at(-1)!;
        await observed.ready.count(1);
        // A valid message first: the link really was up.
        raw.write(encodedTuples(EMIT, emit(7)));
        await observed.messages.count(1);
        assert.deepEqual(observed.records.items, [emit(7)]);
        raw.write(attack.bytes());
        await raw.closed;
        assert.match(await observed.closed, new RegExp(`^${attack.code}`), attack.name);
        const line = await server.lines.first(
          (l) => rejected(attack.code)(l) && l.peer === "bad:0",
        );
        assert.equal(line.level, 40, "logged as a warning");
        assert.equal(observed.messages.items.length, 1, `${attack.name}: nothing more delivered`);
        // The good connection is untouched and still works both ways.
        assert.equal(goodServerSide.connection.isClosed, false, attack.name);
        await good.roundTrip(goodServerSide);
        server.lines.items.length = 0; // each attack's line is checked on its own
      }
      assert.deepEqual(good.lines.items, [], "the good client logged nothing");
      assert.equal(goodServerSide.closes.items.length, 0);
      good.link.close();
      await server.stop();
    },
  );

  const beforeHandshake: { name: string; bytes: () => Buffer; code: string }[] = [
    {
      name: "text instead of frames",
      bytes: () => Buffer.from("GET / HTTP/1.1\r\n\r\n"),
      code: "FRAME_TOO_LARGE",
    },
    {
      name: "a garbage body",
      bytes: () => Buffer.from([0, 0, 0, 2, 0xc1, 0xc1]),
      code: "FRAME_MALFORMED",
    },
    {
      name: "a tuple instead of a hello",
      bytes: () => encodedTuples(EMIT, emit(1)),
      code: "UNEXPECTED_FRAME",
    },
    {
      name: "a hello missing its proof",
      bytes: () => encodeFrame({ t: "hello", role: "instance", id: "x", nonce: newNonce() }),
      code: "UNEXPECTED_FRAME",
    },
    {
      name: "a hello with an unknown role",
      bytes: () =>
        encodeFrame({ t: "hello", role: "admin", id: "x", nonce: newNonce(), proof: newNonce() }),
      code: "UNEXPECTED_FRAME",
    },
  ];

  it("garbage before the handshake closes the connection", TEST_TIMEOUT, async () => {
    const server = await startServer();
    const good = await goodClient(server.port);
    const goodServerSide = await server.accepted.first(() => true);
    await goodServerSide.ready.count(1);

    for (const attack of beforeHandshake) {
      const raw = await RawClient.connect(server.port);
      await raw.frame(0); // the challenge
      raw.write(attack.bytes());
      await raw.closed;
      const observed = server.accepted.items.at(-1)!;
      assert.match(await observed.closed, new RegExp(`^${attack.code}`), attack.name);
      await server.lines.first(rejected(attack.code));
      assert.equal(observed.ready.items.length, 0, attack.name);
      assert.equal(observed.messages.items.length, 0, attack.name);
      assert.equal(raw.frames.items.length, 1, `${attack.name}: no welcome`);
      await good.roundTrip(goodServerSide);
      server.lines.items.length = 0;
    }
    good.link.close();
    await server.stop();
  });
});

describe("handshake timeout", () => {
  /** A server built by hand so that each Connection gets a short handshake timeout. */
  async function shortTimeoutServer(timeoutMs: number) {
    const { log, lines } = captureLog();
    const accepted = new Inbox<{ observed: Observed<ServerIn>; at: number }>();
    const server = createServer((socket) => {
      const connection = new Connection<ServerIn>({
        socket,
        secret: SECRET,
        side: "server",
        parse: serverParse,
        log,
        handshakeTimeoutMs: timeoutMs,
      });
      accepted.push({ observed: new Observed(connection), at: performance.now() });
    });
    server.listen(0, HOST);
    await once(server, "listening");
    const port = (server.address() as { port: number }).port;
    const stop = async () => {
      for (const { observed } of accepted.items) observed.connection.close("test over");
      if (server.listening) await closeServer(server);
    };
    cleanups.push(stop);
    return { port, lines, accepted, stop };
  }

  it(
    "a client that never completes the handshake is closed after handshakeTimeoutMs",
    TEST_TIMEOUT,
    async () => {
      const server = await shortTimeoutServer(200);

      // A client that completes the handshake in time stays up past the timeout.
      const { log } = captureLog();
      const good = connectClient(server.port, SECRET, log);
      await good.ready.count(1);
      const goodServerSide = (await server.accepted.first(() => true)).observed;

      // A client that connects, reads the challenge, and says nothing.
      const idle = await RawClient.connect(server.port);
      await idle.frame(0);
      await server.accepted.count(2);
      const { observed, at } = server.accepted.items[1]!;
      await idle.closed;
      const elapsed = performance.now() - at;
      assert.match(await observed.closed, /^HANDSHAKE_TIMEOUT/);
      await server.lines.first(rejected("HANDSHAKE_TIMEOUT"));
      assert.ok(elapsed >= 180, `closed after ${elapsed.toFixed(0)} ms, before the timeout`);
      assert.ok(
        elapsed < 3000,
        `closed after ${elapsed.toFixed(0)} ms: the 200 ms option was ignored`,
      );

      // A client that stops halfway (challenge answered by nothing but half a frame).
      const half = await RawClient.connect(server.port);
      const hello = await half.hello(SECRET, "instance", "slow:0", false);
      half.write(hello.subarray(0, hello.length - 5));
      await half.closed;
      await server.lines.waitFor(
        (lines) => lines.filter(rejected("HANDSHAKE_TIMEOUT")).length >= 2,
      );

      // By now the good connection is well past 200 ms: still open, and it works.
      assert.equal(good.connection.isClosed, false);
      assert.equal(goodServerSide.connection.isClosed, false);
      queue(good.connection, EMIT, emit(5));
      await goodServerSide.records.count(1);
      queue(goodServerSide.connection, DELIVER, deliver(6));
      await good.records.count(1);
      assert.deepEqual(good.records.items, [deliver(6)]);
      assert.equal(server.lines.items.filter(rejected("HANDSHAKE_TIMEOUT")).length, 2);
      await server.stop();
    },
  );

  it(
    "a client whose server never sends the challenge gives up after its timeout",
    TEST_TIMEOUT,
    async () => {
      const silent = createServer((socket) => socket.on("error", () => {}));
      const sockets: Socket[] = [];
      silent.on("connection", (socket) => sockets.push(socket));
      silent.listen(0, HOST);
      await once(silent, "listening");
      const port = (silent.address() as { port: number }).port;
      cleanups.push(async () => {
        for (const socket of sockets) socket.destroy();
        if (silent.listening) await closeServer(silent);
      });

      const { log, lines } = captureLog();
      const started = performance.now();
      const client = connectClient(port, SECRET, log, { handshakeTimeoutMs: 200 });
      assert.match(await client.closed, /^HANDSHAKE_TIMEOUT/);
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= 180 && elapsed < 3000, `gave up after ${elapsed.toFixed(0)} ms`);
      await lines.first(rejected("HANDSHAKE_TIMEOUT"));
      assert.equal(client.ready.items.length, 0);
      for (const socket of sockets) socket.destroy();
      await closeServer(silent);
    },
  );
});

/**
 * Watches a socket's writes (wrapping socket.write, which the Connection calls): a tuple frame
 * must not change between its write and the write's completion, and must not be written into
 * memory that a frame still being written occupies. Counts tuple frames written into a buffer
 * an earlier frame used (the Connection reusing a written batch's buffer).
 */
function watchWrites(socket: Socket) {
  const watch = { tupleFrames: 0, reused: 0, inFlightMax: 0, violations: [] as string[] };
  const inFlight = new Set<ArrayBufferLike>();
  const used = new WeakSet<ArrayBufferLike>();
  const write = socket.write.bind(socket) as (
    chunk: Buffer,
    cb?: (error?: Error | null) => void,
  ) => boolean;
  const isTupleFrame = (chunk: Buffer) =>
    chunk.length >= 11 && chunk[4] === 0x92 && [EMIT, FORWARD, DELIVER].includes(chunk[5]!);
  (socket as unknown as { write: typeof write }).write = (chunk, cb) => {
    if (!Buffer.isBuffer(chunk) || !isTupleFrame(chunk)) return write(chunk, cb);
    const n = watch.tupleFrames++;
    if (used.has(chunk.buffer)) watch.reused++;
    used.add(chunk.buffer);
    if (inFlight.has(chunk.buffer)) {
      watch.violations.push(`tuple frame ${n} written into the buffer of a frame in flight`);
    }
    inFlight.add(chunk.buffer);
    watch.inFlightMax = Math.max(watch.inFlightMax, inFlight.size);
    const copy = Buffer.from(chunk);
    return write(chunk, (error) => {
      inFlight.delete(chunk.buffer);
      if (!chunk.equals(copy)) watch.violations.push(`tuple frame ${n} changed while in flight`);
      cb?.(error);
    });
  };
  return watch;
}

describe("tuple batch buffers are reused only once written", () => {
  const report = (tuplesIn: number) => ({
    t: "report",
    tuplesIn,
    tuplesOut: 0,
    dropped: 0,
    throttled: false,
    status: {},
    stats: { rssBytes: 0, cpuUserUs: 0, cpuSystemUs: 0 },
  });

  /** Tuple i of the test: its bytes depend on i throughout, so any overwrite shows. */
  function bigTuple(i: number, length: number): Buffer {
    const payload = Buffer.allocUnsafe(Math.max(4, length));
    for (let j = 0; j < payload.length; j++) payload[j] = (i * 131 + j * 7 + (j >> 8)) & 0xff;
    payload.writeUInt32BE(i, 0);
    return payload;
  }

  it(
    "large batches over many turns, readers paused and resumed: every tuple intact, in order",
    TEST_TIMEOUT,
    async () => {
      const server = await startServer();
      const { log } = captureLog();
      const socket = createConnection(server.port, HOST);
      const watch = watchWrites(socket);
      const client = new Observed(
        new Connection<ClientIn>({
          socket,
          secret: SECRET,
          side: { role: "instance", id: "reuse:0" },
          parse: clientParse,
          log,
        }),
      );
      cleanups.push(() => client.connection.close("test over"));
      await client.ready.count(1);
      const observed = await server.accepted.first(() => true);
      await observed.ready.count(1);

      const seed = testSeed();
      const random = mulberry32(seed);
      const toServer: string[] = [];
      const toClient: string[] = [];
      const sentToServer: TupleRecord[] = [];
      const sentToClient: TupleRecord[] = [];
      let i = 0;
      const TURNS = 120;
      for (let turn = 0; turn < TURNS; turn++) {
        // Readers stall for stretches, so written frames wait in the sockets across turns.
        if (turn % 40 === 0) {
          observed.connection.pauseReading();
          client.connection.pauseReading();
        } else if (turn % 40 === 25) {
          observed.connection.resumeReading();
          client.connection.resumeReading();
        }
        // Batches from a few bytes to over a megabyte, cut by type changes and control frames.
        const size = pick(random, [200, 2_000, 20_000, 100_000, 400_000, 1_500_000]);
        let type: TupleFrameType = EMIT;
        for (let bytes = 0; bytes < size; i++) {
          if (random() < 0.01) type = type === EMIT ? FORWARD : EMIT;
          const length = pick(random, [4, 100, 1_000, 5_000, 30_000]);
          const record = tupleRecord(INSTANCE_TASK, i % 3, [i % 1000], bigTuple(i, length));
          queue(client.connection, type, record);
          sentToServer.push(record);
          toServer.push(`${TYPE_NAME[type]}:${i}`);
          if (random() < 0.002) {
            client.connection.send(report(i));
            toServer.push(`report:${i}`);
          }
          if (random() < 0.5) {
            const back = deliverRecord(i % 1000, i % 3, INSTANCE_TASK, bigTuple(i, length));
            queue(observed.connection, DELIVER, back);
            sentToClient.push(back);
            toClient.push(`deliver:${i}`);
          }
          bytes += length;
        }
        await nextTurn();
      }
      observed.connection.resumeReading();
      client.connection.resumeReading();
      const replay = `seed ${seed} (TEST_SEED to replay)`;
      // A corrupted frame closes a connection: fail at once, saying why.
      const closed = Promise.race([observed.closed, client.closed]);
      await unless(
        Promise.all([
          observed.records.count(sentToServer.length),
          client.records.count(sentToClient.length),
        ]),
        closed,
        `a connection closed (${replay}): ${JSON.stringify(server.lines.items)} ` +
          JSON.stringify(watch.violations.slice(0, 5)),
      );
      assert.deepEqual(watch.violations, [], replay);
      assert.deepEqual(observed.events.items, toServer, replay);
      assert.ok(
        observed.records.items.every((record, k) =>
          record.payload.equals(sentToServer[k]!.payload),
        ),
        `every tuple to the server intact, ${replay}`,
      );
      assert.deepEqual(observed.records.items, sentToServer, replay);
      assert.deepEqual(client.events.items, toClient, replay);
      assert.deepEqual(client.records.items, sentToClient, replay);
      assert.ok(watch.reused > 10, `buffers were reused (${watch.reused} of ${watch.tupleFrames})`);
      assert.ok(
        watch.inFlightMax > 1,
        `frames waited in the socket (${watch.inFlightMax} at once)`,
      );
      assert.deepEqual(server.lines.items, []);
      await server.stop();
    },
  );

  it(
    "a frame given to sendFrame() on two links stays the caller's: neither link reuses it",
    TEST_TIMEOUT,
    async () => {
      const server = await startServer();
      const { log } = captureLog();
      const a = connectClient(server.port, SECRET, log, { me: { role: "instance", id: "a:0" } });
      const b = connectClient(server.port, SECRET, log, { me: { role: "instance", id: "b:0" } });
      await a.ready.count(1);
      await b.ready.count(1);
      await server.accepted.count(2);
      const [toA, toB] = server.accepted.items as [Observed<ServerIn>, Observed<ServerIn>];
      await toA.ready.count(1);
      await toB.ready.count(1);

      // One encoding fanned out to two links, as sendFrame() is documented for.
      const big = deliverRecord(0, 0, INSTANCE_TASK, Buffer.alloc(40_000, 7));
      const shared = encodedTuples(DELIVER, big);
      const original = Buffer.from(shared);
      toA.connection.sendFrame(shared);
      toB.connection.sendFrame(shared);
      await a.records.count(1);
      await b.records.count(1);
      // Then each link's own tuples, in one turn.
      const forA = range(1000).map((i) => deliverRecord(1, 0, INSTANCE_TASK, Buffer.alloc(30, i)));
      const forB = range(1000).map((i) => deliverRecord(2, 1, INSTANCE_TASK, Buffer.alloc(30, ~i)));
      for (let i = 0; i < 1000; i++) {
        queue(toA.connection, DELIVER, forA[i]!);
        queue(toB.connection, DELIVER, forB[i]!);
      }
      await a.records.count(1001);
      await b.records.count(1001);
      assert.deepEqual(a.records.items, [big, ...forA], "link a got its own tuples");
      assert.deepEqual(b.records.items, [big, ...forB], "link b got its own tuples");
      assert.ok(shared.equals(original), "the caller's frame was not written into");
      await server.stop();
    },
  );
});
