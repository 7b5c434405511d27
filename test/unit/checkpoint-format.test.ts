import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  compareRefs,
  crc32c,
  decodeEntry,
  encodeEntry,
  entryName,
  parseEntryName,
} from "../../src/platform/checkpoint/store/format.js";
import {
  parseSegmentName,
  scanSegment,
  segmentName,
  type ScannedEntry,
} from "../../src/platform/checkpoint/store/segment.js";
import {
  CheckpointRejected,
  type CheckpointOwner,
  type EntryRef,
} from "../../src/platform/checkpoint/store/store.js";
import { int, randomBytes, withSeed } from "./helpers/random.js";

const owner: CheckpointOwner = { topology: "orders", stage: "tally", replica: 2 };
const ref: EntryRef = { owner, id: 42, kind: "base" };
const payload = Buffer.from("the state of replica two, as of checkpoint 42");
/** Fixed header 32 bytes + "orders" + "tally" + header CRC. */
const headerLength = 32 + 6 + 5 + 4;

function rejects(reason: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof CheckpointRejected, `expected CheckpointRejected, got ${error}`);
    assert.match(error.reason, reason);
    assert.equal(error.ref, ref);
    return true;
  };
}

function flipped(bytes: Uint8Array, at: number, mask = 0x01): Uint8Array {
  const copy = Uint8Array.from(bytes);
  copy[at]! ^= mask;
  return copy;
}

/** Rewrites the header CRC so that a deliberately changed header field is believed. */
function resealed(bytes: Uint8Array): Uint8Array {
  const copy = Uint8Array.from(bytes);
  const crcAt = headerLength - 4;
  new DataView(copy.buffer).setUint32(crcAt, crc32c(copy.subarray(0, crcAt)));
  return copy;
}

