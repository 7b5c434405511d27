import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WireError, type WireErrorCode } from "../../src/platform/wire/errors.js";
import {
  decodeBody,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FrameDecoder,
} from "../../src/platform/wire/frames.js";
import { int, pick, randomBytes, withSeed, type Random } from "./helpers/random.js";

function header(length: number): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(length, 0);
  return head;
}

function isWireError(code: WireErrorCode) {
  return (error: unknown) => error instanceof WireError && error.code === code;
}

/** Decodes a whole frame produced by encodeFrame. */
function roundTrip(value: unknown): unknown {
  const frame = encodeFrame(value);
  assert.equal(frame.readUInt32BE(0), frame.length - 4, "length header");
  const bodies = new FrameDecoder().push(frame);
  assert.equal(bodies.length, 1);
  return decodeBody(bodies[0]!);
}

/** A random msgpack-able value made of the shapes the platform sends. */
function randomValue(random: Random, depth = 0): unknown {
  const kinds = depth > 3 ? 7 : 9;
  switch (int(random, 0, kinds - 1)) {
    case 0:
      return null;
    case 1:
      return random() < 0.5;
    case 2:
      return int(random, -(2 ** 31), 2 ** 31);
    case 3:
      return pick(random, [
        0,
        -1,
        127,
        128,
        255,
        256,
        65535,
        65536,
        2 ** 32,
        2 ** 53 - 1,
        -(2 ** 53 - 1),
      ]);
    case 4:
      return (random() - 0.5) * 10 ** int(random, -5, 15);
    case 5:
      return randomString(random);
    case 6:
      return randomBytes(random, pick(random, [0, 1, 31, 32, 255, 256, 70_000]));
    case 7: {
      const length = int(random, 0, 6);
      return Array.from({ length }, () => randomValue(random, depth + 1));
    }
    default: {
      const object: Record<string, unknown> = {};
      const length = int(random, 0, 6);
      for (let i = 0; i < length; i++)
        object[randomString(random)] = randomValue(random, depth + 1);
      return object;
    }
  }
}

function randomString(random: Random): string {
  const length = pick(random, [0, 1, 5, 31, 32, 300]);
  let text = "";
  for (let i = 0; i < length; i++) {
    // ASCII, Latin-1, CJK and astral code points; no lone surrogates.
    const ranges: [number, number][] = [
      [0x20, 0x7e],
      [0xa0, 0xff],
      [0x4e00, 0x9fff],
      [0x1f300, 0x1f5ff],
    ];
    const [lo, hi] = pick(random, ranges);
    text += String.fromCodePoint(int(random, lo, hi));
  }
  return text;
}

/** Several frames back to back, of varied sizes. */
function sampleStream(): { stream: Buffer; values: unknown[] } {
  const values: unknown[] = [
    1,
    "hello",
    [3, 7, "stream", [1, 2, 3], Buffer.from([1, 2, 3, 4])],
    { t: "throttle", on: true },
    Buffer.alloc(200, 7),
    { nested: { deeper: [null, false, -5, 1.5, "ünïcødé"] } },
    [],
    {},
  ];
  return { stream: Buffer.concat(values.map((v) => encodeFrame(v))), values };
}

/** Feeds `stream` cut at the given offsets; returns the decoded values. */
function feed(stream: Buffer, cuts: number[], decoder = new FrameDecoder()): unknown[] {
  const out: unknown[] = [];
  let from = 0;
  for (const cut of [...cuts, stream.length]) {
    // Copy each chunk: the decoder must not rely on chunks being views of one buffer.
    for (const body of decoder.push(Buffer.from(stream.subarray(from, cut))))
      out.push(decodeBody(body));
    from = cut;
  }
  assert.equal(decoder.pendingBytes, 0);
  return out;
}

