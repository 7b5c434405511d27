/**
 * The gateway, its ports and the client library in one process, over real loopback sockets:
 * in-process Gateways publish their addresses in a temporary run directory, real source and
 * sink ports find them there, and an "echo" between the ports (a request delivered to the
 * source is answered through the sinks with res = op) stands in for the replicated topology.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { pack } from "msgpackr";
import { createClient } from "node-zookeeper-client";
import { pino } from "pino";
import { KvClient } from "../../src/client/kv-client.js";
import { TaraClient, TaraGatewayError } from "../../src/client/tara-client.js";
import { writeGatewayFile } from "../../src/platform/runtime/gateway-file.js";
import { encodeFrame } from "../../src/platform/wire/frames.js";
import { Gateway, type FrontEnd, type GatewayOptions } from "../../src/tara/gateway/gateway.js";
import { NativeFrontEnd } from "../../src/tara/gateway/native-front-end.js";
import { gatewayPort, GatewayPort } from "../../src/tara/gateway/port.js";
import { MAX_CLIENT_FRAME_BYTES, MAX_OP_BYTES } from "../../src/tara/gateway/protocol.js";
import type { ClientRequest } from "../../src/tara/messages.js";
import { KvStateMachine } from "../../src/tara/kv/kv-state-machine.js";
import { ZkFrontEnd } from "../../src/zk/front-end.js";
import { ZkStateMachine } from "../../src/zk/zk-state-machine.js";
import { captureLog, Inbox, RawClient, type LogLine } from "./helpers/net.js";

const SECRET = Buffer.from("c".repeat(64), "hex");
const HOST = "127.0.0.1";
const TEST_TIMEOUT = { timeout: 30_000 };
const quiet = pino({ level: "silent" });

/** Polls a condition until it holds or the deadline passes (no fixed sleeps). */
async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Rejects if `promise` does not settle in time: a hang fails the test with a name. */
function within<T>(what: string, promise: Promise<T>, timeoutMs = 10_000): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** One test's world: a run directory, gateways, ports and clients, all torn down after it. */
class World {
  readonly runDir = mkdtempSync(join(tmpdir(), "tara-gateway-test-"));
  readonly gateways: Gateway[] = [];
  readonly gatewayLogs: Inbox<LogLine>[] = [];
  private readonly ports: GatewayPort[] = [];
  private readonly clients: (TaraClient | RawClient)[] = [];

  constructor(readonly containers: number) {}

  /** Starts gateway `index` and publishes its addresses as the gateway process does. */
  async gateway(
    index: number,
    options: Partial<GatewayOptions> = {},
    frontEnd: FrontEnd = new NativeFrontEnd(),
  ): Promise<Gateway> {
    const { log, lines } = captureLog();
    const gateway = await Gateway.start(
      {
        index,
        host: HOST,
        clientPort: 0,
        internalPort: 0,
        secret: SECRET,
        log,
        ...options,
      },
      frontEnd,
    );
    writeGatewayFile(this.runDir, index, {
      host: HOST,
      clientPort: gateway.clientPort,
      internalPort: gateway.internalPort,
    });
    this.gateways[index] = gateway;
    this.gatewayLogs[index] = lines;
    return gateway;
  }

  /** A port as the platform creates one for replica `index` of a stage (not yet open). */
  port(role: "source" | "sink", index: number, parallelism: number): GatewayPort {
    const factory = gatewayPort(role);
    const port = factory(index, {
      stage: role === "source" ? "requests" : "replies",
      parallelism,
      host: HOST,
      runDir: this.runDir,
      secret: SECRET,
      container: index % this.containers,
      containers: this.containers,
      log: quiet,
    }) as GatewayPort;
    this.ports.push(port);
    return port;
  }

  client(gateways: number[], options: { timeoutMs?: number; clientId?: number } = {}) {
    const client = new TaraClient({
      gateways: gateways.map((g) => `${HOST}:${this.gateways[g]!.clientPort}`),
      ...options,
    });
    this.clients.push(client);
    return client;
  }

  async raw(gateway: number): Promise<RawClient> {
    const client = await RawClient.connect(this.gateways[gateway]!.clientPort);
    this.clients.push(client);
    return client;
  }

  async close(): Promise<void> {
    for (const client of this.clients) {
      if (client instanceof TaraClient) await client.close();
      else client.destroy();
    }
    for (const port of this.ports) port.close();
    await Promise.all(this.gateways.map((g) => g?.close()));
    rmSync(this.runDir, { recursive: true, force: true });
  }
}

