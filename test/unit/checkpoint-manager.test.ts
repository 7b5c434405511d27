/**
 * The LPC-CM path in one process: ManagerChannel (instance) -> CheckpointRelay (stream
 * manager) -> CheckpointService (checkpoint manager) on a real fs store, every message going
 * through the real frame codec and the real parsers of each link, delivered asynchronously in
 * order as a link would. Plus ManagerChannel's failure modes on its own.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ManagerChannel } from "../../src/platform/checkpoint/manager-channel.js";
import { encodeChain } from "../../src/platform/checkpoint/manager-protocol.js";
import { FsCheckpointStore } from "../../src/platform/checkpoint/store/fs-store.js";
import { CheckpointChainBroken } from "../../src/platform/checkpoint/store/recovery.js";
import { CheckpointService } from "../../src/platform/ckptmgr/service.js";
import { CheckpointRelay } from "../../src/platform/stmgr/checkpoint-relay.js";
import { WireError } from "../../src/platform/wire/errors.js";
import { decodeBody, encodeFrame, FrameDecoder } from "../../src/platform/wire/frames.js";
import {
  CHECKPOINT_PART_BYTES,
  ckptErrorSchema,
  ckptLoadSchema,
  ckptOkSchema,
  ckptPartSchema,
  ckptPruneSchema,
  ckptPutSchema,
  messageParser,
  type CkptReply,
  type CkptRequest,
} from "../../src/platform/wire/messages.js";

const quiet = { info: () => undefined, warn: () => undefined, debug: () => undefined };
const NAMESPACE = "counter.0123456789abcdef";
const own = { topology: NAMESPACE, stage: "counter", replica: 0 } as const;
const group = { topology: NAMESPACE, stage: "counter", replica: "group" } as const;

const requests = messageParser<CkptRequest>(
  [],
  [ckptPutSchema, ckptPartSchema, ckptLoadSchema, ckptPruneSchema],
);
const replies = messageParser<CkptReply>([], [ckptOkSchema, ckptPartSchema, ckptErrorSchema]);

/** One direction of a link: encoded, framed, decoded, parsed, delivered in order next turn. */
function link<M>(parse: (v: unknown) => M, deliver: (m: M) => void, sizes?: number[]) {
  const decoder = new FrameDecoder();
  return (message: unknown): void => {
    const frame = encodeFrame(message);
    sizes?.push(frame.length);
    const bodies = decoder.push(frame);
    for (const body of bodies) {
      const parsed = parse(decodeBody(body));
      setImmediate(() => deliver(parsed));
    }
  };
}

function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

/** Instance, stream manager and checkpoint manager wired together. */
function path(options: { manager?: boolean; stage?: string; index?: number } = {}) {
  const store = new FsCheckpointStore(mkdtempSync(join(tmpdir(), "tara-cm-")));
  const service = new CheckpointService(store, quiet);
  const relay = new CheckpointRelay(NAMESPACE, quiet, true);
  const frameSizes: number[] = [];
  // Replies are delivered a turn later, once `channel` exists.
  const toInstance = link(replies, (m) => channel.onReply(m), frameSizes);
  const client = relay.client({
    task: 1,
    stage: options.stage ?? "counter",
    index: options.index ?? 0,
    send: toInstance,
  });
  const toStmgr = link(requests, (m) => client.handle(m), frameSizes);
  const channel = new ManagerChannel((m) => (toStmgr(m), true));
  const toStmgrFromManager = link(replies, (m) => relay.fromManager(m), frameSizes);
  const session = service.session(toStmgrFromManager);
  const toManager = link(requests, (m) => session.handle(m), frameSizes);
  if (options.manager !== false) relay.managerUp(toManager);
  return { store, service, relay, channel, client, session, frameSizes, toManager };
}

