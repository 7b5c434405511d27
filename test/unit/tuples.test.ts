import assert, { AssertionError } from "node:assert/strict";
import { describe, it } from "node:test";
import { WireError } from "../../src/platform/wire/errors.js";
import { decodeBody, FrameDecoder } from "../../src/platform/wire/frames.js";
import {
  DELIVER,
  EMIT,
  FORWARD,
  TupleReader,
  TupleWriter,
  type TupleFrameType,
} from "../../src/platform/wire/tuples.js";
import { int, pick, randomBytes, withSeed, type Random } from "./helpers/random.js";
import {
  append,
  decodeFrame,
  deliverRecord,
  emitRecord,
  forwardRecord,
  isWireError,
  readRecords,
  tupleFrameRecords,
  type TupleRecord,
} from "./helpers/tuples.js";

const TYPES: readonly TupleFrameType[] = [EMIT, FORWARD, DELIVER];
const malformed = isWireError("FRAME_MALFORMED");

/** Writes records, finishes the frame and returns the records a receiver reads back. */
function roundTrip(type: TupleFrameType, records: readonly TupleRecord[]): TupleRecord[] {
  const writer = new TupleWriter(type);
  for (const record of records) append(writer, record);
  assert.equal(writer.count, records.length, "count");
  const frame = writer.finish();
  assert.equal(frame.length, writer.byteLength, "byteLength is the frame's length");
  return readRecords(type, tupleFrameRecords(decodeFrame(frame), type));
}

/** Bytes of one record, from the layout documented in tuples.ts. */
function recordSize(type: TupleFrameType, record: TupleRecord): number {
  const dests = type === DELIVER ? 0 : 2 + 4 * record.dests!.length;
  return (type === EMIT ? 0 : 4) + 2 + dests + 4 + record.payload.length;
}

function randomRecord(random: Random, type: TupleFrameType, maxPayload = 64): TupleRecord {
  const payload = randomBytes(random, int(random, 0, maxPayload));
  const stream = int(random, 0, 0xffff);
  const srcTask = int(random, 0, 2 ** 32 - 1);
  const dests = Array.from({ length: int(random, 1, 6) }, () => int(random, 0, 2 ** 32 - 1));
  switch (type) {
    case EMIT:
      return emitRecord(stream, dests, payload);
    case FORWARD:
      return forwardRecord(srcTask, stream, dests, payload);
    case DELIVER:
      return deliverRecord(srcTask, stream, payload);
  }
}

/** The records bytes of a frame written with `records` (the part after the frame header). */
function bytesOf(type: TupleFrameType, records: readonly TupleRecord[]): Buffer {
  const writer = new TupleWriter(type);
  for (const record of records) append(writer, record);
  return tupleFrameRecords(decodeFrame(writer.finish()), type);
}

