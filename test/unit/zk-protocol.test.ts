import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { JuteError, JuteReader, JuteWriter } from "../../src/zk/jute.js";
import {
  decodeConnectRequest,
  decodeConnectResponse,
  decodeMultiResults,
  decodeReplyHeader,
  decodeRequest,
  decodeWatcherEvent,
  encodeConnectRequest,
  encodeConnectResponse,
  encodeRequest,
  notificationFrame,
  readAcls,
  readStat,
  replyFrame,
  writeAcls,
  writeMultiResults,
  writeStat,
} from "../../src/zk/protocol.js";
import { Err, OPEN_ACL, type MultiResult, type Stat, type ZkRequest } from "../../src/zk/types.js";
import { int, pick, randomBytes, withSeed } from "./helpers/random.js";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");
/** A frame's body, after checking its length prefix. */
function body(frame: Buffer): Buffer {
  assert.equal(frame.readInt32BE(0), frame.length - 4);
  return frame.subarray(4);
}
const isJuteError = (error: unknown) => error instanceof JuteError;
/** A field of a decoded request, whatever its type. */
const field = (req: ZkRequest, key: string): unknown => (req as Record<string, unknown>)[key];

const stat: Stat = {
  czxid: 0x100000002,
  mzxid: 0x100000003,
  ctime: 1700000000000,
  mtime: 1700000000123,
  version: 5,
  cversion: -1,
  aversion: 0,
  ephemeralOwner: 0x7700000000001,
  dataLength: 3,
  numChildren: 0,
  pzxid: 0x100000002,
};
const statHex =
  "0000000100000002 0000000100000003 0000018bcfe56800 0000018bcfe5687b 00000005 ffffffff" +
  "00000000 0007700000000001 00000003 00000000 0000000100000002";

const acl = [
  ...OPEN_ACL,
  { perms: 3, id: { scheme: "digest", id: "bob:k3Y/5QyWbC7dNqqCOzd8sVKtxA0=" } },
];

/** One request of every kind the decoder accepts. */
const requests: ZkRequest[] = [
  { xid: 1, type: 1, path: "/a", data: Buffer.from("x"), acl, flags: 0, ttl: -1 },
  { xid: 2, type: 15, path: "/b", data: null, acl: OPEN_ACL, flags: 3, ttl: -1 },
  { xid: 3, type: 19, path: "/c", data: Buffer.alloc(0), acl: OPEN_ACL, flags: 4, ttl: -1 },
  { xid: 4, type: 21, path: "/d", data: Buffer.from([0, 255]), acl, flags: 5, ttl: 2 ** 40 },
  { xid: 5, type: 2, path: "/a", version: -1 },
  { xid: 6, type: 3, path: "/a", watch: true },
  { xid: 7, type: 4, path: "/ä/€/😀", watch: false },
  { xid: 8, type: 5, path: "/a", data: Buffer.from("yz"), version: 7 },
  { xid: 9, type: 6, path: "/a" },
  { xid: 10, type: 7, path: "/a", acl, version: 2 },
  { xid: 11, type: 8, path: "/", watch: true },
  { xid: 12, type: 9, path: "/a" },
  { xid: -2, type: 11 },
  { xid: 13, type: 12, path: "/a", watch: false },
  {
    xid: 14,
    type: 14,
    ops: [
      { type: 1, path: "/m", data: null, acl: OPEN_ACL, flags: 0, ttl: -1 },
      { type: 15, path: "/n", data: Buffer.from("n"), acl, flags: 2, ttl: -1 },
      { type: 19, path: "/o", data: Buffer.alloc(0), acl: OPEN_ACL, flags: 4, ttl: -1 },
      { type: 21, path: "/p", data: null, acl: OPEN_ACL, flags: 6, ttl: 1000 },
      { type: 13, path: "/m", version: 0 },
      { type: 5, path: "/m", data: Buffer.from("v"), version: -1 },
      { type: 2, path: "/m", version: 1 },
    ],
  },
  { xid: 15, type: 14, ops: [] },
  {
    xid: 16,
    type: 22,
    ops: [
      { type: 4, path: "/a", watch: false },
      { type: 8, path: "/b", watch: false },
    ],
  },
  { xid: 17, type: 17, path: "/a", watcherType: 1 },
  { xid: 18, type: 18, path: "/a", watcherType: 3 },
  { xid: -4, type: 100, scheme: "digest", auth: Buffer.from("bob:secret") },
  {
    xid: -8,
    type: 101,
    relativeZxid: 0x100000005,
    dataWatches: ["/a", "/b"],
    existWatches: [],
    childWatches: ["/"],
    persistentWatches: [],
    persistentRecursiveWatches: [],
  },
  {
    xid: -8,
    type: 105,
    relativeZxid: 0,
    dataWatches: [],
    existWatches: ["/x"],
    childWatches: [],
    persistentWatches: ["/p"],
    persistentRecursiveWatches: ["/q", "/r"],
  },
  { xid: 19, type: 103, path: "/" },
  { xid: 20, type: 104, path: "/a" },
  { xid: 21, type: 106, path: "/a", mode: 1 },
  { xid: 22, type: 107 },
  { xid: 23, type: -11 },
];