describe("LPC-CM path (instance -> stream manager -> checkpoint manager)", () => {
  it("a multi-MB checkpoint travels in parts under the frame limit and loads back intact", async () => {
    const { channel, store, frameSizes } = path();
    const base = bytes(3 * 1024 * 1024 + 17, 1);
    await channel.put({ owner: own, id: 1, kind: "base" }, base);
    await channel.put({ owner: own, id: 2, kind: "delta" }, bytes(100, 2));
    await channel.put({ owner: own, id: 3, kind: "delta" }, new Uint8Array(0));
    assert.deepEqual(
      (await store.list(own)).map((r) => r.id),
      [1, 2, 3],
    );
    const chain = await channel.loadLatest(own);
    assert.equal(chain.base?.id, 1);
    assert.deepEqual(Buffer.from(chain.base!.data), Buffer.from(base));
    assert.deepEqual(
      chain.deltas.map((d) => [d.id, d.data.length]),
      [
        [2, 100],
        [3, 0],
      ],
    );
    // The base's put and load each took a dozen frames per link, none much above a part.
    assert.ok(frameSizes.length > 4 * (base.length / CHECKPOINT_PART_BYTES));
    assert.ok(Math.max(...frameSizes) < CHECKPOINT_PART_BYTES + 1024);
    assert.equal(channel.pending, 0);
  });

  it("a chain whose every base is corrupt arrives as CheckpointChainBroken; upTo bounds a load", async () => {
    const { channel, store } = path();
    await channel.put({ owner: own, id: 1, kind: "base" }, bytes(100, 1));
    await channel.put({ owner: own, id: 2, kind: "delta" }, bytes(10, 2));
    await channel.put({ owner: own, id: 3, kind: "base" }, bytes(100, 3));
    assert.equal((await channel.loadLatest(own, 2)).base?.id, 1);
    assert.equal((await channel.loadLatest(own)).base?.id, 3);
    for (const id of [1, 3]) {
      const file = store.entryPath({ owner: own, id, kind: "base" });
      const data = readFileSync(file);
      data[data.length - 1]! ^= 0xff;
      writeFileSync(file, data);
    }
    await assert.rejects(channel.loadLatest(own), CheckpointChainBroken);
  });

  it("keeps one owner's requests in arrival order; other owners alongside", async () => {
    const { channel, store } = path();
    const puts = [];
    for (let id = 1; id <= 20; id++) {
      puts.push(
        channel.put(
          { owner: own, id, kind: id % 5 === 0 ? "base" : "delta" },
          bytes(id * 1000, id),
        ),
      );
      puts.push(channel.put({ owner: group, id, kind: "base" }, bytes(10, id)));
    }
    // Queued behind the puts, not overtaking them: the load sees all 20, the prune runs last.
    const loaded = channel.loadLatest(own);
    const pruned = channel.prune(own, 15);
    await Promise.all([...puts, pruned]);
    const chain = await loaded;
    assert.equal(chain.base?.id, 20);
    assert.deepEqual(chain.deltas, []);
    assert.deepEqual(
      (await store.list(own)).map((r) => r.id),
      [15, 16, 17, 18, 19, 20],
    );
    assert.equal((await store.list(group)).length, 20);
  });

  it("an instance may use only its own and its stage's group checkpoints", async () => {
    const { channel, store } = path({ index: 1 });
    await assert.rejects(
      channel.put({ owner: own, id: 1, kind: "base" }, bytes(CHECKPOINT_PART_BYTES * 2, 0)),
      /counter:1 may not use the checkpoints of counter\/0/,
    );
    await assert.rejects(
      channel.loadLatest({ ...own, topology: "another.run" }),
      /may not use the checkpoints/,
    );
    await channel.put({ owner: group, id: 1, kind: "base" }, bytes(10, 0));
    assert.equal((await store.list(own)).length, 0);
    // The refused put's parts were dropped quietly; the link still works.
    assert.equal((await channel.loadLatest(group)).base?.id, 1);
  });

  it("without a manager a request fails at once; losing it fails every request in flight", async () => {
    const { channel, relay, toManager, store } = path({ manager: false });
    await assert.rejects(channel.loadLatest(own), /checkpoint manager is not connected/);

    // Up, but the manager's answers never come: then its link drops mid-upload.
    const sent: CkptRequest[] = [];
    relay.managerUp((m) => sent.push(m));
    const big = channel.put(
      { owner: own, id: 1, kind: "base" },
      bytes(CHECKPOINT_PART_BYTES * 3, 0),
    );
    const load = channel.loadLatest(own);
    await new Promise((resolve) => setImmediate(resolve));
    relay.managerDown("socket closed");
    await assert.rejects(big, /lost the checkpoint manager: socket closed/);
    await assert.rejects(load, /lost the checkpoint manager/);
    assert.ok(sent.length >= 1);

    // Back: requests work again, and no part of the lost upload reached the new link.
    relay.managerUp(toManager);
    await channel.put({ owner: own, id: 2, kind: "base" }, bytes(10, 0));
    assert.deepEqual(
      (await store.list(own)).map((r) => r.id),
      [2],
    );
  });

  it("protocol violations are WireErrors (the link is closed), not crashes", () => {
    const { session, relay, client } = path();
    assert.throws(() => session.handle({ t: "ckpt-part", req: 9, data: bytes(1, 0) }), WireError);
    assert.throws(
      () =>
        session.handle({
          t: "ckpt-put",
          req: 1,
          ref: { owner: own, id: 1, kind: "base" },
          size: 1,
          data: bytes(2, 0),
        }),
      WireError,
    );
    assert.throws(() => client.handle({ t: "ckpt-part", req: 3, data: bytes(1, 0) }), WireError);
    assert.throws(
      () => relay.fromManager({ t: "ckpt-ok", req: 77, size: 0, data: bytes(0, 0) }),
      WireError,
    );
  });
});

