/**
 * Helpers for the binary tuple records of tuple frames (src/platform/wire/tuples.ts): plain
 * record values, writing them with a real TupleWriter and reading them back with TupleReader.
 */
import assert from "node:assert/strict";
import type { Outlet } from "../../../src/platform/stmgr/router.js";
import { WireError, type WireErrorCode } from "../../../src/platform/wire/errors.js";
import { decodeBody, FrameDecoder } from "../../../src/platform/wire/frames.js";
import {
  TupleReader,
  TupleWriter,
  type TupleFrameType,
} from "../../../src/platform/wire/tuples.js";

/**
 * One record as a plain value. EMIT, FORWARD and DELIVER records share one layout: srcTask,
 * stream, dests (one or more; a DELIVER record's one dest is the receiving task), payload.
 */
export interface TupleRecord {
  srcTask: number;
  stream: number;
  dests: number[];
  payload: Buffer;
}

export const tupleRecord = (
  srcTask: number,
  stream: number,
  dests: number | number[],
  payload: Buffer,
): TupleRecord => ({
  srcTask,
  stream,
  dests: typeof dests === "number" ? [dests] : dests,
  payload,
});

/** An instance's tuple: srcTask is the emitting task. */
export const emitRecord = tupleRecord;
/** A stream manager's tuple for a peer's tasks among `dests`. */
export const forwardRecord = tupleRecord;
/** A tuple for the one task `dest`. */
export const deliverRecord = (
  srcTask: number,
  stream: number,
  dest: number,
  payload: Buffer,
): TupleRecord => tupleRecord(srcTask, stream, [dest], payload);

/** Appends a record with TupleWriter.append. */
export function append(writer: TupleWriter, record: TupleRecord): void {
  writer.append(record.srcTask, record.stream, record.dests, record.payload);
}

/** The bytes of one record, built by hand from the documented layout (not with the writer). */
export function layoutBytes(record: TupleRecord): Buffer {
  const n = record.dests.length;
  const bytes = Buffer.alloc(12 + 4 * n + record.payload.length);
  bytes.writeUInt32LE(record.srcTask, 0);
  bytes.writeUInt16LE(record.stream, 4);
  bytes.writeUInt16LE(n, 6);
  record.dests.forEach((dest, i) => bytes.writeUInt32LE(dest, 8 + 4 * i));
  bytes.writeUInt32LE(record.payload.length, 8 + 4 * n);
  record.payload.copy(bytes, 12 + 4 * n);
  return bytes;
}

/** Every record of a batch, payloads copied (so they outlive the batch's buffer). */
export function readRecords(bytes: Buffer): TupleRecord[] {
  const reader = new TupleReader(bytes);
  const records: TupleRecord[] = [];
  while (reader.next()) {
    const dests = Array.from({ length: reader.destCount }, (_, i) => reader.dest(i));
    records.push(tupleRecord(reader.srcTask, reader.stream, dests, Buffer.from(reader.payload())));
  }
  return records;
}

/** The body of one complete frame (length prefix included), decoded like a connection does. */
export function decodeFrame(frame: Buffer): unknown {
  const bodies = new FrameDecoder().push(frame);
  assert.equal(bodies.length, 1, "exactly one frame");
  return decodeBody(bodies[0]!);
}

/** Checks a decoded body is the tuple frame [type, Buffer] and returns its records buffer. */
export function tupleFrameRecords(body: unknown, type: TupleFrameType): Buffer {
  assert.ok(Array.isArray(body), `expected a tuple frame, got ${typeof body}`);
  assert.equal(body.length, 2, "a tuple frame is [type, records]");
  assert.equal(body[0], type, "tuple frame type");
  assert.ok(Buffer.isBuffer(body[1]), "records are a Buffer");
  return body[1];
}

/** The records buffer of a tuple frame holding `records`, as a receiver gets it off the wire. */
export function recordBytes(type: TupleFrameType, records: readonly TupleRecord[]): Buffer {
  const writer = new TupleWriter(type);
  for (const record of records) append(writer, record);
  return tupleFrameRecords(decodeFrame(writer.finish()), type);
}

/** A TupleWriter that counts the calls made to it. */
class CountingWriter extends TupleWriter {
  appendCalls = 0;
  appendRecordsCalls = 0;

  override append(...args: Parameters<TupleWriter["append"]>): void {
    this.appendCalls++;
    super.append(...args);
  }

  override appendRecords(...args: Parameters<TupleWriter["appendRecords"]>): void {
    this.appendRecordsCalls++;
    super.appendRecords(...args);
  }
}

/**
 * An Outlet over real TupleWriters, sealing its open batch when the type changes like a
 * Connection does. It checks what a Connection relies on: no empty batch is ever sealed, a
 * batch's count is the number of records it holds, and queued() follows the appends.
 */
export class RecordingOutlet implements Outlet {
  readonly frames: Buffer[] = [];
  queuedCalls = 0;
  private sealedAppendCalls = 0;
  private sealedAppendRecordsCalls = 0;
  private writer: CountingWriter | undefined;
  private sealedCount = 0;
  private countAtQueued = 0;

  tuples(type: TupleFrameType): TupleWriter {
    if (this.writer === undefined || this.writer.type !== type) {
      this.seal();
      this.writer = new CountingWriter(type);
    }
    return this.writer;
  }

  queued(): void {
    this.queuedCalls++;
    this.countAtQueued = this.total;
  }

  /** Calls of append() on this outlet's writers (a record at a time). */
  get appendCalls(): number {
    return this.sealedAppendCalls + (this.writer?.appendCalls ?? 0);
  }

  /** Calls of appendRecords() on this outlet's writers (whole records copied). */
  get appendRecordsCalls(): number {
    return this.sealedAppendRecordsCalls + (this.writer?.appendRecordsCalls ?? 0);
  }

  /** Records appended since the last queued() call. */
  get unqueued(): number {
    return this.total - this.countAtQueued;
  }

  /** Every record given to this outlet, in order; they must all be of `type`. */
  records(type: TupleFrameType): TupleRecord[] {
    return readRecords(this.bytes(type));
  }

  /** The records bytes of every batch given to this outlet, concatenated; all of `type`. */
  bytes(type: TupleFrameType): Buffer {
    this.seal();
    return Buffer.concat(this.frames.map((frame) => tupleFrameRecords(decodeFrame(frame), type)));
  }

  private get total(): number {
    return this.sealedCount + (this.writer?.count ?? 0);
  }

  private seal(): void {
    const writer = this.writer;
    if (writer === undefined) return;
    assert.ok(writer.count > 0, "an empty tuple batch was opened (it would be FRAME_INVALID)");
    const frame = writer.finish();
    const held = readRecords(tupleFrameRecords(decodeFrame(frame), writer.type)).length;
    assert.equal(writer.count, held, "the batch's count is the number of records it holds");
    this.sealedCount += writer.count;
    this.sealedAppendCalls += writer.appendCalls;
    this.sealedAppendRecordsCalls += writer.appendRecordsCalls;
    this.frames.push(frame);
    this.writer = undefined;
  }
}

export function isWireError(code: WireErrorCode, pattern?: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof WireError, `expected a WireError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    return true;
  };
}
