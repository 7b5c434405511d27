/**
 * Helpers for the binary tuple records of tuple frames (src/platform/wire/tuples.ts): plain
 * record values, writing them with a real TupleWriter and reading them back with TupleReader.
 */
import assert from "node:assert/strict";
import type { Outlet } from "../../../src/platform/stmgr/router.js";
import { WireError, type WireErrorCode } from "../../../src/platform/wire/errors.js";
import { decodeBody, FrameDecoder } from "../../../src/platform/wire/frames.js";
import {
  DELIVER,
  EMIT,
  FORWARD,
  TupleReader,
  TupleWriter,
  type TupleFrameType,
} from "../../../src/platform/wire/tuples.js";

/**
 * One record as a plain value: EMIT has stream, dests, payload; FORWARD adds srcTask; DELIVER
 * has srcTask, stream, payload (no dests). Absent fields are absent, not undefined, so records
 * compare with deepEqual.
 */
export interface TupleRecord {
  srcTask?: number;
  stream: number;
  dests?: number[];
  payload: Buffer;
}

export const emitRecord = (stream: number, dests: number[], payload: Buffer): TupleRecord => ({
  stream,
  dests,
  payload,
});

export const forwardRecord = (
  srcTask: number,
  stream: number,
  dests: number[],
  payload: Buffer,
): TupleRecord => ({ srcTask, stream, dests, payload });

export const deliverRecord = (srcTask: number, stream: number, payload: Buffer): TupleRecord => ({
  srcTask,
  stream,
  payload,
});

/** Appends a record with the writer method of the writer's type. */
export function append(writer: TupleWriter, record: TupleRecord): void {
  switch (writer.type) {
    case EMIT:
      writer.emit(record.stream, record.dests!, record.payload);
      return;
    case FORWARD:
      writer.forward(record.srcTask!, record.stream, record.dests!, record.payload);
      return;
    case DELIVER:
      writer.deliver(record.srcTask!, record.stream, record.payload);
      return;
  }
}

/** Every record of a batch, payloads copied (so they outlive the batch's buffer). */
export function readRecords(type: TupleFrameType, bytes: Buffer): TupleRecord[] {
  const reader = new TupleReader(type, bytes);
  const records: TupleRecord[] = [];
  while (reader.next()) {
    const payload = Buffer.from(reader.payload());
    if (type === DELIVER) {
      records.push(deliverRecord(reader.srcTask, reader.stream, payload));
      continue;
    }
    const dests = Array.from({ length: reader.destCount }, (_, i) => reader.dest(i));
    records.push(
      type === EMIT
        ? emitRecord(reader.stream, dests, payload)
        : forwardRecord(reader.srcTask, reader.stream, dests, payload),
    );
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

/**
 * An Outlet over real TupleWriters, sealing its open batch when the type changes like a
 * Connection does. It checks what a Connection relies on: no empty batch is ever sealed, and
 * queued() follows the appends.
 */
export class RecordingOutlet implements Outlet {
  readonly frames: Buffer[] = [];
  queuedCalls = 0;
  private writer: TupleWriter | undefined;
  private sealedCount = 0;
  private countAtQueued = 0;

  tuples(type: TupleFrameType): TupleWriter {
    if (this.writer === undefined || this.writer.type !== type) {
      this.seal();
      this.writer = new TupleWriter(type);
    }
    return this.writer;
  }

  queued(): void {
    this.queuedCalls++;
    this.countAtQueued = this.total;
  }

  /** Records appended since the last queued() call. */
  get unqueued(): number {
    return this.total - this.countAtQueued;
  }

  /** Every record given to this outlet, in order; they must all be of `type`. */
  records(type: TupleFrameType): TupleRecord[] {
    this.seal();
    return this.frames.flatMap((frame) =>
      readRecords(type, tupleFrameRecords(decodeFrame(frame), type)),
    );
  }

  private get total(): number {
    return this.sealedCount + (this.writer?.count ?? 0);
  }

  private seal(): void {
    if (this.writer === undefined) return;
    assert.ok(this.writer.count > 0, "an empty tuple batch was opened (it would be FRAME_INVALID)");
    this.sealedCount += this.writer.count;
    this.frames.push(this.writer.finish());
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