describe("ManagerChannel", () => {
  it("rejects when there is no link, on link loss, on an error answer and on timeout", async () => {
    const sent: CkptRequest[] = [];
    let up = false;
    const channel = new ManagerChannel((m) => up && sent.push(m) > 0, { timeoutMs: 50 });
    await assert.rejects(channel.prune(own, 3), /not connected to the stream manager/);
    assert.equal(channel.pending, 0);

    up = true;
    const a = channel.put({ owner: own, id: 1, kind: "delta" }, bytes(5, 0));
    const b = channel.loadLatest(own);
    assert.equal(channel.pending, 2);
    channel.linkDown("socket closed");
    await assert.rejects(a, /lost the stream manager before an answer \(socket closed\)/);
    await assert.rejects(b, /lost the stream manager/);

    const c = channel.put({ owner: own, id: 1, kind: "delta" }, bytes(5, 0));
    channel.onReply({ t: "ckpt-error", req: sent.at(-1)!.req, reason: "disk full" });
    await assert.rejects(
      c,
      /put counter.0123456789abcdef\/counter\/0#1\(delta\) failed: disk full/,
    );

    const d = channel.loadLatest(own);
    const req = sent.at(-1)!.req;
    await assert.rejects(d, /no answer in 50 ms/);
    // A late answer finds nothing to settle.
    channel.onReply({ t: "ckpt-ok", req, size: 0, data: new Uint8Array(0) });
    assert.equal(channel.pending, 0);
  });

  it("reassembles a chunked answer; a part beyond the announced size fails the request", async () => {
    const sent: CkptRequest[] = [];
    const channel = new ManagerChannel((m) => sent.push(m) > 0);
    const chain = { base: { id: 4, data: bytes(CHECKPOINT_PART_BYTES + 10, 3) }, deltas: [] };
    const encoded = encodeChain(chain);
    const load = channel.loadLatest(own);
    const req = sent[0]!.req;
    channel.onReply({
      t: "ckpt-ok",
      req,
      size: encoded.length,
      data: encoded.subarray(0, CHECKPOINT_PART_BYTES),
    });
    channel.onReply({ t: "ckpt-part", req, data: encoded.subarray(CHECKPOINT_PART_BYTES) });
    const loaded = await load;
    assert.equal(loaded.base?.id, 4);
    assert.deepEqual(Buffer.from(loaded.base!.data), Buffer.from(chain.base.data));

    const bad = channel.loadLatest(own);
    const badReq = sent.at(-1)!.req;
    channel.onReply({ t: "ckpt-ok", req: badReq, size: 3, data: bytes(2, 0) });
    channel.onReply({ t: "ckpt-part", req: badReq, data: bytes(2, 0) });
    await assert.rejects(bad, /bad answer to load/);
  });
});
