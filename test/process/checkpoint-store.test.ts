/**
 * One behavioural suite run against both checkpoint store backends, each against the real
 * thing: a real filesystem, and a real `nats-server -js` started here on a loopback port.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import {
  appendFile,
  open,
  readdir,
  readFile,
  stat,
  truncate as truncateFile,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { Objm, StorageType } from "@nats-io/obj";
import { connect as natsConnect } from "@nats-io/transport-node";
import { encodeEntry, entryName } from "../../src/platform/checkpoint/store/format.js";
import { FsCheckpointStore } from "../../src/platform/checkpoint/store/fs-store.js";
import { NatsCheckpointStore } from "../../src/platform/checkpoint/store/nats-store.js";
import { openStore } from "../../src/platform/checkpoint/store/open-store.js";
import {
  CheckpointChainBroken,
  loadLatest,
  pruneBefore,
} from "../../src/platform/checkpoint/store/recovery.js";
import {
  CheckpointRejected,
  type CheckpointOwner,
  type CheckpointStore,
  type EntryKind,
  type EntryRef,
} from "../../src/platform/checkpoint/store/store.js";
import { waitFor } from "./harness.js";
import { NatsServer } from "./nats-server.js";

interface Backend {
  /** A new client of the same store (tests close it). */
  open(): Promise<CheckpointStore>;
  /** What `openStore` takes to reach the same store, from another process. */
  url(): string;
  /** Replaces an entry's stored bytes with garbage, behind the store's back. */
  corrupt(ref: EntryRef): Promise<void>;
}

let owners = 0;
function freshOwner(replica: number | "group" = 0): CheckpointOwner {
  return { topology: `topology-${process.pid}-${++owners}`, stage: "tally", replica };
}

const ref = (owner: CheckpointOwner, id: number, kind: EntryKind): EntryRef => ({
  owner,
  id,
  kind,
});
const text = (s: string) => Buffer.from(s);
const show = (data: Uint8Array | undefined) => (data ? Buffer.from(data).toString() : undefined);
const ids = (refs: readonly EntryRef[]) => refs.map((r) => `${r.id}${r.kind}`);

function collectingLog() {
  const warnings: Record<string, unknown>[] = [];
  return { warnings, warn: (obj: object, msg?: string) => warnings.push({ ...obj, msg }) };
}

async function withStore<T>(backend: Backend, use: (store: CheckpointStore) => Promise<T>) {
  const store = await backend.open();
  try {
    return await use(store);
  } finally {
    await store.close();
  }
}

/** deltas 1..3, base 3, deltas 4..5, base 5, deltas 6..8: each entry's data names it. */
async function writeChain(store: CheckpointStore, owner: CheckpointOwner): Promise<void> {
  const chain: [number, EntryKind][] = [
    [1, "delta"],
    [2, "delta"],
    [3, "delta"],
    [3, "base"],
    [4, "delta"],
    [5, "delta"],
    [5, "base"],
    [6, "delta"],
    [7, "delta"],
    [8, "delta"],
  ];
  for (const [id, kind] of chain) await store.put(ref(owner, id, kind), text(`${kind} ${id}`));
}

function summary(chain: Awaited<ReturnType<typeof loadLatest>>) {
  return {
    base: chain.base && `${chain.base.id}: ${show(chain.base.data)}`,
    deltas: chain.deltas.map((d) => `${d.id}: ${show(d.data)}`),
  };
}