/** A request body written by hand: header, then `fill`. */
function rawRequest(xid: number, type: number, fill: (w: JuteWriter) => void = () => {}): Buffer {
  const w = new JuteWriter();
  w.int(xid).int(type);
  fill(w);
  return w.toBuffer();
}

describe("jute", () => {
  it("round-trips every field type", () => {
    const w = new JuteWriter(16);
    w.int(-1)
      .int(0x7fffffff)
      .long(-1)
      .long(2 ** 53 - 1)
      .long(-(2 ** 53 - 1))
      .long(-(2 ** 40));
    w.long(-(2n ** 63n))
      .long(2n ** 63n - 1n)
      .bool(true)
      .bool(false);
    w.buffer(null)
      .buffer(new Uint8Array(0))
      .buffer(new Uint8Array([1, 2, 3]));
    const long = "/" + "ü€😀".repeat(30);
    w.ustring(null).ustring("").ustring("/short/ascii").ustring("/ä").ustring(long);
    w.vector(null, (x, n: number) => x.int(n)).vector([7, 8], (x, n) => x.int(n));
    const r = new JuteReader(Buffer.from(w.toBuffer()));
    assert.equal(r.int(), -1);
    assert.equal(r.int(), 0x7fffffff);
    assert.equal(r.long(), -1n);
    assert.equal(r.safeLong(), 2 ** 53 - 1);
    assert.equal(r.safeLong(), -(2 ** 53 - 1));
    assert.equal(r.safeLong(), -(2 ** 40));
    assert.equal(r.long(), -(2n ** 63n));
    assert.equal(r.long(), 2n ** 63n - 1n);
    assert.equal(r.bool(), true);
    assert.equal(r.bool(), false);
    assert.equal(r.buffer(), null);
    assert.deepEqual(r.buffer(), Buffer.alloc(0));
    assert.deepEqual(r.buffer(), Buffer.from([1, 2, 3]));
    assert.equal(r.ustring(), null);
    assert.equal(r.ustring(), "");
    assert.equal(r.ustring(), "/short/ascii");
    assert.equal(r.ustring(), "/ä");
    assert.equal(r.ustring(), long);
    assert.equal(
      r.vector((x) => x.int()),
      null,
    );
    assert.deepEqual(
      r.vector((x) => x.int()),
      [7, 8],
    );
    assert.equal(r.remaining, 0);
  });

  it("grows at any field boundary", () => {
    const fill = (w: JuteWriter) => {
      for (let i = 0; i < 8; i++) {
        w.bool(true)
          .long(-2n)
          .long(-3)
          .buffer(Buffer.from([i]))
          .ustring("/é")
          .int(i);
      }
      return w.toBuffer();
    };
    const expected = fill(new JuteWriter(4096));
    for (let capacity = 16; capacity < 64; capacity++) {
      assert.deepEqual(fill(new JuteWriter(capacity)), expected, `capacity ${capacity}`);
    }
  });

  it("writes exactly 0/1 booleans and reads any non-zero byte as true", () => {
    assert.deepEqual(new JuteWriter().bool(true).bool(false).toBuffer(), hex("0100"));
    assert.equal(new JuteReader(hex("02")).bool(), true);
  });

  it("frames with a big-endian length prefix", () => {
    assert.deepEqual(new JuteWriter().int(1).frame(), hex("00000004 00000001"));
    assert.deepEqual(new JuteWriter().frame(), hex("00000000"));
    const big = Buffer.alloc(5000, 7);
    assert.deepEqual(body(new JuteWriter(16).buffer(big).frame()).subarray(4), big);
  });

  it("rejects truncation, bad lengths and unsafe longs with JuteError", () => {
    assert.throws(() => new JuteReader(hex("000000")).int(), isJuteError);
    assert.throws(() => new JuteReader(hex("00000000000000")).long(), isJuteError);
    assert.throws(() => new JuteReader(hex("")).bool(), isJuteError);
    assert.throws(() => new JuteReader(hex("fffffffe")).buffer(), isJuteError);
    assert.throws(() => new JuteReader(hex("80000000")).ustring(), isJuteError);
    assert.throws(() => new JuteReader(hex("00000002 61")).ustring(), isJuteError);
    assert.throws(
      () => new JuteReader(hex("00000002 00000001")).vector((r) => r.int()),
      isJuteError,
    );
    assert.throws(() => new JuteReader(hex("7fffffff")).vector((r) => r.int()), isJuteError);
    assert.throws(() => new JuteReader(hex("0020000000000000")).safeLong(), isJuteError);
    assert.throws(() => new JuteReader(hex("ffe0000000000000")).safeLong(), isJuteError);
    assert.equal(new JuteReader(hex("001fffffffffffff")).safeLong(), Number.MAX_SAFE_INTEGER);
    assert.equal(new JuteReader(hex("ffe0000000000001")).safeLong(), Number.MIN_SAFE_INTEGER);
    assert.throws(() => new JuteWriter().long(2 ** 53), RangeError);
  });

  it("copies buffers out of the input", () => {
    const input = hex("00000002 0102");
    const out = new JuteReader(input).buffer()!;
    input[4] = 9;
    assert.deepEqual(out, Buffer.from([1, 2]));
    assert.notEqual(out.buffer, input.buffer);
  });
});