describe("checkpoint entry format", () => {
  it("uses CRC32C (Castagnoli)", () => {
    assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283);
    const view = new Uint8Array(Buffer.from("xx123456789yy")).subarray(2, 11);
    assert.equal(crc32c(view), 0xe3069283, "a view into a larger buffer: only its bytes");
  });

  it("round-trips payloads, owners and ids", () => {
    const cases: [EntryRef, Uint8Array][] = [
      [ref, payload],
      [{ owner, id: 0, kind: "delta" }, new Uint8Array(0)],
      [
        { owner: { topology: "t", stage: "s", replica: "group" }, id: 2 ** 53 - 1, kind: "base" },
        Buffer.from([0, 255, 0]),
      ],
      [
        { owner: { topology: "топология", stage: "étape", replica: 0 }, id: 7, kind: "delta" },
        payload,
      ],
    ];
    for (const [entryRef, data] of cases) {
      const bytes = encodeEntry(entryRef, data);
      assert.deepEqual(Buffer.from(decodeEntry(entryRef, bytes)), Buffer.from(data));
    }
    withSeed("random payloads", (random) => {
      for (let i = 0; i < 20; i++) {
        const data = randomBytes(random, int(random, 0, 200_000));
        const entryRef: EntryRef = { owner, id: int(random, 0, 2 ** 40), kind: "delta" };
        assert.deepEqual(Buffer.from(decodeEntry(entryRef, encodeEntry(entryRef, data))), data);
      }
    });
  });

  it("lays out the header as documented", () => {
    const bytes = encodeEntry(ref, payload);
    assert.equal(bytes.length, headerLength + payload.length);
    assert.equal(Buffer.from(bytes.subarray(0, 4)).toString("latin1"), "TCKP");
    const view = new DataView(bytes.buffer);
    assert.equal(view.getUint8(4), 1, "version");
    assert.equal(view.getBigUint64(8), 42n, "id");
    assert.equal(view.getUint32(16), 2, "replica");
    assert.equal(view.getUint32(20), payload.length, "payload length");
    assert.equal(view.getUint32(24), crc32c(payload), "payload CRC");
  });

  it("rejects a flipped payload byte", () => {
    const bytes = encodeEntry(ref, payload);
    withSeed("payload flips", (random) => {
      for (let i = 0; i < 50; i++) {
        const at = int(random, headerLength, bytes.length - 1);
        const mask = 1 << int(random, 0, 7);
        assert.throws(
          () => decodeEntry(ref, flipped(bytes, at, mask)),
          rejects(/payload checksum mismatch/),
        );
      }
    });
  });

  it("rejects every flipped header byte, naming the field when it can", () => {
    const bytes = encodeEntry(ref, payload);
    assert.throws(() => decodeEntry(ref, flipped(bytes, 0)), rejects(/bad magic/));
    assert.throws(() => decodeEntry(ref, flipped(bytes, 3)), rejects(/bad magic/));
    assert.throws(
      () => decodeEntry(ref, flipped(bytes, 4)),
      rejects(/unsupported format version 0/),
    );
    for (const [field, at] of [
      ["kind", 5],
      ["reserved", 7],
      ["id", 15],
      ["replica", 19],
      ["payload length", 23],
      ["payload CRC", 24],
      ["topology", 33],
      ["stage", 40],
      ["header CRC", headerLength - 1],
    ] as const) {
      assert.throws(
        () => decodeEntry(ref, flipped(bytes, at)),
        rejects(/header checksum mismatch/),
        `${field} byte ${at}`,
      );
    }
    for (let at = 0; at < headerLength; at++) {
      for (let bit = 0; bit < 8; bit++) {
        assert.throws(
          () => decodeEntry(ref, flipped(bytes, at, 1 << bit)),
          CheckpointRejected,
          `byte ${at} bit ${bit}`,
        );
      }
    }
    // A length field flipped high makes the header claim more bytes than there are.
    assert.throws(() => decodeEntry(ref, flipped(bytes, 28, 0x80)), rejects(/truncated header/));
  });

  it("rejects a truncated entry at every point", () => {
    const bytes = encodeEntry(ref, payload);
    for (const length of [0, 3, 4, 20, 31]) {
      assert.throws(
        () => decodeEntry(ref, bytes.subarray(0, length)),
        rejects(/truncated header: \d+ bytes, the fixed header has 32/),
        `${length} bytes`,
      );
    }
    for (const length of [32, 40, headerLength - 1]) {
      assert.throws(
        () => decodeEntry(ref, bytes.subarray(0, length)),
        rejects(new RegExp(`truncated header: ${length} bytes, the header has ${headerLength}`)),
      );
    }
    for (const length of [headerLength, headerLength + 1, bytes.length - 1]) {
      const kept = length - headerLength;
      assert.throws(
        () => decodeEntry(ref, bytes.subarray(0, length)),
        rejects(new RegExp(`truncated payload: ${kept} of ${payload.length} bytes`)),
      );
    }
  });

  it("rejects trailing bytes", () => {
    const bytes = encodeEntry(ref, payload);
    const longer = Buffer.concat([bytes, Buffer.from([0, 0, 7])]);
    assert.throws(() => decodeEntry(ref, longer), rejects(/3 trailing bytes after the payload/));
  });

  it("rejects an entry stored under another ref", () => {
    const bytes = encodeEntry(ref, payload);
    const others: EntryRef[] = [
      { owner, id: 43, kind: "base" },
      { owner, id: 42, kind: "delta" },
      { owner: { ...owner, topology: "other" }, id: 42, kind: "base" },
      { owner: { ...owner, stage: "other" }, id: 42, kind: "base" },
      { owner: { ...owner, replica: 3 }, id: 42, kind: "base" },
      { owner: { ...owner, replica: "group" }, id: 42, kind: "base" },
    ];
    for (const other of others) {
      assert.throws(
        () => decodeEntry(other, bytes),
        (error: unknown) =>
          error instanceof CheckpointRejected &&
          error.ref === other &&
          error.reason === "the entry holds orders/tally/2#42(base), not the requested one",
      );
    }
  });

  it("rejects versions and kinds it does not know, even with a valid header CRC", () => {
    const bytes = encodeEntry(ref, payload);
    const v2 = Uint8Array.from(bytes);
    v2[4] = 2;
    assert.throws(
      () => decodeEntry(ref, resealed(v2)),
      rejects(/unsupported format version 2 \(this build reads 1\)/),
    );
    const kind9 = Uint8Array.from(bytes);
    kind9[5] = 9;
    assert.throws(() => decodeEntry(ref, resealed(kind9)), rejects(/unknown entry kind code 9/));
    const reserved = Uint8Array.from(bytes);
    reserved[6] = 1;
    assert.throws(() => decodeEntry(ref, resealed(reserved)), rejects(/reserved header bits/));
  });

  it("refuses refs that cannot be stored", () => {
    const bad: EntryRef[] = [
      { owner: { ...owner, topology: "a/b" }, id: 1, kind: "base" },
      { owner: { ...owner, stage: ".." }, id: 1, kind: "base" },
      { owner: { ...owner, stage: "" }, id: 1, kind: "base" },
      { owner: { ...owner, replica: -1 }, id: 1, kind: "base" },
      { owner: { ...owner, replica: 1.5 }, id: 1, kind: "base" },
      { owner, id: -1, kind: "base" },
      { owner, id: 2 ** 53, kind: "base" },
    ];
    for (const entryRef of bad) {
      assert.throws(() => encodeEntry(entryRef, payload), TypeError, JSON.stringify(entryRef));
    }
  });

  it("names entries so that names sort by id, and parses only its own names", () => {
    const refs: EntryRef[] = [100, 9, 10].map((id) => ({ owner, id, kind: "delta" }));
    const names = refs.map(entryName).sort();
    assert.deepEqual(names, [
      "00000000000000000009.delta",
      "00000000000000000010.delta",
      "00000000000000000100.delta",
    ]);
    assert.deepEqual(parseEntryName(owner, "00000000000000000042.base"), ref);
    for (const foreign of [
      "42.base",
      "00000000000000000042.full",
      ".00000000000000000042.base.tmp-1",
      "x",
    ]) {
      assert.equal(parseEntryName(owner, foreign), undefined, foreign);
    }
    const unsorted: EntryRef[] = [
      { owner, id: 10, kind: "base" },
      { owner, id: 10, kind: "delta" },
      { owner, id: 9, kind: "delta" },
    ];
    const sorted = unsorted.sort(compareRefs);
    assert.deepEqual(
      sorted.map((r) => `${r.id}${r.kind}`),
      ["9delta", "10delta", "10base"],
    );
  });
});