/**
 * Opens `source` and answers each request it delivers through every sink (res = op), unless
 * `answer` says no. Returns the requests the source saw.
 */
function echo(
  source: GatewayPort,
  sinks: GatewayPort[],
  answer: (request: ClientRequest) => boolean = () => true,
): Inbox<ClientRequest> {
  const seen = new Inbox<ClientRequest>();
  for (const sink of sinks) sink.open(() => assert.fail("a sink port delivered input"));
  source.open((input) => {
    const request = input as ClientRequest;
    seen.push(request);
    if (!answer(request)) return;
    for (const sink of sinks)
      sink.send({ c: request.c, r: request.r, g: request.g, res: request.op });
  });
  return seen;
}

/** Waits until the gateway has this many source and sink ports registered. */
function portsUp(gateway: Gateway, sources: number, sinks: number): Promise<void> {
  return until(
    `${sources} sources and ${sinks} sinks at gateway ${gateway.index}`,
    () => gateway.stats.sources === sources && gateway.stats.sinks === sinks,
  );
}

const bytes = (text: string) => Buffer.from(text);
const frameOf = (body: Buffer) => {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
};

let world: World;
afterEach(async () => {
  await world?.close();
});

describe("gateway, ports and client over loopback", () => {
  it("a client gets the echo of each op, in order, with ids from 1", TEST_TIMEOUT, async () => {
    world = new World(1);
    const gateway = await world.gateway(0);
    const source = world.port("source", 0, 1);
    const sink = world.port("sink", 0, 1);
    const seen = echo(source, [sink]);
    await portsUp(gateway, 1, 1);

    const client = world.client([0]);
    await client.connect();
    const ops = Array.from({ length: 30 }, (_, i) => bytes(`op ${i} `.repeat(i)));
    // Submitted together: they queue and go out one after the other.
    const replies = await within("30 replies", Promise.all(ops.map((op) => client.submit(op))));
    assert.deepEqual(
      replies.map((r) => Buffer.from(r).toString()),
      ops.map((op) => op.toString()),
    );
    assert.deepEqual(
      seen.items.map((q) => [q.c, q.r, q.g]),
      ops.map((_, i) => [client.clientId, i + 1, 0]),
    );
    assert.equal(client.stats.retries, 0);
    assert.equal(gateway.stats.pending, 0);
  });

  it(
    "a KvClient runs get, put, delete and cas against a key-value machine",
    TEST_TIMEOUT,
    async () => {
      world = new World(1);
      const gateway = await world.gateway(0);
      const source = world.port("source", 0, 1);
      const sink = world.port("sink", 0, 1);
      const machine = new KvStateMachine();
      sink.open(() => undefined);
      source.open((input) => {
        const { c, r, g, op } = input as ClientRequest;
        sink.send({ c, r, g, res: machine.apply(op).reply });
      });
      await portsUp(gateway, 1, 1);
      const kv = new KvClient(world.client([0]));
      assert.equal(await kv.get("a"), null);
      await kv.put("a", "1");
      assert.equal(await kv.get("a"), "1");
      assert.equal(await kv.cas("a", "0", "2"), false);
      assert.equal(await kv.cas("a", "1", "2"), true);
      assert.equal(await kv.get("a"), "2");
      assert.equal(await kv.delete("a"), true);
      assert.equal(await kv.delete("a"), false);
      await assert.rejects(kv.get("k".repeat(2000)), /key too long/);
    },
  );

  it("duplicate replies from two sinks reach the client once", TEST_TIMEOUT, async () => {
    world = new World(1);
    const gateway = await world.gateway(0);
    const source = world.port("source", 0, 1);
    const sinks = [world.port("sink", 0, 2), world.port("sink", 1, 2)];
    echo(source, sinks);
    await portsUp(gateway, 1, 2);

    const raw = await world.raw(0);
    raw.send({ t: "req", c: 42, r: 1, op: bytes("first") });
    await within("the first reply", raw.frame(0));
    await until("the second sink's copy", () => gateway.stats.dropped === 1);
    // A later request's reply comes after anything the first could still have caused.
    raw.send({ t: "req", c: 42, r: 2, op: bytes("second") });
    await within("the second reply", raw.frame(1));
    await until("the second copy of the second reply", () => gateway.stats.dropped === 2);
    raw.send({ t: "req", c: 42, r: 3, op: bytes("third") });
    await within("the third reply", raw.frame(2));
    assert.deepEqual(
      raw.frames.items.map((f) => {
        const { t, c, r, res } = f as { t: string; c: number; r: number; res: Buffer };
        return [t, c, r, res.toString()];
      }),
      [
        ["rep", 42, 1, "first"],
        ["rep", 42, 2, "second"],
        ["rep", 42, 3, "third"],
      ],
    );
    assert.equal(gateway.stats.replies, 3);
  });

  it(
    "a dropped source link has its pending requests re-sent to another source at once",
    TEST_TIMEOUT,
    async () => {
      world = new World(1);
      const gateway = await world.gateway(0);
      // Gateway 0 prefers source 0 (0 mod 2), which never answers.
      const silent = world.port("source", 0, 2);
      const answering = world.port("source", 1, 2);
      const sink = world.port("sink", 0, 1);
      const held = new Inbox<ClientRequest>();
      silent.open((input) => held.push(input as ClientRequest));
      const seen = echo(answering, [sink]);
      await portsUp(gateway, 2, 1);

      // A timeout far beyond the test's: only the gateway's re-send can answer in time.
      const client = world.client([0], { timeoutMs: 600_000 });
      const reply = client.submit(bytes("survives"));
      await within("source 0 to get the request", held.count(1));
      assert.equal(seen.items.length, 0, "the preferred source got it, not the other");
      silent.close();
      assert.equal(Buffer.from(await within("the reply", reply)).toString(), "survives");
      assert.deepEqual(
        seen.items.map((q) => [q.c, q.r, q.g]),
        [[client.clientId, 1, 0]],
      );
      assert.deepEqual(
        held.items.map((q) => [q.c, q.r, q.g]),
        [[client.clientId, 1, 0]],
      );
      assert.equal(gateway.stats.resent, 1);
      assert.equal(client.stats.retries, 0);
    },
  );

  it(
    "a client re-sending a pending request takes it over; the reply goes to it only",
    TEST_TIMEOUT,
    async () => {
      world = new World(1);
      const gateway = await world.gateway(0);
      const source = world.port("source", 0, 1);
      const sink = world.port("sink", 0, 1);
      const held = new Inbox<ClientRequest>();
      sink.open(() => undefined);
      source.open((input) => held.push(input as ClientRequest));
      await portsUp(gateway, 1, 1);

      const first = await world.raw(0);
      const second = await world.raw(0);
      first.send({ t: "req", c: 9, r: 5, op: bytes("x") });
      await within("the first copy", held.count(1));
      second.send({ t: "req", c: 9, r: 5, op: bytes("x") });
      await within("the retry, forwarded again", held.count(2));
      assert.equal(gateway.stats.pending, 1);
      sink.send({ c: 9, r: 5, g: 0, res: bytes("done") });
      sink.send({ c: 9, r: 5, g: 0, res: bytes("done") });
      const reply = (await within("the reply", second.frame(0))) as { t: string; res: Buffer };
      assert.equal(reply.t, "rep");
      assert.equal(reply.res.toString(), "done");
      await until("both copies handled", () => gateway.stats.replies + gateway.stats.dropped === 2);
      // The first connection still works and got nothing.
      first.send({ t: "req", c: 9, r: 6, op: bytes("y") });
      await within("the next request", held.count(3));
      sink.send({ c: 9, r: 6, g: 0, res: bytes("y") });
      const next = (await within("its reply", first.frame(0))) as { r: number };
      assert.equal(next.r, 6);
      assert.equal(second.frames.items.length, 1);
    },
  );

  it(
    "bad frames get an error frame and a closed connection; other clients are unaffected",
    TEST_TIMEOUT,
    async () => {
      world = new World(1);
      const gateway = await world.gateway(0);
      const source = world.port("source", 0, 1);
      const sink = world.port("sink", 0, 1);
      echo(source, [sink]);
      await portsUp(gateway, 1, 1);
      const good = world.client([0]);
      await good.connect();

      const validReq = encodeFrame({ t: "req", c: 1, r: 1, op: bytes("a valid request") });
      const cases: { name: string; bytes: Buffer; code: string }[] = [
        {
          name: "the never-used byte 0xc1",
          bytes: frameOf(Buffer.from([0xc1])),
          code: "MALFORMED",
        },
        {
          name: "a msgpack map cut short",
          bytes: frameOf(Buffer.from([0x82, 0xa1, 0x74])),
          code: "MALFORMED",
        },
        {
          name: "two values in one frame",
          bytes: frameOf(Buffer.concat([pack({ t: "req" }), pack(1)])),
          code: "MALFORMED",
        },
        { name: "an empty frame", bytes: Buffer.alloc(4), code: "MALFORMED" },
        {
          name: "an oversized frame",
          bytes: Buffer.concat([frameOf(Buffer.alloc(MAX_CLIENT_FRAME_BYTES + 1))]),
          code: "FRAME_TOO_LARGE",
        },
        {
          name: "garbage: an HTTP request",
          bytes: Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
          code: "FRAME_TOO_LARGE",
        },
        {
          name: "garbage: random bytes in a frame",
          bytes: frameOf(Buffer.from([0xff, 0x13, 0x37, 0xc1, 0x00])),
          code: "MALFORMED",
        },
        {
          name: "a request cut short, then garbage",
          bytes: Buffer.concat([
            validReq.subarray(0, 12),
            Buffer.alloc(validReq.length - 12, 0xc1),
          ]),
          code: "MALFORMED",
        },
        { name: "a map without op", bytes: encodeFrame({ t: "req", c: 1, r: 1 }), code: "INVALID" },
        {
          name: "a string client id",
          bytes: encodeFrame({ t: "req", c: "1", r: 1, op: bytes("x") }),
          code: "INVALID",
        },
        {
          name: "client id 0",
          bytes: encodeFrame({ t: "req", c: 0, r: 1, op: bytes("x") }),
          code: "INVALID",
        },
        {
          name: "an unsafe client id",
          bytes: encodeFrame({ t: "req", c: 2 ** 53, r: 1, op: bytes("x") }),
          code: "INVALID",
        },
        {
          name: "a fractional request id",
          bytes: encodeFrame({ t: "req", c: 1, r: 1.5, op: bytes("x") }),
          code: "INVALID",
        },
        {
          name: "op as a string",
          bytes: encodeFrame({ t: "req", c: 1, r: 1, op: "x" }),
          code: "INVALID",
        },
        {
          name: "an op over 1 MiB in a frame under the limit",
          bytes: encodeFrame({ t: "req", c: 1, r: 1, op: Buffer.alloc(MAX_OP_BYTES + 1) }),
          code: "INVALID",
        },
        { name: "an unknown message", bytes: encodeFrame({ t: "hello" }), code: "UNKNOWN_MESSAGE" },
        { name: "not a map", bytes: encodeFrame([1, 2, 3]), code: "UNKNOWN_MESSAGE" },
      ];
      let n = 0;
      for (const bad of cases) {
        const raw = await world.raw(0);
        raw.write(bad.bytes);
        const frame = (await within(bad.name, raw.frame(0))) as Record<string, unknown>;
        assert.equal(frame.t, "error", bad.name);
        assert.equal(frame.code, bad.code, `${bad.name}: ${String(frame.message)}`);
        assert.equal(typeof frame.message, "string");
        assert.equal(frame.c, undefined, `${bad.name}: a connection error names no request`);
        await within(`${bad.name}: the gateway to close the connection`, raw.closed);
        assert.equal(raw.frames.items.length, 1, `${bad.name}: nothing after the error`);
        const reply = await within(
          `a good request after ${bad.name}`,
          good.submit(bytes(`ok ${n}`)),
        );
        assert.equal(Buffer.from(reply).toString(), `ok ${n++}`);
      }
      assert.equal(gateway.stats.rejected, cases.length);
      assert.equal(good.stats.connectionsLost, 0);
      assert.equal(good.stats.retries, 0);
      const logged = world.gatewayLogs[0]!.items.filter((l) => l.event === "client-rejected");
      assert.deepEqual(
        logged.map((l) => l.code),
        cases.map((c) => c.code),
      );
    },
  );

  it(
    "ports wait for a gateway's address file and follow it when the gateway comes back elsewhere",
    TEST_TIMEOUT,
    async () => {
      world = new World(1);
      const source = world.port("source", 0, 1);
      const sink = world.port("sink", 0, 1);
      echo(source, [sink]); // before any gateway published its addresses
      const first = await world.gateway(0);
      await portsUp(first, 1, 1);
      const clientPort = first.clientPort;
      const client = world.client([0], { timeoutMs: 300 });
      await within("a reply", client.submit(bytes("one")));

      await first.close();
      // Back on the same client port, on another internal port: the ports re-read the file.
      const second = await world.gateway(0, { clientPort });
      assert.notEqual(second.internalPort, first.internalPort);
      await portsUp(second, 1, 1);
      const reply = await within("a reply from the new gateway", client.submit(bytes("two")));
      assert.equal(Buffer.from(reply).toString(), "two");
      assert.equal(source.stats.connected, 1);
    },
  );

  it(
    "a client retries a timed-out request with the same id at the next gateway",
    TEST_TIMEOUT,
    async () => {
      world = new World(2);
      const gateways = [await world.gateway(0), await world.gateway(1)];
      const source = world.port("source", 0, 1);
      const sink = world.port("sink", 0, 1);
      // Requests through gateway 0 are lost.
      const seen = echo(source, [sink], (request) => request.g !== 0);
      for (const g of gateways) await portsUp(g, 1, 1);

      const client = world.client([0, 1], { timeoutMs: 200 });
      const reply = await within("the reply", client.submit(bytes("retried")));
      assert.equal(Buffer.from(reply).toString(), "retried");
      assert.deepEqual(
        seen.items.map((q) => [q.c, q.r, q.g]),
        [
          [client.clientId, 1, 0],
          [client.clientId, 1, 1],
        ],
      );
      assert.equal(client.stats.timeouts, 1);
      assert.equal(client.stats.retries, 1);
      assert.equal(client.gateway, 1);
      // The next request goes where the last one was answered.
      await within("the second reply", client.submit(bytes("next")));
      assert.deepEqual(seen.items[2] && [seen.items[2].r, seen.items[2].g], [2, 1]);
      assert.equal(client.stats.timeouts, 1);
    },
  );

  it(
    "a client whose gateway goes away retries at the next one without waiting",
    TEST_TIMEOUT,
    async () => {
      world = new World(2);
      const gateways = [await world.gateway(0), await world.gateway(1)];
      const source = world.port("source", 0, 1);
      const sink = world.port("sink", 0, 1);
      const seen = echo(source, [sink], (request) => request.g !== 0);
      for (const g of gateways) await portsUp(g, 1, 1);

      const client = world.client([0, 1], { timeoutMs: 600_000 });
      const reply = client.submit(bytes("moved"));
      await within("the request at gateway 0", seen.count(1));
      await gateways[0]!.close();
      assert.equal(Buffer.from(await within("the reply", reply)).toString(), "moved");
      assert.deepEqual(
        seen.items.map((q) => [q.r, q.g]),
        [
          [1, 0],
          [1, 1],
        ],
      );
      assert.equal(client.stats.timeouts, 0);
      assert.ok(client.stats.connectionsLost >= 1);
    },
  );

  it(
    "without a source requests wait, up to a limit, and leave when one connects",
    TEST_TIMEOUT,
    async () => {
      world = new World(1);
      const gateway = await world.gateway(0, { maxUnrouted: 2 });
      const sink = world.port("sink", 0, 1);
      sink.open(() => undefined);
      await portsUp(gateway, 0, 1);

      const raw = await world.raw(0);
      for (const r of [1, 2, 3]) raw.send({ t: "req", c: 77, r, op: bytes(`op ${r}`) });
      const refused = (await within("the refusal", raw.frame(0))) as Record<string, unknown>;
      assert.equal(refused.t, "error");
      assert.equal(refused.code, "OVERLOADED");
      assert.deepEqual([refused.c, refused.r], [77, 3]);
      assert.equal(gateway.stats.unrouted, 2);

      const source = world.port("source", 0, 1);
      echo(source, [sink]);
      await within("the two waiting replies", raw.frames.count(3));
      const replies = raw.frames.items.slice(1) as { t: string; r: number; res: Buffer }[];
      assert.deepEqual(
        replies.map((f) => [f.t, f.r, f.res.toString()]),
        [
          ["rep", 1, "op 1"],
          ["rep", 2, "op 2"],
        ],
      );
      assert.equal(gateway.stats.pending, 0);
      assert.equal(raw.socket.destroyed, false, "the connection stays open");
    },
  );

  it("an OVERLOADED request rejects the client's submit with the code", TEST_TIMEOUT, async () => {
    world = new World(1);
    await world.gateway(0, { maxUnrouted: 0 });
    const client = world.client([0]);
    await assert.rejects(
      within("the refusal", client.submit(bytes("nowhere"))),
      (error: unknown) => error instanceof TaraGatewayError && error.code === "OVERLOADED",
    );
  });

  it(
    "a congested source link stops the gateway reading clients until it drains",
    TEST_TIMEOUT,
    async () => {
      world = new World(1);
      const gateway = await world.gateway(0, { highWatermarkBytes: 256 * 1024 });
      const source = world.port("source", 0, 1);
      const sink = world.port("sink", 0, 1);
      const seen = echo(source, [sink]);
      await portsUp(gateway, 1, 1);
      source.pause(); // as a throttled source does: it stops reading the gateway

      const raw = await world.raw(0);
      const total = 80;
      const op = Buffer.alloc(512 * 1024, 7);
      for (let r = 1; r <= total; r++) raw.send({ t: "req", c: 5, r, op });
      await until("the gateway to stop reading its clients", () => gateway.stats.clientsPaused);
      // The gateway's link to the source still drains into the kernel's buffers for a while;
      // once they are full it stays congested. Round trips through the gateway (a sink sends a
      // reply nobody waits for) show when it reads no more: had it kept reading its client,
      // whose data is waiting, it would read all of it.
      let read = -1;
      let unchanged = 0;
      for (let k = 1; unchanged < 3; k++) {
        assert.ok(k < 500, "the gateway kept reading its client");
        sink.send({ c: 999, r: k, g: 0, res: bytes("nobody waits") });
        await until(`round trip ${k}`, () => gateway.stats.dropped === k);
        unchanged = gateway.stats.requests === read ? unchanged + 1 : 0;
        read = gateway.stats.requests;
      }
      assert.ok(read < total, `read ${read} of ${total} requests while the source was paused`);
      assert.ok(gateway.stats.clientsPaused);
      assert.ok(raw.socket.writableLength > 0, "the client still has requests to send");
      assert.equal(seen.items.length, 0, "a paused source port delivers nothing");

      source.resume();
      await within("every reply", raw.frames.count(total), 20_000);
      assert.equal(gateway.stats.clientsPaused, false);
      assert.deepEqual(
        raw.frames.items.map((f) => (f as { r: number }).r).sort((a, b) => a - b),
        Array.from({ length: total }, (_, i) => i + 1),
      );
    },
  );

  it(
    "a ZooKeeper connection resends a command the topology lost, and it is executed once",
    TEST_TIMEOUT,
    async () => {
      world = new World(1);
      const frontEnd = new ZkFrontEnd({ log: quiet });
      const gateway = await world.gateway(0, {}, frontEnd);
      const source = world.port("source", 0, 1);
      const sink = world.port("sink", 0, 1);
      sink.open(() => assert.fail("a sink port delivered input"));
      // The replicated service, as the executors run it: the first copy of every request is
      // lost (as a value proposed by a displaced leader is), a copy of an executed one gets
      // the cached reply.
      const machine = new ZkStateMachine({ tickTime: 1000, containerCheckMs: 60_000 });
      const copies = new Map<string, number>();
      const replies = new Map<string, Uint8Array>();
      let s = 0;
      source.open((input) => {
        const { c, r, g, op } = input as ClientRequest;
        const key = `${c}:${r}`;
        const copy = (copies.get(key) ?? 0) + 1;
        copies.set(key, copy);
        if (copy === 1) return;
        let res = replies.get(key);
        if (!res) {
          res = machine.apply(op, { s: ++s, time: Date.now(), c, g }).reply;
          replies.set(key, res);
        }
        sink.send({ c, r, g, res });
      });
      await portsUp(gateway, 1, 1);

      const client = createClient(`${HOST}:${gateway.clientPort}`, { retries: 0 });
      const connected = new Promise<void>((resolve) => client.once("connected", () => resolve()));
      client.connect();
      try {
        await within("the session", connected);
        const created = await within(
          "the create",
          new Promise<string>((resolve, reject) =>
            client.create("/resent", Buffer.from("once"), (error, path) =>
              error ? reject(error) : resolve(path),
            ),
          ),
        );
        assert.equal(created, "/resent");
      } finally {
        client.close();
      }
      assert.equal(s, 2, "the connect and the create, each executed once");
      assert.deepEqual([...copies.values()].slice(0, 2), [2, 2], "each was sent twice");
      assert.equal(frontEnd.stats.resent, 2);
    },
  );
});