describe("encodeFrame / decodeBody", () => {
  it("round-trips many value shapes", () => {
    const shapes: unknown[] = [
      null,
      true,
      false,
      0,
      1,
      -1,
      127,
      128,
      -32,
      -33,
      255,
      256,
      65535,
      65536,
      2 ** 31,
      2 ** 32,
      2 ** 53 - 1,
      -(2 ** 53 - 1),
      0.5,
      -1.25,
      1e300,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      "",
      "a",
      "x".repeat(31),
      "x".repeat(32),
      "x".repeat(70_000),
      "日本語 🎉",
      Buffer.alloc(0),
      Buffer.from([0, 1, 2, 255]),
      Buffer.alloc(70_000, 9),
      [],
      [1, [2, [3, [4, []]]]],
      {},
      { a: 1, b: "two", c: [3], d: { e: null } },
      { "": 0, "key with spaces": 1, ключ: 2 },
      Array.from({ length: 20 }, (_, i) => i),
      Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
      [1, "s", [0, 5, 9], Buffer.from("payload")],
      [2, 7, "s", [3], Buffer.from("payload")],
      {
        t: "hello",
        role: "instance",
        id: "a:0",
        nonce: Buffer.alloc(32, 1),
        proof: Buffer.alloc(32, 2),
      },
    ];
    for (const value of shapes) assert.deepEqual(roundTrip(value), value);
    assert.ok(Number.isNaN(roundTrip(Number.NaN)));
  });

  it("round-trips random values", () => {
    withSeed("frame round trip", (random) => {
      for (let i = 0; i < 2000; i++) {
        const value = randomValue(random);
        assert.deepEqual(roundTrip(value), value, `value ${i}`);
      }
    });
  });

  it("decodes bytes as Uint8Array (what the tuple frame validators expect)", () => {
    const decoded = roundTrip([1, "s", [0], Buffer.from([9])]) as unknown[];
    assert.ok(decoded[3] instanceof Uint8Array);
  });

  it("rejects garbage, truncated msgpack and trailing bytes as FRAME_MALFORMED", () => {
    const garbage = [
      [0xc4, 0x05, 1, 2], // bin8 of 5 bytes, 2 present
      [0xdd, 0xff, 0xff, 0xff, 0xff], // array32 of 4G elements, none present
      [0xdf, 0x00, 0x00, 0x00, 0x02, 0xa1, 0x61], // map32 of 2 entries, half a key present
      [0xdb, 0x00, 0x00, 0x10, 0x00, 0x41], // str32 of 4096 bytes, 1 present
      [0xcb, 0x3f, 0xf0], // float64, truncated
      [0xc0, 0xc0], // nil, nil: trailing bytes
      [0x01, 0x02], // 1, 2: trailing bytes
    ];
    for (const bytes of garbage) {
      assert.throws(
        () => decodeBody(Buffer.from(bytes)),
        isWireError("FRAME_MALFORMED"),
        Buffer.from(bytes).toString("hex"),
      );
    }
    // Every strict prefix of a composite value is truncated.
    const full = encodeFrame({
      t: "report",
      list: [1, 2, 3],
      bytes: Buffer.alloc(40, 1),
      s: "abc",
    }).subarray(4);
    for (let length = 1; length < full.length; length++) {
      assert.throws(
        () => decodeBody(full.subarray(0, length)),
        isWireError("FRAME_MALFORMED"),
        `prefix ${length}`,
      );
    }
    // And a valid value followed by anything is malformed.
    for (const extra of [[0x00], [0xc0], [0x91, 0x01], [0xff]]) {
      assert.throws(
        () => decodeBody(Buffer.concat([full, Buffer.from(extra)])),
        isWireError("FRAME_MALFORMED"),
      );
    }
    assert.deepEqual(decodeBody(full), {
      t: "report",
      list: [1, 2, 3],
      bytes: Buffer.alloc(40, 1),
      s: "abc",
    });
  });
});

