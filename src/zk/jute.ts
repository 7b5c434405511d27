/**
 * Jute, ZooKeeper's binary archive (../shared/ZOOKEEPER.md section 2): big-endian ints and
 * longs, one-byte booleans, length-prefixed buffers, strings and vectors where length -1 means
 * null. Frames are a 4-byte big-endian length followed by the record bytes.
 */

/** Bytes that do not decode: truncated, a negative length other than -1, or a length too long. */
export class JuteError extends Error {
  override readonly name = "JuteError";
}

const TWO_32 = 4294967296;

export class JuteReader {
  private pos = 0;

  constructor(private readonly bytes: Buffer) {}

  /** Bytes not read yet. */
  get remaining(): number {
    return this.bytes.length - this.pos;
  }

  int(): number {
    const b = this.bytes;
    const p = this.take(4);
    return (b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!;
  }

  long(): bigint {
    return this.bytes.readBigInt64BE(this.take(8));
  }

  /** A long as a JS number; a value beyond ±(2^53 - 1) is a JuteError. */
  safeLong(): number {
    const high = this.int();
    // high * 2^32 is exact; a sum beyond 2^53 rounds to a value that is not a safe integer.
    const value = high * TWO_32 + (this.int() >>> 0);
    if (!Number.isSafeInteger(value)) {
      throw new JuteError(`long ${this.bytes.readBigInt64BE(this.pos - 8)} beyond 2^53`);
    }
    return value;
  }

  /** Like ZooKeeper's readBool: any non-zero byte is true. */
  bool(): boolean {
    return this.bytes[this.take(1)] !== 0;
  }

  /** A copy with its own memory (not a view of the input), so it may be kept; null for -1. */
  buffer(): Buffer | null {
    const length = this.length();
    if (length < 0) return null;
    const start = this.take(length);
    const copy = Buffer.allocUnsafeSlow(length);
    this.bytes.copy(copy, 0, start, start + length);
    return copy;
  }

  /** UTF-8 text (invalid sequences become U+FFFD, as in Java); null for -1. */
  ustring(): string | null {
    const length = this.length();
    if (length < 0) return null;
    const start = this.take(length);
    return this.bytes.toString("utf8", start, start + length);
  }

  /** A vector; null for -1. Every element takes at least one byte, which bounds the count. */
  vector<T>(readItem: (r: JuteReader) => T): T[] | null {
    const count = this.length();
    if (count < 0) return null;
    const items: T[] = [];
    for (let i = 0; i < count; i++) items.push(readItem(this));
    return items;
  }

  /** A length or count: -1 (null), or at most the bytes that remain after it. */
  private length(): number {
    const length = this.int();
    if (length === -1) return -1;
    if (length < 0 || length > this.remaining) {
      throw new JuteError(`length ${length} with ${this.remaining} bytes left`);
    }
    return length;
  }

  /** Claims n bytes and returns where they start. */
  private take(n: number): number {
    const p = this.pos;
    if (p + n > this.bytes.length) {
      throw new JuteError(`truncated: ${n} bytes wanted, ${this.bytes.length - p} left`);
    }
    this.pos = p + n;
    return p;
  }
}

/**
 * A growable output buffer. The first 4 bytes are reserved for the frame length, so `frame()`
 * needs no copy. `toBuffer()` and `frame()` return views of the writer's memory.
 */
export class JuteWriter {
  private bytes: Buffer;
  private pos = 4;

  constructor(capacity = 256) {
    this.bytes = Buffer.allocUnsafe(Math.max(capacity, 16));
  }

  /** Takes the low 32 bits of `value`. */
  int(value: number): this {
    this.put32(this.claim(4), value);
    return this;
  }

  /** A number must be a safe integer (zxids, times and session ids stay below 2^53). */
  long(value: number | bigint): this {
    if (typeof value === "bigint") {
      const p = this.claim(8);
      this.bytes.writeBigInt64BE(value, p);
      return this;
    }
    if (!Number.isSafeInteger(value)) throw new RangeError(`long ${value} is not a safe integer`);
    const high = Math.floor(value / TWO_32);
    return this.int(high).int(value - high * TWO_32);
  }

  bool(value: boolean): this {
    const p = this.claim(1);
    this.bytes[p] = value ? 1 : 0;
    return this;
  }

  buffer(value: Uint8Array | null): this {
    if (value === null) return this.int(-1);
    this.int(value.length);
    const p = this.claim(value.length);
    this.bytes.set(value, p);
    return this;
  }

  ustring(value: string | null): this {
    if (value === null) return this.int(-1);
    const n = value.length;
    // UTF-8 takes at most 3 bytes per UTF-16 unit (a surrogate pair: 4 bytes for 2 units).
    const start = this.claim(4 + 3 * n) + 4;
    const b = this.bytes;
    let length = 0;
    // Paths are short and ASCII: copying them by hand beats a native call.
    if (n <= 64) {
      while (length < n) {
        const c = value.charCodeAt(length);
        if (c >= 0x80) break;
        b[start + length++] = c;
      }
    }
    if (length < n) length = b.write(value, start, "utf8");
    this.pos = start + length;
    this.put32(start - 4, length);
    return this;
  }

  /** A vector; null writes -1. */
  vector<T>(items: readonly T[] | null, writeItem: (w: JuteWriter, item: T) => void): this {
    if (items === null) return this.int(-1);
    this.int(items.length);
    for (const item of items) writeItem(this, item);
    return this;
  }

  /** The record bytes written so far. */
  toBuffer(): Buffer {
    return this.bytes.subarray(4, this.pos);
  }

  /** The record bytes after their 4-byte big-endian length. */
  frame(): Buffer {
    this.put32(0, this.pos - 4);
    return this.pos === this.bytes.length ? this.bytes : this.bytes.subarray(0, this.pos);
  }

  private put32(p: number, value: number): void {
    const b = this.bytes;
    b[p] = value >>> 24;
    b[p + 1] = value >>> 16;
    b[p + 2] = value >>> 8;
    b[p + 3] = value;
  }

  /** Makes room for n bytes and returns where they start; may replace `bytes`, so call it first. */
  private claim(n: number): number {
    const p = this.pos;
    const needed = p + n;
    if (needed > this.bytes.length) {
      const grown = Buffer.allocUnsafe(Math.max(needed, this.bytes.length * 2));
      this.bytes.copy(grown, 0, 0, p);
      this.bytes = grown;
    }
    this.pos = needed;
    return p;
  }
}
