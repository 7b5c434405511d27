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
  layoutBytes,
  readRecords,
  tupleFrameRecords,
  tupleRecord,
  type TupleRecord,
} from "./helpers/tuples.js";

const TYPES: readonly TupleFrameType[] = [EMIT, FORWARD, DELIVER];
const malformed = isWireError("FRAME_MALFORMED");

/** The records bytes of a finished frame (the part after the frame header). */
const recordsOf = (type: TupleFrameType, frame: Buffer): Buffer =>
  tupleFrameRecords(decodeFrame(frame), type);

/** Writes records, finishes the frame and returns the records a receiver reads back. */
function roundTrip(type: TupleFrameType, records: readonly TupleRecord[]): TupleRecord[] {
  const writer = new TupleWriter(type);
  for (const record of records) append(writer, record);
  assert.equal(writer.count, records.length, "count");
  const frame = writer.finish();
  assert.equal(frame.length, writer.byteLength, "byteLength is the frame's length");
  return readRecords(recordsOf(type, frame));
}

/** Bytes of one record, from the layout documented in tuples.ts. */
const recordSize = (record: TupleRecord): number =>
  4 + 2 + 2 + 4 * record.dests.length + 4 + record.payload.length;

function randomRecord(random: Random, maxPayload = 64, maxDests = 6): TupleRecord {
  return tupleRecord(
    int(random, 0, 2 ** 32 - 1),
    int(random, 0, 0xffff),
    Array.from({ length: int(random, 1, maxDests) }, () => int(random, 0, 2 ** 32 - 1)),
    randomBytes(random, int(random, 0, maxPayload)),
  );
}

/** The records bytes of a frame of `type` written with `records`. */
function bytesOf(type: TupleFrameType, records: readonly TupleRecord[]): Buffer {
  const writer = new TupleWriter(type);
  for (const record of records) append(writer, record);
  return recordsOf(type, writer.finish());
}