describe("ZooKeeper requests", () => {
  it("round-trips every request type", () => {
    for (const req of requests) {
      assert.deepEqual(decodeRequest(body(encodeRequest(req))), req, `type ${req.type}`);
    }
  });

  it("keeps null data apart from empty data", () => {
    const create = (data: Buffer | null): ZkRequest => {
      return { xid: 1, type: 1, path: "/a", data, acl: OPEN_ACL, flags: 0, ttl: -1 };
    };
    const nullBody = body(encodeRequest(create(null)));
    const emptyBody = body(encodeRequest(create(Buffer.alloc(0))));
    assert.deepEqual(nullBody.subarray(14, 18), hex("ffffffff"));
    assert.deepEqual(emptyBody.subarray(14, 18), hex("00000000"));
    assert.equal(field(decodeRequest(nullBody), "data"), null);
    assert.deepEqual(field(decodeRequest(emptyBody), "data"), Buffer.alloc(0));
  });

  it("returns data and auth as copies of the input", () => {
    for (const [type, key] of [
      [5, "data"],
      [100, "auth"],
    ] as const) {
      const req = requests.find((r) => r.type === type)!;
      const input = body(encodeRequest(req));
      const value = field(decodeRequest(input), key) as Buffer;
      input.fill(0);
      assert.deepEqual(value, field(req, key));
      assert.notEqual(value.buffer, input.buffer);
      assert.equal(value.byteLength, value.buffer.byteLength, "owns exactly its memory");
    }
  });

  it("answers unknown and unservable opcodes with Unimplemented", () => {
    for (const type of [999, 13, 16, 102, 20, 0, -1, -10]) {
      const raw = rawRequest(7, type, (w) => w.ustring("/a").int(0));
      assert.deepEqual(decodeRequest(raw), { xid: 7, type, invalid: Err.unimplemented });
    }
    const check: ZkRequest = { xid: 7, type: 13, path: "/a", version: 0 };
    assert.deepEqual(decodeRequest(body(encodeRequest(check))), {
      xid: 7,
      type: 13,
      invalid: Err.unimplemented,
    });
    const invalid: ZkRequest = { xid: 3, type: 999, invalid: Err.unimplemented };
    assert.deepEqual(encodeRequest(invalid), hex("00000008 00000003 000003e7"));
  });

  it("answers every truncated body with MarshallingError", () => {
    for (const req of requests) {
      const full = body(encodeRequest(req));
      for (let length = 8; length < full.length; length++) {
        const decoded = decodeRequest(full.subarray(0, length));
        assert.deepEqual(
          decoded,
          { xid: req.xid, type: req.type, invalid: Err.marshallingError },
          `type ${req.type} cut at ${length}`,
        );
      }
    }
  });

  it("answers bad lengths and null strings with MarshallingError", () => {
    const bad = (fill: (w: JuteWriter) => void, type = 4) => {
      assert.deepEqual(decodeRequest(rawRequest(1, type, fill)), {
        xid: 1,
        type,
        invalid: Err.marshallingError,
      });
    };
    bad((w) => w.int(-2).bool(false));
    bad((w) => w.int(100).bool(false));
    bad((w) => w.ustring(null).bool(false));
    bad((w) => w.ustring("/a").int(-5).int(0), 5);
    bad((w) => w.int(0).ustring(null).buffer(null), 100);
    bad((w) => w.long(0).int(1).ustring(null).int(0).int(0), 101);
    // createTTL with a ttl beyond 2^53
    bad(
      (w) =>
        w
          .ustring("/t")
          .buffer(null)
          .int(0)
          .int(5)
          .long(2n ** 60n),
      21,
    );
  });

  it("reads a null ACL vector as empty and a null auth as empty", () => {
    const create = rawRequest(1, 1, (w) => w.ustring("/a").buffer(null).int(-1).int(0));
    assert.deepEqual(field(decodeRequest(create), "acl"), []);
    const auth = rawRequest(-4, 100, (w) => w.int(0).ustring("digest").buffer(null));
    assert.deepEqual(decodeRequest(auth), {
      xid: -4,
      type: 100,
      scheme: "digest",
      auth: Buffer.alloc(0),
    });
  });

  it("rejects ops that a multi or a multiRead may not hold", () => {
    const multi = (type: number, opType: number, fill: (w: JuteWriter) => void) =>
      rawRequest(1, type, (w) => {
        w.int(opType).bool(false).int(-1);
        fill(w);
        w.int(-1).bool(true).int(-1);
      });
    const marshalling = (type: number) => ({ xid: 1, type, invalid: Err.marshallingError });
    const getData = (w: JuteWriter) => w.ustring("/a").bool(false);
    const create = (w: JuteWriter) => w.ustring("/a").buffer(null).int(0).int(0);
    assert.deepEqual(decodeRequest(multi(14, 4, getData)), marshalling(14));
    assert.deepEqual(decodeRequest(multi(14, 3, getData)), marshalling(14));
    assert.deepEqual(decodeRequest(multi(14, -1, () => {})), marshalling(14));
    assert.deepEqual(decodeRequest(multi(22, 1, create)), marshalling(22));
    assert.deepEqual(decodeRequest(multi(22, 12, getData)), marshalling(22));
    assert.deepEqual(decodeRequest(multi(22, 4, getData)), {
      xid: 1,
      type: 22,
      ops: [{ type: 4, path: "/a", watch: false }],
    });
  });

  it("ignores trailing bytes", () => {
    for (const req of requests) {
      const full = Buffer.concat([body(encodeRequest(req)), hex("deadbeef")]);
      assert.deepEqual(decodeRequest(full), req);
    }
  });

  it("clamps relativeZxid into the safe-integer range", () => {
    const setWatches = (zxid: bigint) =>
      rawRequest(-8, 101, (w) => w.long(zxid).int(0).int(0).int(0));
    const zxidOf = (raw: Buffer) => field(decodeRequest(raw), "relativeZxid");
    assert.equal(zxidOf(setWatches(2n ** 62n)), Number.MAX_SAFE_INTEGER);
    assert.equal(zxidOf(setWatches(-(2n ** 62n))), Number.MIN_SAFE_INTEGER);
    assert.equal(zxidOf(setWatches(-1n)), -1);
  });

  it("throws JuteError only for a header shorter than 8 bytes", () => {
    for (let length = 0; length < 8; length++) {
      assert.throws(() => decodeRequest(Buffer.alloc(length)), isJuteError);
    }
    assert.deepEqual(decodeRequest(hex("fffffffe 0000000b")), { xid: -2, type: 11 });
  });

  it("never throws anything but JuteError on random or mutated bytes", () => {
    withSeed("zk request fuzz", (random) => {
      const valid = requests.map((req) => body(encodeRequest(req)));
      for (let i = 0; i < 20000; i++) {
        let input: Buffer;
        if (i % 2 === 0) {
          input = randomBytes(random, int(random, 0, 64));
          // Valid opcodes reach the body decoders more often than random ones would.
          if (input.length >= 8 && i % 4 === 0) input.writeInt32BE(pick(random, requests).type, 4);
        } else {
          input = Buffer.from(pick(random, valid));
          for (let flips = int(random, 1, 4); flips > 0 && input.length > 0; flips--) {
            input[int(random, 0, input.length - 1)] = int(random, 0, 255);
          }
          input = input.subarray(0, int(random, 0, input.length));
        }
        let decoded: ZkRequest;
        try {
          decoded = decodeRequest(input);
        } catch (error) {
          assert.ok(error instanceof JuteError, `${input.toString("hex")}: ${error}`);
          assert.ok(input.length < 8);
          continue;
        }
        assert.equal(decoded.xid, input.readInt32BE(0));
        assert.equal(decoded.type, input.readInt32BE(4));
      }
    });
  });
});

