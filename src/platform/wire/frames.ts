/**
 * The one frame codec of every platform link: a 4-byte big-endian body length, then a
 * msgpack-encoded body. The decoder is a pure state machine fed with chunks as they arrive;
 * it enforces the frame size limit before buffering a body.
 */
import { C1, Packr, Unpackr } from "msgpackr";
import { WireError } from "./errors.js";

/**
 * The largest frame of an authenticated platform link: the largest message (a tuple, or a turn's
 * tuples) the platform carries. Large because a tuple may hold a whole group checkpoint.
 */
export const DEFAULT_MAX_FRAME_BYTES = 256 * 1024 * 1024;
/** The largest frame before a peer has authenticated: handshake messages are tiny. */
export const HANDSHAKE_MAX_FRAME_BYTES = 64 * 1024;
const HEADER_BYTES = 4;

const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export function encodeFrame(body: unknown): Buffer {
  const payload = packr.pack(body);
  const frame = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  payload.copy(frame, HEADER_BYTES);
  return frame;
}

/** Decodes one body; anything but exactly one well-formed msgpack value is malformed. */
export function decodeBody(body: Uint8Array): unknown {
  try {
    // unpack rejects trailing bytes after the first value.
    const value: unknown = unpackr.unpack(body);
    if (value === C1) throw new Error("the never-used byte 0xc1");
    return value;
  } catch (error) {
    throw new WireError("FRAME_MALFORMED", `undecodable frame body: ${(error as Error).message}`);
  }
}

export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /** The size limit may be raised (e.g. once a peer has authenticated). */
  constructor(public maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {}

  /** Bytes received but not yet returned as a frame body. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /** Feeds bytes; returns the complete frame bodies they finish. Throws WireError. */
  push(chunk: Buffer): Buffer[] {
    this.feed(chunk);
    const bodies: Buffer[] = [];
    for (let body = this.next(); body !== undefined; body = this.next()) bodies.push(body);
    return bodies;
  }

  /** Feeds bytes without taking frames out (see `next`). */
  feed(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /**
   * The next complete frame body, if there is one. One at a time, so that a caller may raise
   * the limit between two frames of the same chunk. Throws WireError.
   */
  next(): Buffer | undefined {
    if (this.buffered < HEADER_BYTES) return undefined;
    const head = this.peekHeader();
    if (head === 0) throw new WireError("FRAME_EMPTY", "zero-length frame");
    if (head > this.maxFrameBytes) {
      throw new WireError(
        "FRAME_TOO_LARGE",
        `frame of ${head} bytes exceeds the limit of ${this.maxFrameBytes}`,
      );
    }
    if (this.buffered < HEADER_BYTES + head) return undefined;
    this.consume(HEADER_BYTES);
    return this.consume(head);
  }

  private peekHeader(): number {
    const first = this.chunks[0]!;
    if (first.length >= HEADER_BYTES) return first.readUInt32BE(0);
    this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.readUInt32BE(0);
  }

  /** Removes n bytes from the front; a view into the chunk when it lies in one. */
  private consume(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0]!;
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    const out = Buffer.allocUnsafe(n);
    let offset = 0;
    while (offset < n) {
      const chunk = this.chunks[0]!;
      const take = Math.min(chunk.length, n - offset);
      chunk.copy(out, offset, 0, take);
      offset += take;
      if (take === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(take);
    }
    return out;
  }
}