describe("delta segments", () => {
  const delta = (id: number, length = 10): Uint8Array =>
    encodeEntry({ owner, id, kind: "delta" }, Buffer.alloc(length, id));
  /** Entries back to back, as a store appends them. */
  function segment(entries: Uint8Array[]): Buffer {
    return Buffer.concat(entries);
  }
  function scan(bytes: Uint8Array, liveFrom = 0, chunkBytes?: number): Promise<ScannedEntry[]> {
    const source = {
      size: bytes.length,
      read: async (position: number, length: number) =>
        bytes.subarray(position, Math.min(position + length, bytes.length)),
    };
    return scanSegment(source, liveFrom, chunkBytes);
  }
  const placed = (entries: Uint8Array[], ids: number[]) => {
    let offset = 0;
    return entries.map((bytes, i) => {
      const entry = { id: ids[i]!, offset, length: bytes.length };
      offset += bytes.length;
      return entry;
    });
  };

  it("names segments by first live id and sequence number, and parses only those names", () => {
    const name = segmentName(42, 7);
    assert.equal(name, "00000000000000000042.0000000007.log");
    assert.deepEqual(parseSegmentName(name), { liveFrom: 42, seq: 7 });
    for (const foreign of ["42.7.log", "00000000000000000042.base", `${name}.tmp-1`, "x.log"]) {
      assert.equal(parseSegmentName(foreign), undefined, foreign);
    }
    assert.ok(segmentName(9, 2) < segmentName(10, 1), "names sort by first id");
  });

  it("finds every entry, whatever the read size", async () => {
    const layouts: { bytes: Buffer; expected: ScannedEntry[] }[] = [];
    let seed = 0;
    withSeed("segment layouts", (random, used) => {
      seed = used;
      for (let round = 0; round < 20; round++) {
        const ids: number[] = [];
        for (let id = int(random, 0, 1000), n = int(random, 1, 30); ids.length < n;) {
          ids.push(id);
          id += int(random, 1, 3);
        }
        const entries = ids.map((id) => delta(id, int(random, 0, 3000)));
        layouts.push({ bytes: segment(entries), expected: placed(entries, ids) });
      }
    });
    for (const [round, { bytes, expected }] of layouts.entries()) {
      for (const chunk of [1, 7, 64, 4096, undefined]) {
        const found = await scan(bytes, 0, chunk);
        assert.deepEqual(found, expected, `TEST_SEED=${seed} round ${round} chunk ${chunk}`);
      }
    }
  });

  it("lists a torn tail under its id, cut anywhere", async () => {
    const entries = [delta(5), delta(6), delta(7, 100)];
    const bytes = segment(entries);
    const whole = placed(entries, [5, 6, 7]);
    const lastAt = whole[2]!.offset;
    for (let cut = lastAt + 1; cut < bytes.length; cut++) {
      const found = await scan(bytes.subarray(0, cut));
      assert.deepEqual(found.slice(0, 2), whole.slice(0, 2), `cut at ${cut}`);
      assert.equal(found.length, 3);
      assert.deepEqual(
        { ...found[2]!, problem: undefined },
        { id: 7, offset: lastAt, length: cut - lastAt, problem: undefined },
      );
      assert.match(found[2]!.problem!, /^torn tail at offset \d+: .*never completed/);
    }
    assert.deepEqual(await scan(bytes.subarray(0, lastAt)), whole.slice(0, 2));
    assert.deepEqual(await scan(bytes.subarray(0, 0), 5), []);
  });

  it("stops at a corrupt header: what follows cannot be located", async () => {
    const entries = [delta(1), delta(2), delta(3), delta(4)];
    const bytes = segment(entries);
    const whole = placed(entries, [1, 2, 3, 4]);
    for (const at of [0, 4, 9, 20, 28, headerLength - 1]) {
      const damaged = Buffer.from(bytes);
      damaged[whole[2]!.offset + at]! ^= 0x10;
      const found = await scan(damaged);
      assert.deepEqual(found.slice(0, 2), whole.slice(0, 2));
      assert.equal(found.length, 3, `byte ${at}`);
      assert.equal(found[2]!.id, 3, "the id the damaged entry would have");
      assert.equal(found[2]!.length, bytes.length - whole[2]!.offset);
      assert.match(found[2]!.problem!, /^unreadable entry header at offset \d+ \(.+\)/);
    }
    // A payload byte does not hide anything: the header still says where the next entry is.
    const payloadFlip = Buffer.from(bytes);
    payloadFlip[whole[3]!.offset - 1]! ^= 0x10;
    assert.deepEqual(await scan(payloadFlip), whole);
    // Zeros where an entry should be (a file extended before its data reached the disk).
    const zeros = Buffer.concat([bytes, Buffer.alloc(50)]);
    assert.match((await scan(zeros)).at(-1)!.problem!, /bad magic/);
    assert.equal((await scan(zeros)).at(-1)!.id, 5);
  });

  it("skips the pruned prefix below the first live id", async () => {
    const entries = [delta(1), delta(2), delta(3), delta(4)];
    const bytes = segment(entries);
    const whole = placed(entries, [1, 2, 3, 4]);
    assert.deepEqual(await scan(bytes, 3), whole.slice(2));
    assert.deepEqual(await scan(bytes, 9), []);
    // Damage in the pruned part hides the live entries: listed at the first live id.
    const damaged = Buffer.from(bytes);
    damaged[whole[0]!.offset + 9]! ^= 0x01;
    const found = await scan(damaged, 3);
    assert.equal(found.length, 1);
    assert.equal(found[0]!.id, 3);
    assert.match(found[0]!.problem!, /header checksum mismatch/);
    // A torn entry below the first live id is gone with its prefix (its header says which it is).
    assert.deepEqual(await scan(bytes.subarray(0, whole[1]!.offset + headerLength + 3), 3), []);
  });

  it("refuses ids that do not increase", async () => {
    const entries = [delta(4), delta(5), delta(5), delta(6)];
    const found = await scan(segment(entries));
    assert.deepEqual(found.slice(0, 2), placed(entries, [4, 5]).slice(0, 2));
    assert.equal(found.length, 3);
    assert.equal(found[2]!.id, 6);
    assert.match(found[2]!.problem!, /ids must increase/);
  });
});