describe("TupleWriter and TupleReader: round trips", () => {
  const payload = Buffer.from("a tuple");

  it("EMIT records with one and several destinations", () => {
    const records = [
      emitRecord(0, [7], payload),
      emitRecord(1, [0, 1, 2, 3], payload),
      emitRecord(0xffff, [0xffffffff, 0, 1 << 20], payload),
    ];
    assert.deepEqual(roundTrip(EMIT, records), records);
    // A single destination may be given as a number.
    const writer = new TupleWriter(EMIT);
    writer.emit(5, 9, payload);
    assert.deepEqual(readRecords(EMIT, tupleFrameRecords(decodeFrame(writer.finish()), EMIT)), [
      emitRecord(5, [9], payload),
    ]);
  });

  it("FORWARD records with one and several destinations", () => {
    const records = [
      forwardRecord(3, 0, [7], payload),
      forwardRecord(0, 2, [4, 5, 6], payload),
      forwardRecord(0xffffffff, 0xffff, [0xffffffff], payload),
    ];
    assert.deepEqual(roundTrip(FORWARD, records), records);
    const writer = new TupleWriter(FORWARD);
    writer.forward(1, 2, 3, payload);
    assert.deepEqual(
      readRecords(FORWARD, tupleFrameRecords(decodeFrame(writer.finish()), FORWARD)),
      [forwardRecord(1, 2, [3], payload)],
    );
  });

  it("DELIVER records", () => {
    const records = [
      deliverRecord(0, 0, payload),
      deliverRecord(12, 3, payload),
      deliverRecord(0xffffffff, 0xffff, payload),
    ];
    assert.deepEqual(roundTrip(DELIVER, records), records);
  });

  it("writes the documented little-endian layout", () => {
    const p = Buffer.from([0xaa, 0xbb]);
    assert.deepEqual(
      [...bytesOf(EMIT, [emitRecord(0x0102, [0x03040506, 7], p)])],
      [0x02, 0x01, 2, 0, 0x06, 0x05, 0x04, 0x03, 7, 0, 0, 0, 2, 0, 0, 0, 0xaa, 0xbb],
    );
    assert.deepEqual(
      [...bytesOf(FORWARD, [forwardRecord(0x0a0b0c0d, 1, [2], p)])],
      [0x0d, 0x0c, 0x0b, 0x0a, 1, 0, 1, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0xaa, 0xbb],
    );
    assert.deepEqual(
      [...bytesOf(DELIVER, [deliverRecord(5, 0x0201, p)])],
      [5, 0, 0, 0, 0x01, 0x02, 2, 0, 0, 0, 0xaa, 0xbb],
    );
  });

  it("empty, small, boundary-sized and large payloads", () => {
    const sizes = [0, 1, 63, 64, 65, 4096, 16 * 1024, 16 * 1024 + 1, 1 << 20];
    for (const type of TYPES) {
      const records = sizes.map((size, i) => {
        const bytes = Buffer.alloc(size);
        for (let j = 0; j < size; j++) bytes[j] = (j * 31 + i) & 0xff;
        return type === EMIT
          ? emitRecord(i, [i], bytes)
          : type === FORWARD
            ? forwardRecord(i, i, [i, i + 1], bytes)
            : deliverRecord(i, i, bytes);
      });
      assert.deepEqual(roundTrip(type, records), records, `type ${type}`);
    }
  });

  it("copies payloads given as views: a Uint8Array, a Buffer slice with an offset", () => {
    const backing = Buffer.from("0123456789abcdefghij".repeat(10));
    const slice = backing.subarray(5, 105); // over 64 bytes: the copy path for large payloads
    const small = backing.subarray(3, 9);
    const u8 = new Uint8Array(backing.buffer, backing.byteOffset + 7, 70);
    const writer = new TupleWriter(DELIVER);
    writer.deliver(1, 0, slice);
    writer.deliver(2, 0, small);
    writer.deliver(3, 0, u8);
    backing.fill(0); // the writer holds copies, not views
    assert.deepEqual(
      readRecords(DELIVER, tupleFrameRecords(decodeFrame(writer.finish()), DELIVER)),
      [
        deliverRecord(1, 0, Buffer.from("0123456789abcdefghij".repeat(10)).subarray(5, 105)),
        deliverRecord(2, 0, Buffer.from("345678")),
        deliverRecord(3, 0, Buffer.from("0123456789abcdefghij".repeat(10)).subarray(7, 77)),
      ],
    );
  });

  it("many records grow the writer's buffer and keep every byte", () => {
    withSeed("tuple growth", (random) => {
      for (const type of TYPES) {
        const records = Array.from({ length: 5_000 }, () => randomRecord(random, type, 600));
        const writer = new TupleWriter(type);
        let expectedLength = writer.byteLength;
        for (const record of records) {
          append(writer, record);
          expectedLength += recordSize(type, record);
          assert.equal(writer.byteLength, expectedLength);
        }
        assert.ok(writer.byteLength > 1 << 20, "well past the initial buffer");
        const back = readRecords(type, tupleFrameRecords(decodeFrame(writer.finish()), type));
        assert.equal(back.length, records.length);
        assert.deepEqual(back, records, `type ${type}`);
      }
    });
  });

  it("finish() yields one complete frame that the frame codec decodes to [type, Buffer]", () => {
    withSeed("tuple frames", (random) => {
      for (const type of TYPES) {
        const records = Array.from({ length: 50 }, () => randomRecord(random, type));
        const writer = new TupleWriter(type);
        for (const record of records) append(writer, record);
        const frame = writer.finish();
        assert.equal(frame.readUInt32BE(0), frame.length - 4, "length prefix");

        // Fed in random pieces, with a second frame behind it.
        const next = new TupleWriter(type);
        append(next, records[0]!);
        const stream = Buffer.concat([frame, next.finish()]);
        const decoder = new FrameDecoder();
        const bodies: Buffer[] = [];
        for (let at = 0; at < stream.length;) {
          const end = Math.min(stream.length, at + int(random, 1, 200));
          bodies.push(...decoder.push(stream.subarray(at, end)));
          at = end;
        }
        assert.equal(bodies.length, 2);
        assert.equal(decoder.pendingBytes, 0);
        const body = decodeBody(bodies[0]!);
        assert.ok(Array.isArray(body) && body.length === 2 && body[0] === type);
        assert.ok(Buffer.isBuffer(body[1]));
        assert.deepEqual(readRecords(type, body[1]), records);
        assert.deepEqual(readRecords(type, tupleFrameRecords(decodeBody(bodies[1]!), type)), [
          records[0],
        ]);
      }
    });
  });

  it("an empty writer finishes to [type, empty Buffer] without records", () => {
    for (const type of TYPES) {
      const writer = new TupleWriter(type);
      assert.equal(writer.count, 0);
      const bytes = tupleFrameRecords(decodeFrame(writer.finish()), type);
      assert.equal(bytes.length, 0);
      assert.equal(new TupleReader(type, bytes).next(), false);
    }
  });
});

