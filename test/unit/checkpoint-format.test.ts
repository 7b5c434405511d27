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