describe("ZooKeeper session handshake", () => {
  const passwd = Buffer.alloc(16, 0xab);
  const connect = {
    protocolVersion: 0,
    lastZxidSeen: 0x100000007n,
    timeOut: 30000,
    sessionId: 0x0123456789abcdefn,
    passwd,
  };

  it("accepts 44-byte (no readOnly) and 45-byte connect bodies", () => {
    const short = body(encodeConnectRequest({ ...connect, readOnly: undefined }));
    assert.equal(short.length, 44);
    assert.deepEqual(decodeConnectRequest(short), { ...connect, readOnly: undefined });
    const long = body(encodeConnectRequest({ ...connect, readOnly: true }));
    assert.equal(long.length, 45);
    assert.deepEqual(decodeConnectRequest(long), { ...connect, readOnly: true });
    assert.deepEqual(
      decodeConnectRequest(
        body(encodeConnectRequest({ ...connect, sessionId: 0, readOnly: false })),
      ).sessionId,
      0n,
    );
    for (let length = 0; length < 44; length++) {
      assert.throws(() => decodeConnectRequest(short.subarray(0, length)), isJuteError);
    }
  });

  it("answers with 36 bytes, or 37 when the request had a readOnly byte", () => {
    const reply = { timeOut: 4000, sessionId: 0x0123456789abcdefn, passwd };
    const short = body(encodeConnectResponse({ ...reply, readOnly: undefined }));
    assert.deepEqual(
      short,
      Buffer.concat([hex("00000000 00000fa0 0123456789abcdef 00000010"), passwd]),
    );
    const long = body(encodeConnectResponse({ ...reply, sessionId: 5, readOnly: false }));
    assert.equal(long.length, 37);
    assert.equal(long[36], 0);
    assert.deepEqual(decodeConnectResponse(short), {
      protocolVersion: 0,
      ...reply,
      readOnly: undefined,
    });
    assert.deepEqual(decodeConnectResponse(long), {
      protocolVersion: 0,
      ...reply,
      sessionId: 5n,
      readOnly: false,
    });
  });
});