/**
 * Reads every record of `bytes` and checks each against the bytes themselves: its fields are
 * where the layout puts them and lie within the buffer. Returns how many records were read and
 * the WireError that ended the read, if any; any other error fails the test.
 */
function readChecked(
  type: TupleFrameType,
  bytes: Buffer,
): { records: number; end: number; error?: WireError } {
  const reader = new TupleReader(type, bytes);
  let offset = 0;
  let records = 0;
  try {
    for (;;) {
      if (!reader.next()) {
        assert.equal(offset, bytes.length, "next() is false only at the end of the bytes");
        return { records, end: offset };
      }
      const payload = reader.payload();
      assert.equal(payload.buffer, bytes.buffer, "the payload is a view of the bytes");
      const at = payload.byteOffset - bytes.byteOffset;
      let field = offset;
      if (type !== EMIT) {
        assert.equal(reader.srcTask, bytes.readUInt32LE(field), "srcTask");
        field += 4;
      }
      assert.equal(reader.stream, bytes.readUInt16LE(field), "stream");
      field += 2;
      if (type !== DELIVER) {
        assert.equal(reader.destCount, bytes.readUInt16LE(field), "destCount");
        assert.ok(reader.destCount >= 1, "a record has a destination");
        field += 2;
        for (let i = 0; i < reader.destCount; i++) {
          assert.ok(field + 4 <= bytes.length, "dests within the bytes");
          assert.equal(reader.dest(i), bytes.readUInt32LE(field), `dest ${i}`);
          field += 4;
        }
      }
      assert.ok(field + 4 <= at, "payload length within the bytes");
      assert.equal(payload.length, bytes.readUInt32LE(field), "payload has its declared length");
      assert.equal(at, field + 4, "payload right after its length");
      assert.ok(at + payload.length <= bytes.length, "payload within the bytes");
      offset = at + payload.length;
      records++;
    }
  } catch (error) {
    if (error instanceof AssertionError) throw error;
    assert.ok(
      error instanceof WireError && error.code === "FRAME_MALFORMED",
      `expected WireError FRAME_MALFORMED, got ${String(error)}`,
    );
    return { records, end: offset, error };
  }
}

/** The bytes inside a larger buffer with garbage around them, as a frame in a socket chunk. */
function embedded(random: Random, bytes: Buffer): Buffer {
  const before = int(random, 0, 16);
  const backing = Buffer.concat([
    randomBytes(random, before),
    bytes,
    randomBytes(random, int(random, 0, 16)),
  ]);
  return backing.subarray(before, before + bytes.length);
}

