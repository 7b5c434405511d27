/**
 * Tuple batches: the body of the tuple frames (EMIT, FORWARD, DELIVER) is the msgpack array
 * [type, bin] where bin holds every tuple a process sends one peer in one event-loop turn as
 * binary records, all of one layout (little-endian):
 *
 *   srcTask u32, stream u16, destCount u16, dest u32 × destCount, payloadLength u32, payload
 *
 * EMIT: an instance's tuples with their destination tasks. FORWARD: tuples for the peer's
 * tasks among `dest`. DELIVER: tuples for the one task `dest`. `stream` is the index of the
 * stream in the emitting stage's declared outputs. One layout for all three lets a stream
 * manager pass a record on unchanged when it has one destination, and copy runs of such
 * records at once: it reads headers, never tuples.
 */
import { WireError } from "./errors.js";

export const EMIT = 1;
export const FORWARD = 2;
export const DELIVER = 3;
export type TupleFrameType = typeof EMIT | typeof FORWARD | typeof DELIVER;

/** Frame length (4), msgpack fixarray(2) (1), fixint type (1), bin32 marker (1) and length (4). */
export const FRAME_HEADER_BYTES = 11;
const INITIAL_BYTES = 16 * 1024;

/** Builds one tuple frame in place: the frame header is reserved at the front. */
export class TupleWriter {
  private buffer: Buffer;
  private length = FRAME_HEADER_BYTES;
  count = 0;

  /**
   * @param expectedBytes a guess of the frame's size (e.g. the last one's), saves regrowth
   * @param reuse a buffer to write into instead of a new one
   */
  constructor(
    readonly type: TupleFrameType,
    expectedBytes = INITIAL_BYTES,
    reuse?: Buffer,
  ) {
    this.buffer = reuse ?? Buffer.allocUnsafe(Math.max(INITIAL_BYTES, expectedBytes));
  }

  get byteLength(): number {
    return this.length;
  }

  /** Appends one record whose payload is bytes [start, end) of `source`. */
  append(
    srcTask: number,
    stream: number,
    dests: number | readonly number[],
    source: Uint8Array,
    start = 0,
    end = source.length,
  ): void {
    const n = typeof dests === "number" ? 1 : dests.length;
    // (0 is written as given: readers reject it.)
    if (n > 0xffff) throw new RangeError(`a tuple has at most 65535 destinations, got ${n}`);
    this.reserve(12 + 4 * n + end - start);
    this.u32(srcTask);
    this.u16(stream);
    this.u16(n);
    if (typeof dests === "number") this.u32(dests);
    else for (const dest of dests) this.u32(dest);
    this.u32(end - start);
    this.copy(source, start, end);
    this.count++;
  }

  /** Appends `records` whole records that are bytes [start, end) of `source`, unchanged. */
  appendRecords(source: Buffer, start: number, end: number, records: number): void {
    this.reserve(end - start);
    this.copy(source, start, end);
    this.count += records;
  }

  /** The finished frame (length prefix included); the writer must not be used afterwards. */
  finish(): Buffer {
    const frame = this.buffer.subarray(0, this.length);
    frame.writeUInt32BE(this.length - 4, 0);
    frame[4] = 0x92; // msgpack fixarray of 2
    frame[5] = this.type; // msgpack positive fixint
    frame[6] = 0xc6; // msgpack bin 32
    frame.writeUInt32BE(this.length - FRAME_HEADER_BYTES, 7);
    return frame;
  }

  // Measured: set() of a whole array, Buffer.copy() of a range; a view per tuple costs more.
  private copy(source: Uint8Array, start: number, end: number): void {
    if (start === 0 && end === source.length) this.buffer.set(source, this.length);
    else if (Buffer.isBuffer(source)) source.copy(this.buffer, this.length, start, end);
    else this.buffer.set(source.subarray(start, end), this.length);
    this.length += end - start;
  }

  // Plain byte stores: cheaper than the bounds-checked Buffer writers, and reserve() already
  // guaranteed the room.
  private u16(value: number): void {
    const b = this.buffer;
    const at = this.length;
    b[at] = value;
    b[at + 1] = value >>> 8;
    this.length = at + 2;
  }

  private u32(value: number): void {
    const b = this.buffer;
    const at = this.length;
    b[at] = value;
    b[at + 1] = value >>> 8;
    b[at + 2] = value >>> 16;
    b[at + 3] = value >>> 24;
    this.length = at + 4;
  }

  private reserve(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + bytes));
    this.buffer.copy(grown, 0, 0, this.length);
    this.buffer = grown;
  }
}

/**
 * Reads the records of one tuple batch: call next() until it returns false, reading the
 * fields of the current record in between. Truncated records, and records without a
 * destination, are FRAME_MALFORMED.
 */
export class TupleReader {
  srcTask = 0;
  stream = 0;
  destCount = 0;
  /** The current record is bytes[recordStart, payloadEnd); its payload [payloadStart, payloadEnd). */
  recordStart = 0;
  payloadStart = 0;
  payloadEnd = 0;
  private destsAt = 0;
  private position = 0;

  constructor(readonly bytes: Buffer) {}

  next(): boolean {
    if (this.position === this.bytes.length) return false;
    this.recordStart = this.position;
    this.srcTask = this.u32();
    this.stream = this.u16();
    this.destCount = this.u16();
    if (this.destCount === 0) throw new WireError("FRAME_MALFORMED", "a tuple with no destination");
    this.destsAt = this.position;
    this.skip(4 * this.destCount);
    const length = this.u32();
    this.payloadStart = this.position;
    this.skip(length);
    this.payloadEnd = this.position;
    return true;
  }

  dest(i: number): number {
    const b = this.bytes;
    const at = this.destsAt + 4 * i;
    return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x1000000;
  }

  /** A view of the current payload (valid while the frame is). */
  payload(): Buffer {
    return this.bytes.subarray(this.payloadStart, this.payloadEnd);
  }

  private u16(): number {
    this.need(2);
    const b = this.bytes;
    const at = this.position;
    this.position = at + 2;
    return b[at]! | (b[at + 1]! << 8);
  }

  private u32(): number {
    this.need(4);
    const b = this.bytes;
    const at = this.position;
    this.position = at + 4;
    return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x1000000;
  }

  private skip(n: number): void {
    this.need(n);
    this.position += n;
  }

  private need(n: number): void {
    if (this.position + n > this.bytes.length) {
      throw new WireError("FRAME_MALFORMED", "truncated tuple record");
    }
  }
}