function storeBehaviour(backend: () => Backend): void {
  it("puts, gets, lists and deletes entries per owner", async () => {
    await withStore(backend(), async (store) => {
      const owner = freshOwner();
      const group = { ...owner, replica: "group" as const };
      const neighbour = { ...owner, replica: 1 };
      assert.deepEqual(await store.list(owner), []);
      await store.put(ref(owner, 1, "delta"), text("d1"));
      await store.put(ref(owner, 2, "base"), text("b2"));
      await store.put(ref(group, 1, "base"), text("g1"));
      await store.put(ref(neighbour, 7, "delta"), new Uint8Array(0));
      assert.deepEqual(ids(await store.list(owner)), ["1delta", "2base"]);
      assert.deepEqual(ids(await store.list(group)), ["1base"]);
      assert.deepEqual(ids(await store.list(neighbour)), ["7delta"]);
      assert.deepEqual((await store.list(owner))[0], ref(owner, 1, "delta"));
      assert.equal(show(await store.get(ref(owner, 2, "base"))), "b2");
      assert.equal(show(await store.get(ref(group, 1, "base"))), "g1");
      assert.equal((await store.get(ref(neighbour, 7, "delta"))).length, 0);

      await assert.rejects(
        store.get(ref(owner, 3, "base")),
        (e: unknown) => e instanceof CheckpointRejected && e.reason === "no such entry",
      );
      await store.delete([ref(owner, 1, "delta"), ref(owner, 99, "base")]);
      await store.delete([]);
      assert.deepEqual(ids(await store.list(owner)), ["2base"]);
      assert.deepEqual(ids(await store.list(group)), ["1base"]);
    });
  });

  it("lists ids in numeric order", async () => {
    await withStore(backend(), async (store) => {
      const owner = freshOwner();
      for (const id of [100, 9, 10, 1_000_000_000_000, 0]) {
        await store.put(ref(owner, id, "delta"), text(String(id)));
      }
      await store.put(ref(owner, 10, "base"), text("b10"));
      assert.deepEqual(ids(await store.list(owner)), [
        "0delta",
        "9delta",
        "10delta",
        "10base",
        "100delta",
        "1000000000000delta",
      ]);
    });
  });

  it("replaces an entry written again under the same ref", async () => {
    await withStore(backend(), async (store) => {
      const owner = freshOwner();
      await store.put(ref(owner, 5, "base"), text("first"));
      await store.put(ref(owner, 5, "base"), text("second, longer than the first"));
      assert.deepEqual(ids(await store.list(owner)), ["5base"]);
      assert.equal(show(await store.get(ref(owner, 5, "base"))), "second, longer than the first");
    });
  });

  it("reads a whole version of an entry that another writer replaces meanwhile", async () => {
    // Every executor saves the group checkpoint at the same sequence number under the same ref,
    // while a restarted one may be reading it.
    await withStore(backend(), async (reader) => {
      await withStore(backend(), async (writer) => {
        const owner = freshOwner("group");
        const entry = ref(owner, 1000, "base");
        const versions = [randomBytes(3 * 1024 * 1024), randomBytes(3 * 1024 * 1024)] as const;
        await writer.put(entry, versions[0]);
        for (let round = 1; round <= 20; round++) {
          const put = writer.put(entry, versions[round % 2 === 0 ? 0 : 1]);
          // A different offset each round, to vary the interleaving (nothing is waited for).
          await new Promise((resolve) => setTimeout(resolve, round));
          const [read] = await Promise.all([reader.get(entry), put]);
          assert.ok(
            versions.some((version) => version.equals(read)),
            `round ${round}: the read is neither version`,
          );
        }
      });
    });
  });

  it("keeps entries of several MB intact", async () => {
    await withStore(backend(), async (store) => {
      const owner = freshOwner();
      const big = randomBytes(6 * 1024 * 1024 + 123);
      await store.put(ref(owner, 1, "base"), big);
      assert.ok(Buffer.from(await store.get(ref(owner, 1, "base"))).equals(big));
    });
  });

  it("survives the writer being killed right after put resolved", async () => {
    const owner = freshOwner();
    const entry = ref(owner, 11, "base");
    const data = randomBytes(512 * 1024);
    await killAfterPuts(backend().url(), [[entry, data]]);
    await withStore(backend(), async (store) => {
      assert.deepEqual(await store.list(owner), [entry]);
      assert.ok(Buffer.from(await store.get(entry)).equals(data));
    });
  });

  it("keeps every delta whose put resolved before the writer was killed", async () => {
    const owner = freshOwner();
    const entries: [EntryRef, Uint8Array][] = [[ref(owner, 1, "base"), text("base 1")]];
    for (let id = 2; id <= 40; id++) entries.push([ref(owner, id, "delta"), randomBytes(300)]);
    await killAfterPuts(backend().url(), entries);
    await withStore(backend(), async (store) => {
      const chain = await loadLatest(store, owner, collectingLog());
      assert.equal(show(chain.base?.data), "base 1");
      assert.deepEqual(
        chain.deltas.map((d) => [d.id, Buffer.from(d.data).toString("hex")]),
        entries.slice(1).map(([r, data]) => [r.id, Buffer.from(data).toString("hex")]),
      );
    });
  });

  it("serializes concurrent puts of one owner", async () => {
    await withStore(backend(), async (store) => {
      const owner = freshOwner();
      const range = Array.from({ length: 50 }, (_, i) => i + 1);
      await Promise.all(range.map((id) => store.put(ref(owner, id, "delta"), text(`d${id}`))));
      const log = collectingLog();
      assert.deepEqual(
        summary(await loadLatest(store, owner, log)).deltas,
        range.map((id) => `${id}: d${id}`),
      );
      assert.deepEqual(log.warnings, []);
    });
  });

  it("returns the newest copy of a delta written again", async () => {
    const b = backend();
    const owner = freshOwner();
    await withStore(b, async (store) => {
      for (const id of [1, 2, 3]) await store.put(ref(owner, id, "delta"), text(`d${id}`));
      await store.put(ref(owner, 2, "delta"), text("d2 again"));
    });
    await withStore(b, async (store) => {
      await store.put(ref(owner, 3, "delta"), text("d3 again"));
      assert.deepEqual(ids(await store.list(owner)), ["1delta", "2delta", "3delta"]);
      assert.equal(show(await store.get(ref(owner, 2, "delta"))), "d2 again");
    });
    await withStore(b, async (store) => {
      assert.deepEqual(summary(await loadLatest(store, owner, collectingLog())).deltas, [
        "1: d1",
        "2: d2 again",
        "3: d3 again",
      ]);
    });
  });

  describe("recovery chain", () => {
    it("is the latest base and the deltas after it", async () => {
      await withStore(backend(), async (store) => {
        const owner = freshOwner();
        await writeChain(store, owner);
        const log = collectingLog();
        assert.deepEqual(summary(await loadLatest(store, owner, log)), {
          base: "5: base 5",
          deltas: ["6: delta 6", "7: delta 7", "8: delta 8"],
        });
        assert.deepEqual(log.warnings, []);
      });
    });

    it("falls back to the previous base and all later deltas if the newest base is corrupt", async () => {
      const b = backend();
      await withStore(b, async (store) => {
        const owner = freshOwner();
        await writeChain(store, owner);
        await b.corrupt(ref(owner, 5, "base"));
        await assert.rejects(store.get(ref(owner, 5, "base")), CheckpointRejected);
        const log = collectingLog();
        assert.deepEqual(summary(await loadLatest(store, owner, log)), {
          base: "3: base 3",
          deltas: ["4: delta 4", "5: delta 5", "6: delta 6", "7: delta 7", "8: delta 8"],
        });
        assert.equal(log.warnings.length, 1);
        assert.match(String(log.warnings[0]!.ref), /#5\(base\)$/);
        assert.equal(typeof log.warnings[0]!.reason, "string");
      });
    });

    it("stops at a corrupt delta, returning the valid prefix", async () => {
      const b = backend();
      await withStore(b, async (store) => {
        const owner = freshOwner();
        await writeChain(store, owner);
        await b.corrupt(ref(owner, 7, "delta"));
        const log = collectingLog();
        assert.deepEqual(summary(await loadLatest(store, owner, log)), {
          base: "5: base 5",
          deltas: ["6: delta 6"],
        });
        assert.equal(log.warnings.length, 1);
        assert.match(String(log.warnings[0]!.ref), /#7\(delta\)$/);
      });
    });

    it("is every delta from the start when there is no base, and empty when nothing is stored", async () => {
      await withStore(backend(), async (store) => {
        const owner = freshOwner();
        const log = collectingLog();
        assert.deepEqual(await loadLatest(store, owner, log), { deltas: [] });
        for (const id of [1, 2, 10]) await store.put(ref(owner, id, "delta"), text(`delta ${id}`));
        const chain = await loadLatest(store, owner, log);
        assert.equal("base" in chain, false);
        assert.deepEqual(summary(chain).deltas, ["1: delta 1", "2: delta 2", "10: delta 10"]);
      });
    });

    it("lists again when another writer pruned what it listed before it was read", async () => {
      await withStore(backend(), async (store) => {
        await withStore(backend(), async (otherWriter) => {
          const owner = freshOwner("group");
          await writeChain(store, owner);
          // Between the reader's listing and its first read, the other writer saves two newer
          // bases and prunes everything before the newest.
          let interleaved = false;
          const reader: CheckpointStore = Object.create(store, {
            get: {
              value: async (entry: EntryRef) => {
                if (!interleaved) {
                  interleaved = true;
                  await otherWriter.put(ref(owner, 9, "base"), text("base 9"));
                  await otherWriter.put(ref(owner, 12, "base"), text("base 12"));
                  await pruneBefore(otherWriter, owner, 12);
                }
                return store.get(entry);
              },
            },
          });
          const log = collectingLog();
          assert.deepEqual(summary(await loadLatest(reader, owner, log)), {
            base: "12: base 12",
            deltas: [],
          });
          assert.deepEqual(log.warnings, [], "a pruned entry is not a damaged one");
        });
      });
    });

    it("refuses to rebuild from deltas alone when every base is corrupt", async () => {
      const b = backend();
      await withStore(b, async (store) => {
        const owner = freshOwner();
        await writeChain(store, owner);
        await b.corrupt(ref(owner, 5, "base"));
        await b.corrupt(ref(owner, 3, "base"));
        const log = collectingLog();
        await assert.rejects(loadLatest(store, owner, log), CheckpointChainBroken);
        assert.equal(log.warnings.length, 2);
      });
    });

    it("prunes the entries before a base", async () => {
      await withStore(backend(), async (store) => {
        const owner = freshOwner();
        await writeChain(store, owner);
        assert.equal(await pruneBefore(store, owner, 3), 2);
        assert.deepEqual(ids(await store.list(owner)), [
          "3delta",
          "3base",
          "4delta",
          "5delta",
          "5base",
          "6delta",
          "7delta",
          "8delta",
        ]);
        assert.equal(await pruneBefore(store, owner, 3), 0);
        assert.equal(summary(await loadLatest(store, owner, collectingLog())).base, "5: base 5");
      });
    });
  });
}

/**
 * Run by a child process: puts the entries it reads (JSON) from stdin in order, says after
 * each that its put resolved, then waits to be killed.
 */
const childWriter = `
const [moduleUrl, url] = process.argv.slice(1);
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const entries = JSON.parse(Buffer.concat(chunks).toString());
const { openStore } = await import(moduleUrl);
const store = await openStore(url);
for (const [ref, data] of entries) {
  await store.put(ref, Buffer.from(data, "base64"));
  process.stdout.write("put resolved " + ref.id + "\\n");
}
setInterval(() => {}, 60_000);
`;
const openStoreModule = new URL(
  "../../src/platform/checkpoint/store/open-store.js",
  import.meta.url,
).href;

/** Run by a child process: puts deltas 1, 2, ... of an owner until it is killed. */
const endlessWriter = `
const [moduleUrl, url, owner] = process.argv.slice(1);
const { openStore } = await import(moduleUrl);
const store = await openStore(url);
for (let id = 1; ; id++) {
  const data = Buffer.from(("delta " + id + " ").padEnd(300, "."));
  await store.put({ owner: JSON.parse(owner), id, kind: "delta" }, data);
  process.stdout.write("put resolved " + id + "\\n");
}
`;

/** Starts a process running `script` (module code) and yields its stdout lines. */
function spawnScript(script: string, args: string[], stdin: string) {
  const child = spawn(process.execPath, ["--input-type=module", "-e", script, ...args], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  child.stdin!.end(stdin);
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  return {
    lines: createInterface({ input: child.stdout! }),
    /** SIGKILLs the child (a crash) and checks that it was still running. */
    async kill(): Promise<void> {
      child.kill("SIGKILL");
      const [code, signal] = await exited;
      assert.equal(signal, "SIGKILL", `the writer died on its own (code ${code}): ${stderr}`);
    },
  };
}

/** A child process puts the entries and is SIGKILLed as soon as the last put has resolved. */
async function killAfterPuts(url: string, entries: [EntryRef, Uint8Array][]): Promise<void> {
  const input = entries.map(([r, data]) => [r, Buffer.from(data).toString("base64")]);
  const child = spawnScript(childWriter, [openStoreModule, url], JSON.stringify(input));
  const last = `put resolved ${entries.at(-1)![0].id}`;
  for await (const line of child.lines) if (line === last) break;
  await child.kill();
}

describe("fs checkpoint store", () => {
  const root = mkdtempSync(join(tmpdir(), "tara-checkpoints-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const fsBackend: Backend = {
    open: async () => new FsCheckpointStore(root),
    url: () => `fs:${root}`,
    corrupt: (entry) => flipByte(entry, (length) => length - 1),
  };
  storeBehaviour(() => fsBackend);

  /** Flips one byte of a stored entry (`at` from the entry's start), behind the store's back. */
  async function flipByte(entry: EntryRef, at: (length: number) => number): Promise<void> {
    const where = await withStore(fsBackend, (store) => (store as FsCheckpointStore).locate(entry));
    assert.ok(where, `${entry.id}${entry.kind} is stored`);
    const handle = await open(where.path, "r+");
    try {
      const position = where.offset + at(where.length);
      const { buffer } = await handle.read(Buffer.alloc(1), 0, 1, position);
      buffer[0]! ^= 0xff;
      await handle.write(buffer, 0, 1, position);
    } finally {
      await handle.close();
    }
  }

  const segmentsOf = async (owner: CheckpointOwner) =>
    (await readdir(new FsCheckpointStore(root).ownerDir(owner)))
      .filter((name) => name.endsWith(".log"))
      .sort();
  const padded = (id: number) => String(id).padStart(20, "0");
  const deltas = (range: number[], name = (id: number) => `d${id}`) =>
    range.map((id) => `${id}: ${name(id)}`);
  const upTo = (from: number, to: number) =>
    Array.from({ length: to - from + 1 }, (_, i) => from + i);
  async function putDeltas(store: CheckpointStore, owner: CheckpointOwner, range: number[]) {
    for (const id of range) await store.put(ref(owner, id, "delta"), text(`d${id}`));
  }

  it("appends deltas to segments, a new one after each base and at the size limit", async () => {
    const owner = freshOwner();
    const payload = (id: number) => `delta ${id} `.padEnd(300, ".");
    const segmentBytes = 16 * 1024;
    const store = new FsCheckpointStore(root, { segmentBytes });
    try {
      for (const id of upTo(1, 200)) await store.put(ref(owner, id, "delta"), text(payload(id)));
      await store.put(ref(owner, 201, "base"), text("base 201"));
      for (const id of upTo(202, 220)) await store.put(ref(owner, id, "delta"), text(payload(id)));
    } finally {
      await store.close();
    }
    const segments = await segmentsOf(owner);
    // 200 entries of about 360 bytes fill five 16 KiB segments; the base starts a sixth.
    assert.equal(segments.length, 6, segments.join());
    assert.match(segments[0]!, new RegExp(`^${padded(1)}\\.0000000001\\.log$`));
    assert.match(segments[5]!, new RegExp(`^${padded(202)}\\.0000000006\\.log$`));
    const dir = store.ownerDir(owner);
    for (const name of segments) assert.ok((await stat(join(dir, name))).size <= segmentBytes);

    await withStore(fsBackend, async (fresh) => {
      const log = collectingLog();
      const all = await fresh.list(owner);
      assert.equal(all.length, 220);
      assert.deepEqual(summary(await loadLatest(fresh, owner, log)), {
        base: "201: base 201",
        deltas: deltas(upTo(202, 220), payload),
      });
      assert.deepEqual(log.warnings, []);
      for (const id of [1, 45, 46, 200]) {
        assert.equal(show(await fresh.get(ref(owner, id, "delta"))), payload(id));
      }
    });
  });

  it("recovers the valid prefix of a torn tail, then the next incarnation's entry of that id", async () => {
    const variants = [
      ["inside the payload", (at: number, length: number) => cut(at, length - 10), /torn/],
      ["inside the header", (at: number) => cut(at, 10), /torn tail.*entry header/],
      ["zeros", (at: number, length: number) => zeros(at, length), /unreadable entry header/],
    ] as const;
    let path = "";
    let offset = 0;
    const cut = (at: number, keep: number) => truncateFile(path, at + keep);
    // A filesystem may extend the file before the data reach the disk: zeros instead.
    const zeros = async (at: number, length: number) => {
      await truncateFile(path, at);
      await appendFile(path, Buffer.alloc(length));
    };
    for (const [variant, tear, reason] of variants) {
      const owner = freshOwner();
      await withStore(fsBackend, (store) => putDeltas(store, owner, upTo(1, 5)));
      const torn = await withStore(fsBackend, (store) =>
        (store as FsCheckpointStore).locate(ref(owner, 5, "delta")),
      );
      ({ path, offset } = torn!);
      await tear(offset, torn!.length);

      await withStore(fsBackend, async (store) => {
        const log = collectingLog();
        assert.deepEqual(summary(await loadLatest(store, owner, log)).deltas, deltas(upTo(1, 4)));
        assert.equal(log.warnings.length, 1, variant);
        assert.match(String(log.warnings[0]!.ref), /#5\(delta\)$/);
        assert.match(String(log.warnings[0]!.reason), reason, variant);
        // The put of 5 never resolved: the replica's next incarnation writes 5 again.
        await store.put(ref(owner, 5, "delta"), text("d5 again"));
        await store.put(ref(owner, 6, "delta"), text("d6"));
      });
      await withStore(fsBackend, async (store) => {
        const log = collectingLog();
        assert.deepEqual(summary(await loadLatest(store, owner, log)).deltas, [
          ...deltas(upTo(1, 4)),
          "5: d5 again",
          "6: d6",
        ]);
        assert.deepEqual(log.warnings, [], variant);
        assert.deepEqual(
          ids(await store.list(owner)),
          upTo(1, 6).map((id) => `${id}delta`),
        );
      });
      assert.equal((await segmentsOf(owner)).length, 2);
    }
  });

  it("stops at a corrupt entry in the middle of a segment, though valid ones follow", async () => {
    for (const [part, at, reason] of [
      ["payload", (length: number) => length - 1, /payload checksum mismatch/],
      ["header", () => 9, /unreadable entry header .*header checksum mismatch/],
    ] as const) {
      const owner = freshOwner();
      await withStore(fsBackend, (store) => putDeltas(store, owner, upTo(1, 6)));
      await flipByte(ref(owner, 3, "delta"), at);
      await withStore(fsBackend, async (store) => {
        const log = collectingLog();
        assert.deepEqual(summary(await loadLatest(store, owner, log)).deltas, deltas([1, 2]));
        assert.equal(log.warnings.length, 1, part);
        assert.match(String(log.warnings[0]!.ref), /#3\(delta\)$/);
        assert.match(String(log.warnings[0]!.reason), reason);
        // Past a corrupt header nothing in the segment can be located.
        const listed = part === "header" ? [1, 2, 3] : upTo(1, 6);
        assert.deepEqual(
          ids(await store.list(owner)),
          listed.map((id) => `${id}delta`),
        );
      });
    }
  });

  it("keeps every delta that a writer killed mid-stream was told is durable", async () => {
    const owner = freshOwner();
    const payload = (id: number) => `delta ${id} `.padEnd(300, ".");
    const writer = spawnScript(
      endlessWriter,
      [openStoreModule, fsBackend.url(), JSON.stringify(owner)],
      "",
    );
    let resolved = 0;
    for await (const line of writer.lines) {
      resolved = Number(/^put resolved (\d+)$/.exec(line)![1]);
      // Killed while it keeps writing: maybe mid-append.
      if (resolved === 300) break;
    }
    await writer.kill();
    let recovered = 0;
    await withStore(fsBackend, async (store) => {
      const chain = await loadLatest(store, owner, collectingLog());
      recovered = chain.deltas.length;
      assert.ok(recovered >= resolved, `${recovered} deltas recovered, ${resolved} resolved`);
      assert.deepEqual(summary(chain).deltas, deltas(upTo(1, recovered), payload));
      await store.put(ref(owner, recovered + 1, "delta"), text(payload(recovered + 1)));
    });
    await withStore(fsBackend, async (store) => {
      const log = collectingLog();
      assert.deepEqual(
        summary(await loadLatest(store, owner, log)).deltas,
        deltas(upTo(1, recovered + 1), payload),
      );
      assert.deepEqual(log.warnings, []);
    });
  });

  it("prunes whole segments", async () => {
    const owner = freshOwner();
    await withStore(fsBackend, async (store) => {
      await putDeltas(store, owner, upTo(1, 5));
      await store.put(ref(owner, 6, "base"), text("base 6"));
      await putDeltas(store, owner, upTo(7, 11));
      await store.put(ref(owner, 12, "base"), text("base 12"));
      await putDeltas(store, owner, [13, 14]);
      assert.deepEqual(
        (await segmentsOf(owner)).map((name) => Number(name.slice(0, 20))),
        [1, 7, 13],
      );
      assert.equal(await pruneBefore(store, owner, 6), 5);
      assert.deepEqual(
        (await segmentsOf(owner)).map((name) => Number(name.slice(0, 20))),
        [7, 13],
      );
      assert.equal(await pruneBefore(store, owner, 12), 6);
      assert.deepEqual((await readdir(new FsCheckpointStore(root).ownerDir(owner))).sort(), [
        `${padded(12)}.base`,
        `${padded(13)}.0000000003.log`,
      ]);
      await store.put(ref(owner, 15, "delta"), text("d15"));
    });
    await withStore(fsBackend, async (store) => {
      assert.deepEqual(summary(await loadLatest(store, owner, collectingLog())), {
        base: "12: base 12",
        deltas: deltas([13, 14, 15]),
      });
    });
  });

  it("deletes a prefix of a segment by renaming it, and a gap by rewriting it", async () => {
    const owner = freshOwner();
    await withStore(fsBackend, async (store) => {
      await putDeltas(store, owner, upTo(1, 6));
      await store.delete([ref(owner, 1, "delta"), ref(owner, 2, "delta")]);
      assert.deepEqual(await segmentsOf(owner), [`${padded(3)}.0000000001.log`]);
      // The renamed segment is still the one appended to.
      await putDeltas(store, owner, [7]);
      assert.deepEqual(await segmentsOf(owner), [`${padded(3)}.0000000001.log`]);
      await store.delete([ref(owner, 4, "delta"), ref(owner, 6, "delta")]);
      assert.deepEqual(await segmentsOf(owner), [`${padded(3)}.0000000001.log`]);
      await putDeltas(store, owner, [8]);
      assert.deepEqual(ids(await store.list(owner)), ["3delta", "5delta", "7delta", "8delta"]);
    });
    await withStore(fsBackend, async (store) => {
      assert.deepEqual(ids(await store.list(owner)), ["3delta", "5delta", "7delta", "8delta"]);
      for (const id of [3, 5, 7, 8]) {
        assert.equal(show(await store.get(ref(owner, id, "delta"))), `d${id}`);
      }
      await assert.rejects(
        store.get(ref(owner, 4, "delta")),
        (e: unknown) => e instanceof CheckpointRejected && e.reason === "no such entry",
      );
      await store.delete([3, 5, 7, 8].map((id) => ref(owner, id, "delta")));
      assert.deepEqual(await segmentsOf(owner), []);
      assert.deepEqual(await store.list(owner), []);
    });
  });

  it("appends only to segments it created, and starts anew once another store wrote", async () => {
    const owner = freshOwner();
    const first = new FsCheckpointStore(root);
    const second = new FsCheckpointStore(root);
    try {
      await putDeltas(first, owner, [1, 2]);
      await putDeltas(second, owner, [3]);
      assert.equal((await segmentsOf(owner)).length, 2);
      // Recovery through the first store again (a replica that moved and came back).
      assert.deepEqual(ids(await first.list(owner)), ["1delta", "2delta", "3delta"]);
      await putDeltas(first, owner, [4, 5]);
      assert.deepEqual(
        (await segmentsOf(owner)).map((name) => name.slice(21)),
        ["0000000001.log", "0000000002.log", "0000000003.log"],
      );
      assert.deepEqual(
        summary(await loadLatest(second, owner, collectingLog())).deltas,
        deltas(upTo(1, 5)),
      );
    } finally {
      await Promise.all([first.close(), second.close()]);
    }
  });

  it("takes the same group base from several stores at once", async () => {
    const owner = freshOwner("group");
    const stores = Array.from({ length: 4 }, () => new FsCheckpointStore(root));
    const data = randomBytes(256 * 1024);
    try {
      await Promise.all(stores.map((store) => store.put(ref(owner, 7, "base"), data)));
      assert.deepEqual(ids(await stores[0]!.list(owner)), ["7base"]);
      assert.ok(Buffer.from(await stores[1]!.get(ref(owner, 7, "base"))).equals(data));
      assert.deepEqual(await readdir(stores[0]!.ownerDir(owner)), [`${padded(7)}.base`]);
    } finally {
      await Promise.all(stores.map((store) => store.close()));
    }
  });

  it("reads and deletes the one-file deltas of earlier versions", async () => {
    const owner = freshOwner();
    await withStore(fsBackend, async (store) => {
      await store.put(ref(owner, 1, "base"), text("b1"));
      const dir = (store as FsCheckpointStore).ownerDir(owner);
      for (const id of [2, 3]) {
        const entry = ref(owner, id, "delta");
        await writeFile(join(dir, entryName(entry)), encodeEntry(entry, text(`old d${id}`)));
      }
      await store.put(ref(owner, 3, "delta"), text("d3"));
      assert.deepEqual(summary(await loadLatest(store, owner, collectingLog())).deltas, [
        "2: old d2",
        "3: d3",
      ]);
      await store.delete([ref(owner, 2, "delta"), ref(owner, 3, "delta")]);
      assert.deepEqual(await readdir(dir), [`${padded(1)}.base`]);
    });
  });

  it("rejects a truncated file and recovers from the previous base", async () => {
    const store = new FsCheckpointStore(root);
    const owner = freshOwner();
    await writeChain(store, owner);
    const path = store.entryPath(ref(owner, 5, "base"));
    await truncateFile(path, (await readFile(path)).length - 3);
    await assert.rejects(store.get(ref(owner, 5, "base")), /truncated payload/);
    await truncateFile(path, 10);
    await assert.rejects(store.get(ref(owner, 5, "base")), /truncated header/);
    assert.equal(summary(await loadLatest(store, owner, collectingLog())).base, "3: base 3");
  });

  it("lays entries out in files and segments, ignores foreign files and removes stale temp files", async () => {
    const store = new FsCheckpointStore(root, { staleTempMs: 60_000 });
    const owner = freshOwner(3);
    await store.put(ref(owner, 42, "base"), text("b"));
    await putDeltas(store, owner, [43, 44]);
    await store.close();
    const dir = store.ownerDir(owner);
    assert.equal(dir, join(root, owner.topology, "tally", "3"));
    assert.equal(
      new FsCheckpointStore(root).ownerDir({ ...owner, replica: "group" }),
      join(root, owner.topology, "tally", "group"),
    );
    assert.throws(() => store.entryPath(ref(owner, 43, "delta")), /segments/);
    const stale = join(dir, ".00000000000000000045.base.tmp-1-crashed");
    const fresh = join(dir, ".00000000000000000046.base.tmp-2-writing");
    for (const path of [stale, fresh]) writeFileSync(path, "partial");
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(stale, hourAgo, hourAgo);
    const foreign = ["README", "42.base", "43.0000000001.log", `${padded(50)}.1.log`];
    for (const name of foreign) writeFileSync(join(dir, name), "not an entry");
    assert.deepEqual(ids(await store.list(owner)), ["42base", "43delta", "44delta"]);
    assert.deepEqual(
      (await readdir(dir)).sort(),
      [
        ".00000000000000000046.base.tmp-2-writing",
        `${padded(42)}.base`,
        `${padded(43)}.0000000001.log`,
        ...foreign,
      ].sort(),
    );
  });

  it("rejects an entry file copied under another entry's name", async () => {
    const store = new FsCheckpointStore(root);
    const owner = freshOwner();
    await store.put(ref(owner, 1, "base"), text("one"));
    const bytes = await readFile(store.entryPath(ref(owner, 1, "base")));
    await writeFile(store.entryPath(ref(owner, 2, "base")), bytes);
    await assert.rejects(
      store.get(ref(owner, 2, "base")),
      /holds .*#1\(base\), not the requested one/,
    );
  });

  it("is what openStore opens for fs: URLs and plain paths, and other URLs are refused", async () => {
    for (const url of [`fs:${root}`, root]) {
      const store = await openStore(url);
      assert.ok(store instanceof FsCheckpointStore);
      assert.equal(store.description, `fs:${root}`);
    }
    await assert.rejects(openStore("fs:"), /names no directory/);
    await assert.rejects(
      openStore("s3://bucket/x"),
      /unsupported checkpoint store URL scheme "s3:"/,
    );
    await assert.rejects(openStore("nats://127.0.0.1:1/a/b"), /one bucket name/);
    await assert.rejects(openStore(""), /empty checkpoint store URL/);
  });
});

describe("nats checkpoint store", () => {
  const bucket = "tara-test";
  let started: NatsServer | undefined;
  let startError: unknown;
  before(async () => {
    try {
      started = await NatsServer.start();
    } catch (error) {
      startError = error;
    }
  });
  after(async () => {
    await started?.stop();
    started?.cleanup();
  });
  /** The server; without one every test fails with the reason (a failed hook only cancels). */
  const server = (): NatsServer => {
    if (!started) throw startError;
    return started;
  };
  const natsBackend = (): Backend => ({
    open: () => NatsCheckpointStore.connect({ servers: server().address, bucket, timeoutMs: 5000 }),
    url: () => `nats://${server().address}/${bucket}`,
    async corrupt(entry) {
      // Garbage stored under the entry's object name, through the object store itself: only the
      // entry format can tell.
      const nc = await natsConnect({ servers: server().address });
      try {
        const objects = await new Objm(jetstream(nc)).open(bucket);
        await objects.putBlob({ name: NatsCheckpointStore.objectName(entry) }, randomBytes(64));
      } finally {
        await nc.close();
      }
    },
  });
  storeBehaviour(natsBackend);

  it("rejects an object whose chunks do not match their digest", async () => {
    await withStore(natsBackend(), async (store) => {
      const owner = freshOwner();
      const entry = ref(owner, 1, "base");
      await store.put(entry, text("intact"));
      const nc = await natsConnect({ servers: server().address });
      try {
        const js = jetstream(nc);
        const info = await (
          await new Objm(js).open(bucket)
        ).info(NatsCheckpointStore.objectName(entry));
        await js.publish(`$O.${bucket}.C.${info!.nuid}`, text("an extra chunk"));
      } finally {
        await nc.close();
      }
      await assert.rejects(
        store.get(entry),
        (e: unknown) => e instanceof CheckpointRejected && /SHA-256/.test(e.reason),
      );
    });
  });

  it("refuses a bucket that does not use file storage", async () => {
    const nc = await natsConnect({ servers: server().address });
    try {
      await new Objm(jetstream(nc)).create("tara-in-memory", { storage: StorageType.Memory });
    } finally {
      await nc.close();
    }
    await assert.rejects(
      NatsCheckpointStore.connect({ servers: server().address, bucket: "tara-in-memory" }),
      /tara-in-memory: the bucket uses memory storage; checkpoints need file/,
    );
  });

  it("is what openStore opens for nats: URLs", async () => {
    const store = await openStore(`nats://${server().address}/${bucket}`);
    try {
      assert.ok(store instanceof NatsCheckpointStore);
      assert.equal(store.description, `nats:${server().address}/${bucket}`);
    } finally {
      await store.close();
    }
  });

  it("fails clearly while the server is down and works again once it is back", async () => {
    const timeoutMs = 1500;
    const store = await NatsCheckpointStore.connect({
      servers: server().address,
      bucket,
      timeoutMs,
    });
    try {
      const owner = freshOwner();
      const kept = randomBytes(300_000);
      await store.put(ref(owner, 1, "base"), kept);

      // A frozen server keeps the connection open but answers nothing: the timeout ends it.
      server().signal("SIGSTOP");
      try {
        for (const operation of [() => store.list(owner), () => store.get(ref(owner, 1, "base"))]) {
          const started = Date.now();
          await assert.rejects(
            operation(),
            new RegExp(`nats:.* did not complete within ${timeoutMs} ms`),
          );
          assert.ok(Date.now() - started < timeoutMs + 1000, "rejected within the timeout");
        }
      } finally {
        server().signal("SIGCONT");
      }
      assert.ok(Buffer.from(await store.get(ref(owner, 1, "base"))).equals(kept));

      await server().stop();
      for (const operation of [
        () => store.put(ref(owner, 2, "delta"), text("lost")),
        () => store.list(owner),
        () => store.get(ref(owner, 1, "base")),
      ]) {
        const started = Date.now();
        await assert.rejects(operation(), (e: unknown) => {
          assert.ok(!(e instanceof CheckpointRejected), "an outage is not a corrupt entry");
          assert.match(
            String(e),
            new RegExp(`nats:.*(NATS server unreachable|did not complete within ${timeoutMs} ms)`),
          );
          return true;
        });
        assert.ok(Date.now() - started < timeoutMs + 1000, "rejected within the timeout");
      }
      await assert.rejects(
        NatsCheckpointStore.connect({ servers: server().address, bucket, timeoutMs }),
        /cannot connect/,
      );

      await server().restart();
      await waitFor("the store to work again", () => store.list(owner), 30_000);
      assert.deepEqual(ids(await store.list(owner)), ["1base"]);
      assert.ok(Buffer.from(await store.get(ref(owner, 1, "base"))).equals(kept));
      await store.put(ref(owner, 2, "delta"), text("after"));
      assert.equal(show(await store.get(ref(owner, 2, "delta"))), "after");
    } finally {
      await store.close();
    }
  });
});