describe("TupleReader: bad bytes are FRAME_MALFORMED, never read out of range", () => {
  it("a record with destCount 0 is FRAME_MALFORMED", () => {
    const payload = Buffer.from([1]);
    // Written by hand: stream 0, destCount 0, payloadLength 1, payload.
    assert.throws(
      () => new TupleReader(EMIT, Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 1])).next(),
      isWireError("FRAME_MALFORMED", /no destination/),
    );
    // Written by the writer, which does not check.
    const emit = new TupleWriter(EMIT);
    emit.emit(0, [1], payload);
    emit.emit(0, [], payload);
    const emitBytes = tupleFrameRecords(decodeFrame(emit.finish()), EMIT);
    const reader = new TupleReader(EMIT, emitBytes);
    assert.equal(reader.next(), true, "the record before it is fine");
    assert.throws(() => reader.next(), malformed);
    const forward = new TupleWriter(FORWARD);
    forward.forward(1, 0, [], payload);
    const forwardBytes = tupleFrameRecords(decodeFrame(forward.finish()), FORWARD);
    assert.throws(() => new TupleReader(FORWARD, forwardBytes).next(), malformed);
  });

  it("lengths past the end are FRAME_MALFORMED", () => {
    // EMIT: destCount 0xffff with one dest present.
    assert.throws(
      () => new TupleReader(EMIT, Buffer.from([0, 0, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0])).next(),
      malformed,
    );
    // DELIVER: payloadLength 0xffffffff, and one byte too many.
    const huge = Buffer.from([1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 9]);
    assert.throws(() => new TupleReader(DELIVER, huge).next(), malformed);
    const oneOver = Buffer.from([1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 9]);
    assert.throws(() => new TupleReader(DELIVER, oneOver).next(), malformed);
  });

  it("a batch cut at every byte yields the whole records before the cut, then throws", () => {
    withSeed("tuple truncation", (random) => {
      for (const type of TYPES) {
        const records = Array.from({ length: 6 }, () => randomRecord(random, type, 20));
        const bytes = bytesOf(type, records);
        const ends: number[] = [];
        for (const record of records) ends.push((ends.at(-1) ?? 0) + recordSize(type, record));
        for (let cut = 0; cut <= bytes.length; cut++) {
          const result = readChecked(type, embedded(random, bytes.subarray(0, cut)));
          const whole = ends.filter((end) => end <= cut).length;
          assert.equal(result.records, whole, `type ${type} cut ${cut}`);
          assert.equal(result.error === undefined, ends.includes(cut) || cut === 0, `cut ${cut}`);
        }
      }
    });
  });

  it("fuzz: mutated and random bytes never raise anything but FRAME_MALFORMED", () => {
    withSeed("tuple fuzz", (random) => {
      let errors = 0;
      let reads = 0;
      for (let round = 0; round < 6_000; round++) {
        const type = pick(random, TYPES);
        const valid = bytesOf(
          type,
          Array.from({ length: int(random, 1, 4) }, () => randomRecord(random, type, 24)),
        );
        let bytes: Buffer;
        switch (int(random, 0, 4)) {
          case 0: // random bytes
            bytes = randomBytes(random, int(random, 1, 80));
            break;
          case 1: // a few bytes flipped
            bytes = Buffer.from(valid);
            for (let i = int(random, 1, 4); i > 0; i--) {
              bytes[int(random, 0, bytes.length - 1)] = int(random, 0, 255);
            }
            break;
          case 2: // cut short
            bytes = valid.subarray(0, int(random, 0, valid.length - 1));
            break;
          case 3: // random bytes inserted
            {
              const at = int(random, 0, valid.length);
              bytes = Buffer.concat([
                valid.subarray(0, at),
                randomBytes(random, int(random, 1, 8)),
                valid.subarray(at),
              ]);
            }
            break;
          default: // one 16- or 32-bit field overwritten with a large value
            bytes = Buffer.from(valid);
            {
              const at = int(random, 0, bytes.length - 4);
              if (random() < 0.5) bytes.writeUInt16LE(int(random, 0, 0xffff), at);
              else bytes.writeUInt32LE(int(random, 0, 2 ** 32 - 1), at);
            }
        }
        const result = readChecked(type, embedded(random, bytes));
        if (result.error) errors++;
        else reads++;
      }
      assert.ok(errors > 1000 && reads > 100, `${errors} rejected, ${reads} read to the end`);
    });
  });
});
