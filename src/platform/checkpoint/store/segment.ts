/**
 * Delta segments of the fs store: files named `<first live id>.<seq>.log` (ids padded to 20
 * digits, the sequence number to 10), each a run of entries in the format of format.ts, written
 * back to back in increasing id order. The entry header holds its length, so a segment is
 * self-delimiting; this module finds the entries in one without reading their payloads.
 *
 * The first id of the name is the lowest live id: entries below it were pruned (a rename is all
 * pruning a prefix takes). The sequence number orders segments by creation, so that of two copies
 * of an entry the newer one wins.
 */
import { crc32c, FORMAT_VERSION } from "./format.js";

// The header layout of format.ts, read here only to find where entries start and end: the
// payload and every header field are checked again by `decodeEntry` when an entry is read.
const MAGIC = Uint8Array.of(0x54, 0x43, 0x4b, 0x50); // "TCKP"
const FIXED_HEADER = 32;
const HEADER_CRC = 4;
/** Owner names are at most this long (format.ts): a longer one is a corrupt length field. */
const MAX_NAME_BYTES = 255;
const DEFAULT_CHUNK_BYTES = 1024 * 1024;

export interface SegmentName {
  /** The lowest id still live in the segment (the first id it was created with, or above). */
  readonly liveFrom: number;
  /** Creation order among the owner's segments. */
  readonly seq: number;
}

export function segmentName(liveFrom: number, seq: number): string {
  return `${String(liveFrom).padStart(20, "0")}.${String(seq).padStart(10, "0")}.log`;
}

/** The segment a file name stands for, or undefined for a name that is not a segment's. */
export function parseSegmentName(name: string): SegmentName | undefined {
  const match = /^(\d{20})\.(\d{10})\.log$/.exec(name);
  if (!match) return undefined;
  const liveFrom = Number(match[1]);
  if (!Number.isSafeInteger(liveFrom)) return undefined;
  return { liveFrom, seq: Number(match[2]) };
}

/**
 * Where one entry of a segment lies. `problem` is set only on the last one listed: an entry the
 * segment ends inside of (a torn append), or unreadable bytes (`id` then is the id the entry
 * there would have had: one above the previous entry's, or the segment's first live id).
 */
export interface ScannedEntry {
  readonly id: number;
  readonly offset: number;
  /** The entry's bytes; for a problem, the bytes from `offset` to the end of the segment. */
  readonly length: number;
  readonly problem?: string;
}

export interface SegmentSource {
  readonly size: number;
  /** Up to `length` bytes at `position` (fewer only at the end of the file). */
  read(position: number, length: number): Promise<Uint8Array>;
}

/**
 * The live entries of a segment (ids from `liveFrom` on), in file order. Scanning stops at the
 * first entry whose header is not intact: its length cannot be believed, so nothing after it in
 * this segment can be located. That spot is listed with a problem, so that a reader sees an
 * entry there that it cannot use rather than a silent gap.
 */
export async function scanSegment(
  source: SegmentSource,
  liveFrom: number,
  chunkBytes = DEFAULT_CHUNK_BYTES,
): Promise<ScannedEntry[]> {
  const { size } = source;
  let window: Uint8Array = new Uint8Array(0);
  let windowAt = 0;
  const bytesAt = async (offset: number, length: number): Promise<Uint8Array> => {
    const end = Math.min(offset + length, size);
    if (offset < windowAt || end > windowAt + window.length) {
      // Read ahead: small entries' headers then come from one read.
      window = await source.read(
        offset,
        Math.max(end - offset, Math.min(chunkBytes, size - offset)),
      );
      windowAt = offset;
    }
    return window.subarray(offset - windowAt, Math.min(end, windowAt + window.length) - windowAt);
  };

  const entries: ScannedEntry[] = [];
  let previous = -1;
  const stop = (offset: number, problem: string): ScannedEntry[] => {
    entries.push({ id: Math.max(liveFrom, previous + 1), offset, length: size - offset, problem });
    return entries;
  };
  const unreadable = (offset: number, what: string) =>
    stop(
      offset,
      `unreadable entry header at offset ${offset} (${what}): the entries after it in this ` +
        `segment cannot be located`,
    );
  const torn = (offset: number, what: string) =>
    stop(offset, `torn tail at offset ${offset}: ${what} (an append that never completed)`);

  for (let offset = 0; offset < size;) {
    const fixed = await bytesAt(offset, FIXED_HEADER);
    if (!MAGIC.every((byte, i) => i >= fixed.length || fixed[i] === byte)) {
      return unreadable(offset, "bad magic");
    }
    if (fixed.length < FIXED_HEADER) {
      return torn(offset, `the segment ends ${fixed.length} bytes into an entry header`);
    }
    const fixedView = new DataView(fixed.buffer, fixed.byteOffset, fixed.byteLength);
    const version = fixedView.getUint8(4);
    if (version !== FORMAT_VERSION) return unreadable(offset, `format version ${version}`);
    const topologyLength = fixedView.getUint16(28);
    const stageLength = fixedView.getUint16(30);
    if (topologyLength > MAX_NAME_BYTES || stageLength > MAX_NAME_BYTES) {
      return unreadable(offset, "owner name lengths out of range");
    }
    const headerLength = FIXED_HEADER + topologyLength + stageLength + HEADER_CRC;
    const header = await bytesAt(offset, headerLength);
    if (header.length < headerLength) {
      return torn(offset, `the segment ends ${header.length} bytes into an entry header`);
    }
    const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
    const crcAt = headerLength - HEADER_CRC;
    if (crc32c(header.subarray(0, crcAt)) !== view.getUint32(crcAt)) {
      return unreadable(offset, "header checksum mismatch");
    }
    const id = view.getBigUint64(8);
    if (id > BigInt(Number.MAX_SAFE_INTEGER)) return unreadable(offset, `id ${id} out of range`);
    if (Number(id) <= previous) {
      return unreadable(offset, `id ${id} after id ${previous}: ids must increase`);
    }
    previous = Number(id);
    const payloadLength = view.getUint32(20);
    const end = offset + headerLength + payloadLength;
    if (end > size) {
      // A torn entry below liveFrom was pruned along with the rest of the prefix.
      if (previous < liveFrom) return entries;
      entries.push({
        id: previous,
        offset,
        length: size - offset,
        problem:
          `torn tail at offset ${offset}: the segment ends ${size - offset - headerLength} ` +
          `bytes into the entry's ${payloadLength}-byte payload (an append that never completed)`,
      });
      return entries;
    }
    if (previous >= liveFrom) entries.push({ id: previous, offset, length: end - offset });
    offset = end;
  }
  return entries;
}