describe("FrameDecoder", () => {
  it("yields the same frames wherever the byte stream is split once", () => {
    const { stream, values } = sampleStream();
    for (let cut = 0; cut <= stream.length; cut++) {
      assert.deepEqual(feed(stream, [cut]), values, `cut at ${cut}`);
    }
  });

  it("yields the same frames wherever the byte stream is split twice", () => {
    const { values } = sampleStream();
    // A shorter stream keeps the number of pairs small.
    const stream = Buffer.concat(values.slice(0, 4).map((v) => encodeFrame(v)));
    for (let first = 0; first <= stream.length; first++) {
      for (let second = first; second <= stream.length; second++) {
        assert.deepEqual(
          feed(stream, [first, second]),
          values.slice(0, 4),
          `cuts ${first}, ${second}`,
        );
      }
    }
  });

  it("yields the same frames when fed one byte at a time", () => {
    const { stream, values } = sampleStream();
    const decoder = new FrameDecoder();
    const out: unknown[] = [];
    for (let i = 0; i < stream.length; i++) {
      for (const body of decoder.push(stream.subarray(i, i + 1))) out.push(decodeBody(body));
      // pendingBytes counts what has arrived but not been returned.
      const returnedBytes = out.reduce<number>((n, v) => n + encodeFrame(v).length, 0);
      assert.equal(decoder.pendingBytes, i + 1 - returnedBytes, `after byte ${i}`);
    }
    assert.deepEqual(out, values);
    assert.equal(decoder.pendingBytes, 0);
  });

  it("yields the same frames for random chunkings, including empty chunks", () => {
    withSeed("frame chunking", (random) => {
      const { stream, values } = sampleStream();
      for (let round = 0; round < 300; round++) {
        const cuts: number[] = [];
        let at = 0;
        while (at < stream.length) {
          at = Math.min(stream.length, at + pick(random, [0, 1, 2, 3, 4, 5, 17, 100, 1000]));
          cuts.push(at);
        }
        assert.deepEqual(feed(stream, cuts), values, `round ${round}, cuts ${cuts.join(",")}`);
      }
    });
  });

  it("returns every frame a single chunk completes, in order", () => {
    const { stream, values } = sampleStream();
    const bodies = new FrameDecoder().push(stream);
    assert.deepEqual(
      bodies.map((b) => decodeBody(b)),
      values,
    );
  });

  it("throws FRAME_TOO_LARGE on the length header, before the body arrives", () => {
    const decoder = new FrameDecoder(1024);
    assert.deepEqual(decoder.push(header(1024).subarray(0, 2)), []);
    assert.throws(
      () => decoder.push(header(1025).subarray(2)),
      (error: unknown) => {
        assert.ok(error instanceof WireError);
        assert.equal(error.code, "FRAME_TOO_LARGE");
        assert.match(error.message, /1025 bytes exceeds the limit of 1024/);
        return true;
      },
    );
    // The default limit.
    assert.throws(
      () => new FrameDecoder().push(header(DEFAULT_MAX_FRAME_BYTES + 1)),
      isWireError("FRAME_TOO_LARGE"),
    );
    assert.throws(
      () => new FrameDecoder().push(header(0xffffffff)),
      isWireError("FRAME_TOO_LARGE"),
    );
    // After a good frame in the same chunk too.
    assert.throws(
      () => new FrameDecoder(1024).push(Buffer.concat([encodeFrame("ok"), header(5000)])),
      isWireError("FRAME_TOO_LARGE"),
    );
  });

  it("accepts a frame of exactly the limit", () => {
    const decoder = new FrameDecoder(1024);
    const body = Buffer.alloc(1024, 0xc0); // not valid msgpack, but the decoder does not care
    assert.deepEqual(decoder.push(header(1024)), []);
    assert.equal(decoder.pendingBytes, 4);
    const bodies = decoder.push(body);
    assert.equal(bodies.length, 1);
    assert.ok(bodies[0]!.equals(body));
  });

  it("throws FRAME_EMPTY on a zero length", () => {
    assert.throws(() => new FrameDecoder().push(header(0)), isWireError("FRAME_EMPTY"));
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(header(0).subarray(0, 3)), []);
    assert.throws(() => decoder.push(header(0).subarray(3)), isWireError("FRAME_EMPTY"));
  });

  it("holds a truncated body back and reports it as pending", () => {
    const frame = encodeFrame({ t: "x", data: Buffer.alloc(100, 3) });
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(frame.subarray(0, 3)), []);
    assert.equal(decoder.pendingBytes, 3);
    assert.deepEqual(decoder.push(frame.subarray(3, 50)), []);
    assert.equal(decoder.pendingBytes, 50);
    assert.deepEqual(decoder.push(frame.subarray(50, frame.length - 1)), []);
    assert.equal(decoder.pendingBytes, frame.length - 1);
    const bodies = decoder.push(frame.subarray(frame.length - 1));
    assert.equal(bodies.length, 1);
    assert.deepEqual(decodeBody(bodies[0]!), { t: "x", data: Buffer.alloc(100, 3) });
    assert.equal(decoder.pendingBytes, 0);
  });

  it("fuzz: any input gives frames or a WireError, never another exception", () => {
    const allowed = new Set<WireErrorCode>(["FRAME_TOO_LARGE", "FRAME_EMPTY", "FRAME_MALFORMED"]);
    const reference = { t: "plan", version: 3, list: [1, "two", Buffer.from([3])] };
    const referenceBody = encodeFrame(reference).subarray(4);
    const { stream: validStream } = sampleStream();
    const outcomes = { frames: 0, errors: new Map<string, number>() };

    /** Feeds bytes in random chunks and decodes every body; returns or throws WireError. */
    function run(random: Random, bytes: Buffer): void {
      const decoder = new FrameDecoder(256);
      let at = 0;
      try {
        while (at < bytes.length) {
          const next = Math.min(bytes.length, at + int(random, 1, 64));
          for (const body of decoder.push(bytes.subarray(at, next))) {
            decodeBody(body);
            outcomes.frames++;
          }
          at = next;
        }
      } catch (error) {
        if (!(error instanceof WireError) || !allowed.has(error.code)) {
          throw new Error(`input ${bytes.toString("hex")} threw ${String(error)}`, {
            cause: error,
          });
        }
        outcomes.errors.set(error.code, (outcomes.errors.get(error.code) ?? 0) + 1);
      }
    }

    function mutate(random: Random, input: Buffer): Buffer {
      const bytes = Buffer.from(input);
      const edits = int(random, 1, 4);
      let out = bytes;
      for (let e = 0; e < edits; e++) {
        const at = int(random, 0, Math.max(0, out.length - 1));
        switch (int(random, 0, 3)) {
          case 0: // flip a byte
            if (out.length > 0) out[at] = int(random, 0, 255);
            break;
          case 1: // delete a span
            out = Buffer.concat([out.subarray(0, at), out.subarray(at + int(random, 1, 8))]);
            break;
          case 2: // insert random bytes
            out = Buffer.concat([
              out.subarray(0, at),
              randomBytes(random, int(random, 1, 8)),
              out.subarray(at),
            ]);
            break;
          default: // truncate
            out = out.subarray(0, at);
        }
      }
      return out;
    }

    withSeed("frame fuzz", (random) => {
      for (let i = 0; i < 20_000; i++) {
        let input: Buffer;
        const kind = i % 4;
        if (kind === 0) {
          input = randomBytes(random, int(random, 0, 80));
        } else if (kind === 1) {
          // A plausible header followed by random bytes: exercises decodeBody on garbage.
          const body = randomBytes(random, int(random, 1, 60));
          input = Buffer.concat([header(body.length), body]);
        } else {
          input = mutate(random, validStream);
        }
        run(random, input);
        // Garbage must not leave the shared msgpack decoder in a bad state.
        assert.deepEqual(
          decodeBody(referenceBody),
          reference,
          `after input ${i}: ${input.toString("hex")}`,
        );
      }
    });
    // The fuzzer reached both outcomes and every error code.
    assert.ok(outcomes.frames > 1000, `only ${outcomes.frames} frames decoded`);
    for (const code of allowed)
      assert.ok((outcomes.errors.get(code) ?? 0) > 0, `never saw ${code}`);
  });
});