describe("TupleWriter and TupleReader: round trips", () => {
  const payload = Buffer.from("a tuple");

  it("EMIT records with one and several destinations", () => {
    const records = [
      emitRecord(0, 0, [7], payload),
      emitRecord(4, 1, [0, 1, 2, 3], payload),
      emitRecord(0xffffffff, 0xffff, [0xffffffff, 0, 1 << 20], payload),
    ];
    assert.deepEqual(roundTrip(EMIT, records), records);
    // A single destination may be given as a number.
    const writer = new TupleWriter(EMIT);
    writer.append(2, 5, 9, payload);
    assert.deepEqual(readRecords(recordsOf(EMIT, writer.finish())), [
      emitRecord(2, 5, [9], payload),
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
    writer.append(1, 2, 3, payload);
    assert.deepEqual(readRecords(recordsOf(FORWARD, writer.finish())), [
      forwardRecord(1, 2, [3], payload),
    ]);
  });

  it("DELIVER records carry their one destination, the receiving task", () => {
    const records = [
      deliverRecord(0, 0, 0, payload),
      deliverRecord(12, 3, 4, payload),
      deliverRecord(0xffffffff, 0xffff, 0xffffffff, payload),
    ];
    assert.deepEqual(roundTrip(DELIVER, records), records);
    const reader = new TupleReader(bytesOf(DELIVER, [deliverRecord(12, 3, 4, payload)]));
    assert.equal(reader.next(), true);
    assert.equal(reader.destCount, 1);
    assert.equal(reader.dest(0), 4);
  });

  it("writes the documented little-endian layout, the same for all three types", () => {
    const p = Buffer.from([0xaa, 0xbb]);
    const expected = [
      // srcTask u32, stream u16, destCount u16
      [0x0d, 0x0c, 0x0b, 0x0a, 0x02, 0x01, 2, 0],
      // dest u32 × 2
      [0x06, 0x05, 0x04, 0x03, 7, 0, 0, 0],
      // payloadLength u32, payload
      [2, 0, 0, 0, 0xaa, 0xbb],
    ].flat();
    const record = tupleRecord(0x0a0b0c0d, 0x0102, [0x03040506, 7], p);
    for (const type of TYPES) {
      assert.deepEqual([...bytesOf(type, [record])], expected, `type ${type}`);
    }
    assert.deepEqual([...layoutBytes(record)], expected, "the test's own layout agrees");
    // One destination given as a number: destCount 1.
    assert.deepEqual(
      [...bytesOf(DELIVER, [deliverRecord(5, 0x0201, 0x11223344, p)])],
      [5, 0, 0, 0, 0x01, 0x02, 1, 0, 0x44, 0x33, 0x22, 0x11, 2, 0, 0, 0, 0xaa, 0xbb],
    );
    // Records follow each other with nothing in between.
    const second = tupleRecord(1, 2, [3], Buffer.alloc(0));
    assert.deepEqual(
      bytesOf(EMIT, [record, second]),
      Buffer.concat([layoutBytes(record), layoutBytes(second)]),
    );
  });

  it("the frame around the records: length, msgpack [type, bin 32]", () => {
    for (const type of TYPES) {
      const writer = new TupleWriter(type);
      writer.append(1, 2, [3], Buffer.from([9]));
      const frame = writer.finish();
      const records = frame.length - 11;
      assert.deepEqual(
        [...frame.subarray(0, 11)],
        [0, 0, 0, frame.length - 4, 0x92, type, 0xc6, 0, 0, 0, records],
      );
      assert.deepEqual(frame.subarray(11), layoutBytes(tupleRecord(1, 2, [3], Buffer.from([9]))));
    }
  });

  it("rejects more than 65535 destinations with a RangeError, writing nothing", () => {
    const writer = new TupleWriter(EMIT);
    writer.append(0, 0, [1], payload);
    const before = writer.byteLength;
    const dests = Array.from({ length: 0x10000 }, (_, i) => i);
    assert.throws(() => writer.append(0, 0, dests, payload), RangeError);
    assert.equal(writer.byteLength, before);
    assert.equal(writer.count, 1);
    // 65535 is fine.
    writer.append(0, 0, dests.slice(1), payload);
    const back = readRecords(recordsOf(EMIT, writer.finish()));
    assert.equal(back.length, 2);
    assert.equal(back[1]!.dests.length, 0xffff);
    assert.equal(back[1]!.dests.at(-1), 0xffff);
  });

  it("empty, small, boundary-sized and large payloads", () => {
    const sizes = [0, 1, 63, 64, 65, 4096, 16 * 1024, 16 * 1024 + 1, 1 << 20];
    for (const type of TYPES) {
      const records = sizes.map((size, i) => {
        const bytes = Buffer.alloc(size);
        for (let j = 0; j < size; j++) bytes[j] = (j * 31 + i) & 0xff;
        return type === DELIVER
          ? deliverRecord(i, i, i + 2, bytes)
          : tupleRecord(i, i, [i, i + 1], bytes);
      });
      assert.deepEqual(roundTrip(type, records), records, `type ${type}`);
    }
  });

  it("copies payloads given as views: a Uint8Array, a Buffer slice with an offset", () => {
    const text = "0123456789abcdefghij".repeat(10);
    const backing = Buffer.from(text);
    const slice = backing.subarray(5, 105); // over 64 bytes: the copy path for large payloads
    const small = backing.subarray(3, 9);
    const u8 = new Uint8Array(backing.buffer, backing.byteOffset + 7, 70);
    const writer = new TupleWriter(DELIVER);
    writer.append(1, 0, 9, slice);
    writer.append(2, 0, 9, small);
    writer.append(3, 0, 9, u8);
    backing.fill(0); // the writer holds copies, not views
    assert.deepEqual(readRecords(recordsOf(DELIVER, writer.finish())), [
      deliverRecord(1, 0, 9, Buffer.from(text).subarray(5, 105)),
      deliverRecord(2, 0, 9, Buffer.from("345678")),
      deliverRecord(3, 0, 9, Buffer.from(text).subarray(7, 77)),
    ]);
  });

  it("copies the payload range [start, end) of a Buffer or a Uint8Array", () => {
    const text = "0123456789abcdefghij".repeat(10);
    const backing = Buffer.from(`xx${text}`).subarray(2); // a Buffer with a byteOffset
    const u8 = new Uint8Array(backing.buffer, backing.byteOffset, backing.length);
    const writer = new TupleWriter(FORWARD);
    writer.append(1, 0, [4, 5], backing, 10, 90);
    writer.append(2, 1, 6, backing, 3, 3); // empty range
    writer.append(3, 2, 7, u8, 100, 200);
    writer.append(4, 3, 8, backing, 195); // end defaults to the end
    writer.append(5, 4, 9, u8, 0, 1);
    const expected = [
      forwardRecord(1, 0, [4, 5], Buffer.from(text.slice(10, 90))),
      forwardRecord(2, 1, [6], Buffer.alloc(0)),
      forwardRecord(3, 2, [7], Buffer.from(text.slice(100, 200))),
      forwardRecord(4, 3, [8], Buffer.from(text.slice(195))),
      forwardRecord(5, 4, [9], Buffer.from(text.slice(0, 1))),
    ];
    backing.fill(0);
    assert.equal(writer.count, 5);
    assert.deepEqual(readRecords(recordsOf(FORWARD, writer.finish())), expected);
  });

  it("many records grow the writer's buffer and keep every byte", () => {
    withSeed("tuple growth", (random) => {
      for (const type of TYPES) {
        const records = Array.from({ length: 5_000 }, () => randomRecord(random, 600));
        const writer = new TupleWriter(type);
        let expectedLength = writer.byteLength;
        for (const record of records) {
          append(writer, record);
          expectedLength += recordSize(record);
          assert.equal(writer.byteLength, expectedLength);
        }
        assert.ok(writer.byteLength > 1 << 20, "well past the initial buffer");
        const bytes = recordsOf(type, writer.finish());
        assert.deepEqual(bytes, Buffer.concat(records.map(layoutBytes)), `type ${type}`);
        assert.deepEqual(readRecords(bytes), records, `type ${type}`);
      }
    });
  });

  it("finish() yields one complete frame that the frame codec decodes to [type, Buffer]", () => {
    withSeed("tuple frames", (random) => {
      for (const type of TYPES) {
        const records = Array.from({ length: 50 }, () => randomRecord(random));
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
        assert.deepEqual(readRecords(body[1]), records);
        assert.deepEqual(readRecords(tupleFrameRecords(decodeBody(bodies[1]!), type)), [
          records[0],
        ]);
      }
    });
  });

  it("an empty writer finishes to [type, empty Buffer] without records", () => {
    for (const type of TYPES) {
      const writer = new TupleWriter(type);
      assert.equal(writer.count, 0);
      const bytes = recordsOf(type, writer.finish());
      assert.equal(bytes.length, 0);
      assert.equal(new TupleReader(bytes).next(), false);
    }
  });
});

describe("TupleWriter.appendRecords: whole records copied unchanged", () => {
  it("copies runs of records byte for byte, counting them", () => {
    withSeed("tuple runs", (random) => {
      for (let round = 0; round < 50; round++) {
        const records = Array.from({ length: int(random, 1, 40) }, () => randomRecord(random));
        // The records bytes as a receiver has them: a view into a frame body.
        const source = bytesOf(EMIT, records);
        const starts = [0];
        for (const record of records) starts.push(starts.at(-1)! + recordSize(record));
        const type = pick(random, TYPES);
        const writer = new TupleWriter(type);
        const expected: Buffer[] = [];
        let expectedCount = 0;
        // Random runs of consecutive records, in random order, some mixed with append().
        for (let i = 0; i < 20; i++) {
          if (random() < 0.2) {
            const record = randomRecord(random);
            append(writer, record);
            expected.push(layoutBytes(record));
            expectedCount++;
            continue;
          }
          const first = int(random, 0, records.length - 1);
          const last = int(random, first, records.length - 1);
          const before = writer.byteLength;
          writer.appendRecords(source, starts[first]!, starts[last + 1]!, last - first + 1);
          assert.equal(writer.byteLength, before + starts[last + 1]! - starts[first]!);
          expected.push(source.subarray(starts[first]!, starts[last + 1]!));
          expectedCount += last - first + 1;
          assert.equal(writer.count, expectedCount);
        }
        const bytes = recordsOf(type, writer.finish());
        assert.deepEqual(bytes, Buffer.concat(expected), `round ${round}`);
        assert.equal(readRecords(bytes).length, expectedCount);
      }
    });
  });

  it("copies out of the source: changing the source afterwards changes nothing", () => {
    const records = [
      tupleRecord(1, 0, [2], Buffer.from("one")),
      tupleRecord(3, 1, [4, 5], Buffer.from("two")),
    ];
    const source = Buffer.concat([Buffer.from([0xee, 0xee]), ...records.map(layoutBytes)]);
    const writer = new TupleWriter(FORWARD);
    writer.appendRecords(source, 2, source.length, 2);
    source.fill(0);
    assert.deepEqual(readRecords(recordsOf(FORWARD, writer.finish())), records);
  });

  it("a run larger than the buffer grows it, after records already written", () => {
    const big = Array.from({ length: 300 }, (_, i) =>
      tupleRecord(i, i & 0xffff, [i, i + 1], Buffer.alloc(i * 7, i & 0xff)),
    );
    const source = bytesOf(EMIT, big);
    assert.ok(source.length > 64 * 1024, "well over the initial 16 KiB");
    const head = tupleRecord(9, 9, [9], Buffer.from("head"));
    const writer = new TupleWriter(DELIVER);
    append(writer, head);
    writer.appendRecords(source, 0, source.length, big.length);
    writer.appendRecords(source, 0, source.length, big.length);
    append(writer, head);
    assert.equal(writer.count, 2 + 2 * big.length);
    assert.deepEqual(readRecords(recordsOf(DELIVER, writer.finish())), [
      head,
      ...big,
      ...big,
      head,
    ]);
  });

  it("an empty range writes nothing", () => {
    const writer = new TupleWriter(EMIT);
    const before = writer.byteLength;
    writer.appendRecords(Buffer.from([1, 2, 3]), 1, 1, 0);
    assert.equal(writer.byteLength, before);
    assert.equal(writer.count, 0);
  });
});

describe("TupleWriter: writing into a reused buffer", () => {
  it("writes the frame into the given buffer, whatever it held before", () => {
    withSeed("tuple reuse", (random) => {
      for (const type of TYPES) {
        const records = Array.from({ length: 30 }, () => randomRecord(random));
        const fresh = new TupleWriter(type);
        for (const record of records) append(fresh, record);
        const expected = fresh.finish();

        const backing = randomBytes(random, 64 * 1024 + 7); // stale bytes of an earlier frame
        const reuse = backing.subarray(7);
        const writer = new TupleWriter(type, 1024, reuse);
        for (const record of records) append(writer, record);
        const frame = writer.finish();
        assert.equal(frame.buffer, reuse.buffer, "the frame is in the reused buffer");
        assert.equal(frame.byteOffset, reuse.byteOffset, "at its start");
        assert.deepEqual(frame, expected);
      }
    });
  });

  it("outgrows a small reused buffer without losing bytes", () => {
    withSeed("tuple reuse growth", (random) => {
      const records = Array.from({ length: 400 }, () => randomRecord(random, 400));
      const reuse = Buffer.alloc(1024, 0x55);
      const writer = new TupleWriter(FORWARD, 0, reuse);
      for (const record of records) append(writer, record);
      const bytes = recordsOf(FORWARD, writer.finish());
      assert.deepEqual(readRecords(bytes), records);
      assert.deepEqual(bytes, Buffer.concat(records.map(layoutBytes)));
    });
  });
});

describe("TupleReader: the current record's fields and positions", () => {
  it("reads srcTask, stream, dests and the record and payload bounds", () => {
    const records = [
      tupleRecord(0x01020304, 7, [5], Buffer.from("first")),
      tupleRecord(0, 0xffff, [1, 2, 0xffffffff], Buffer.alloc(0)),
      tupleRecord(0xffffffff, 0, [0x80000000], Buffer.from("last one")),
    ];
    const inner = Buffer.concat(records.map(layoutBytes));
    const bytes = Buffer.concat([Buffer.from([1, 2, 3]), inner, Buffer.from([4])]).subarray(
      3,
      3 + inner.length,
    );
    const reader = new TupleReader(bytes);
    let at = 0;
    for (const record of records) {
      assert.equal(reader.next(), true);
      assert.equal(reader.srcTask, record.srcTask);
      assert.equal(reader.stream, record.stream);
      assert.equal(reader.destCount, record.dests.length);
      assert.deepEqual(
        record.dests.map((_, i) => reader.dest(i)),
        record.dests,
      );
      assert.equal(reader.recordStart, at, "recordStart is relative to the bytes");
      assert.equal(reader.payloadStart, at + 12 + 4 * record.dests.length);
      assert.equal(reader.payloadEnd, at + recordSize(record), "the record ends with its payload");
      assert.deepEqual(reader.payload(), record.payload);
      assert.deepEqual(
        bytes.subarray(reader.recordStart, reader.payloadEnd),
        layoutBytes(record),
        "[recordStart, payloadEnd) is the whole record",
      );
      at = reader.payloadEnd;
    }
    assert.equal(reader.next(), false);
    assert.equal(reader.next(), false, "and stays at the end");
  });
});

/**
 * Reads every record of `bytes` and checks each against the bytes themselves: its fields are
 * where the layout puts them and lie within the buffer. Returns how many records were read and
 * the WireError that ended the read, if any; any other error fails the test.
 */
function readChecked(bytes: Buffer): { records: number; end: number; error?: WireError } {
  const reader = new TupleReader(bytes);
  let offset = 0;
  let records = 0;
  try {
    for (;;) {
      if (!reader.next()) {
        assert.equal(offset, bytes.length, "next() is false only at the end of the bytes");
        return { records, end: offset };
      }
      assert.equal(reader.recordStart, offset, "a record starts where the last one ended");
      const payload = reader.payload();
      assert.equal(payload.buffer, bytes.buffer, "the payload is a view of the bytes");
      const at = payload.byteOffset - bytes.byteOffset;
      assert.equal(at, reader.payloadStart);
      assert.equal(at + payload.length, reader.payloadEnd);
      let field = offset;
      assert.equal(reader.srcTask, bytes.readUInt32LE(field), "srcTask");
      field += 4;
      assert.equal(reader.stream, bytes.readUInt16LE(field), "stream");
      field += 2;
      assert.equal(reader.destCount, bytes.readUInt16LE(field), "destCount");
      assert.ok(reader.destCount >= 1, "a record has a destination");
      field += 2;
      for (let i = 0; i < reader.destCount; i++) {
        assert.ok(field + 4 <= bytes.length, "dests within the bytes");
        assert.equal(reader.dest(i), bytes.readUInt32LE(field), `dest ${i}`);
        field += 4;
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
    // Written by hand: srcTask 0, stream 0, destCount 0, payloadLength 1, payload.
    assert.throws(
      () => new TupleReader(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1])).next(),
      isWireError("FRAME_MALFORMED", /no destination/),
    );
    // Written by the writer, which does not check, for every frame type.
    for (const type of TYPES) {
      const writer = new TupleWriter(type);
      writer.append(0, 0, [1], payload);
      writer.append(0, 0, [], payload);
      const reader = new TupleReader(recordsOf(type, writer.finish()));
      assert.equal(reader.next(), true, "the record before it is fine");
      assert.throws(() => reader.next(), isWireError("FRAME_MALFORMED", /no destination/));
    }
  });

  it("lengths past the end are FRAME_MALFORMED", () => {
    // destCount 0xffff with one dest present.
    assert.throws(
      () =>
        new TupleReader(Buffer.from([1, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0])).next(),
      malformed,
    );
    // payloadLength 0xffffffff, and one byte too many.
    const head = [1, 0, 0, 0, 0, 0, 1, 0, 4, 0, 0, 0];
    const huge = Buffer.from([...head, 0xff, 0xff, 0xff, 0xff, 9]);
    assert.throws(() => new TupleReader(huge).next(), malformed);
    const oneOver = Buffer.from([...head, 2, 0, 0, 0, 9]);
    assert.throws(() => new TupleReader(oneOver).next(), malformed);
    const exact = Buffer.from([...head, 1, 0, 0, 0, 9]);
    const reader = new TupleReader(exact);
    assert.equal(reader.next(), true);
    assert.equal(reader.dest(0), 4);
    assert.deepEqual(reader.payload(), Buffer.from([9]));
    assert.equal(reader.next(), false);
  });

  it("a batch cut at every byte yields the whole records before the cut, then throws", () => {
    withSeed("tuple truncation", (random) => {
      for (const type of TYPES) {
        const records = Array.from({ length: 6 }, () => randomRecord(random, 20, 3));
        const bytes = bytesOf(type, records);
        const ends: number[] = [];
        for (const record of records) ends.push((ends.at(-1) ?? 0) + recordSize(record));
        for (let cut = 0; cut <= bytes.length; cut++) {
          const result = readChecked(embedded(random, bytes.subarray(0, cut)));
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
          Array.from({ length: int(random, 1, 4) }, () => randomRecord(random, 24)),
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
        const result = readChecked(embedded(random, bytes));
        if (result.error) errors++;
        else reads++;
      }
      assert.ok(errors > 1000 && reads > 100, `${errors} rejected, ${reads} read to the end`);
    });
  });
});