describe("ZooKeeper replies", () => {
  it("writes a 16-byte ReplyHeader and no body unless given one", () => {
    assert.deepEqual(
      replyFrame(5, 0x100000002, Err.noNode),
      hex("00000010 00000005 0000000100000002 ffffff9b"),
    );
    assert.deepEqual(replyFrame(-2, 0, 0), hex("00000010 fffffffe 0000000000000000 00000000"));
    assert.deepEqual(replyFrame(7, -1, -6), hex("00000010 00000007 ffffffffffffffff fffffffa"));
    const r = new JuteReader(body(replyFrame(9, 42, 0, (w) => w.ustring("/a"))));
    assert.deepEqual(decodeReplyHeader(r), { xid: 9, zxid: 42n, err: 0 });
    assert.equal(r.ustring(), "/a");
    assert.deepEqual(decodeReplyHeader(body(replyFrame(1, 2, 3))), { xid: 1, zxid: 2n, err: 3 });
  });

  it("writes a 68-byte Stat", () => {
    const w = new JuteWriter();
    writeStat(w, stat);
    assert.deepEqual(w.toBuffer(), hex(statHex));
    assert.deepEqual(readStat(new JuteReader(hex(statHex))), stat);
  });

  it("writes ACL vectors", () => {
    const w = new JuteWriter();
    writeAcls(w, OPEN_ACL);
    const world = Buffer.from("world");
    const anyone = Buffer.from("anyone");
    const expected = [hex("00000001 0000001f 00000005"), world, hex("00000006"), anyone];
    assert.deepEqual(w.toBuffer(), Buffer.concat(expected));
    const big = new JuteWriter();
    writeAcls(big, acl);
    assert.deepEqual(readAcls(new JuteReader(big.toBuffer())), acl);
  });

  it("writes notifications with header {-1, -1, 0} and state SyncConnected", () => {
    const frame = notificationFrame(3, "/a");
    assert.deepEqual(
      frame,
      hex("0000001e ffffffff ffffffffffffffff 00000000 00000003 00000003 00000002 2f61"),
    );
    const r = new JuteReader(body(frame));
    assert.deepEqual(decodeReplyHeader(r), { xid: -1, zxid: -1n, err: 0 });
    assert.deepEqual(decodeWatcherEvent(r), { type: 3, state: 3, path: "/a" });
    const unicode = new JuteReader(body(notificationFrame(4, "/ü/😀")));
    decodeReplyHeader(unicode);
    assert.deepEqual(decodeWatcherEvent(unicode), { type: 4, state: 3, path: "/ü/😀" });
  });

  it("writes a failed multi as the observed [{-1,0},{-1,-103},{-1,-2}]", () => {
    const w = new JuteWriter();
    const failed: MultiResult[] = [
      { type: -1, err: 0 },
      { type: -1, err: Err.badVersion },
      { type: -1, err: Err.runtimeInconsistency },
    ];
    writeMultiResults(w, failed);
    assert.deepEqual(
      w.toBuffer(),
      hex(
        "ffffffff 00 00000000 00000000" +
          "ffffffff 00 ffffff99 ffffff99" +
          "ffffffff 00 fffffffe fffffffe" +
          "ffffffff 01 ffffffff",
      ),
    );
    assert.deepEqual(decodeMultiResults(new JuteReader(w.toBuffer())), failed);
  });

  it("writes an empty multi as the 9-byte terminator", () => {
    const frame = replyFrame(4, 10, 0, (w) => writeMultiResults(w, []));
    assert.deepEqual(frame.subarray(20), hex("ffffffff 01 ffffffff"));
    assert.equal(frame.length, 4 + 16 + 9);
    const r = new JuteReader(body(frame));
    decodeReplyHeader(r);
    assert.deepEqual(decodeMultiResults(r), []);
  });

  it("round-trips every multi result type", () => {
    const results: MultiResult[] = [
      { type: 1, path: "/a" },
      { type: 15, path: "/b", stat },
      { type: 2 },
      { type: 5, stat },
      { type: 13 },
      { type: 4, data: Buffer.from("abc"), stat },
      { type: 4, data: null, stat },
      { type: 8, children: ["x", "y"] },
      { type: -1, err: Err.noNode },
    ];
    const w = new JuteWriter(8);
    writeMultiResults(w, results);
    assert.deepEqual(decodeMultiResults(new JuteReader(w.toBuffer())), results);
    // Successful entries carry err 0 in their MultiHeader.
    assert.deepEqual(w.toBuffer().subarray(0, 9), hex("00000001 00 00000000"));
  });
});
