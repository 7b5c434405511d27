/**
 * One behavioural suite run against both checkpoint store backends, each against the real
 * thing: a real filesystem, and a real `nats-server -js` started here on a loopback port.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { readdir, readFile, truncate, utimes, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { Objm, StorageType } from "@nats-io/obj";
import { connect as natsConnect } from "@nats-io/transport-node";
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
    const child = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        childWriter,
        openStoreModule,
        backend().url(),
        JSON.stringify(entry),
      ],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    child.stdin!.end(data);
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
    const lines = createInterface({ input: child.stdout! });
    for await (const line of lines) {
      if (line === "put resolved") {
        child.kill("SIGKILL");
        break;
      }
    }
    const [code, signal] = await exited;
    assert.equal(signal, "SIGKILL", `the writer died on its own (code ${code}): ${stderr}`);
    await withStore(backend(), async (store) => {
      assert.deepEqual(await store.list(owner), [entry]);
      assert.ok(Buffer.from(await store.get(entry)).equals(data));
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

/** Run by a child process: puts one entry, says so, then waits to be killed. */
const childWriter = `
const [moduleUrl, url, ref] = process.argv.slice(1);
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const { openStore } = await import(moduleUrl);
const store = await openStore(url);
await store.put(JSON.parse(ref), Buffer.concat(chunks));
process.stdout.write("put resolved\\n");
setInterval(() => {}, 60_000);
`;
const openStoreModule = new URL(
  "../../src/platform/checkpoint/store/open-store.js",
  import.meta.url,
).href;

describe("fs checkpoint store", () => {
  const root = mkdtempSync(join(tmpdir(), "tara-checkpoints-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const fsBackend: Backend = {
    open: async () => new FsCheckpointStore(root),
    url: () => `fs:${root}`,
    async corrupt(entry) {
      const path = new FsCheckpointStore(root).entryPath(entry);
      const bytes = await readFile(path);
      bytes[bytes.length - 1]! ^= 0xff;
      await writeFile(path, bytes);
    },
  };
  storeBehaviour(() => fsBackend);

  it("rejects a truncated file and recovers from the previous base", async () => {
    const store = new FsCheckpointStore(root);
    const owner = freshOwner();
    await writeChain(store, owner);
    const path = store.entryPath(ref(owner, 5, "base"));
    await truncate(path, (await readFile(path)).length - 3);
    await assert.rejects(store.get(ref(owner, 5, "base")), /truncated payload/);
    await truncate(path, 10);
    await assert.rejects(store.get(ref(owner, 5, "base")), /truncated header/);
    assert.equal(summary(await loadLatest(store, owner, collectingLog())).base, "3: base 3");
  });

  it("lays entries out one file each, ignores foreign files and removes stale temp files", async () => {
    const store = new FsCheckpointStore(root, { staleTempMs: 60_000 });
    const owner = freshOwner(3);
    await store.put(ref(owner, 42, "base"), text("b"));
    const dir = store.ownerDir(owner);
    assert.equal(dir, join(root, owner.topology, "tally", "3"));
    assert.equal(
      new FsCheckpointStore(root).ownerDir({ ...owner, replica: "group" }),
      join(root, owner.topology, "tally", "group"),
    );
    const stale = join(dir, ".00000000000000000043.base.tmp-1-crashed");
    const fresh = join(dir, ".00000000000000000044.base.tmp-2-writing");
    for (const path of [stale, fresh]) writeFileSync(path, "partial");
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(stale, hourAgo, hourAgo);
    writeFileSync(join(dir, "README"), "not an entry");
    writeFileSync(join(dir, "42.base"), "not an entry name either");
    assert.deepEqual(await store.list(owner), [ref(owner, 42, "base")]);
    assert.deepEqual((await readdir(dir)).sort(), [
      ".00000000000000000044.base.tmp-2-writing",
      "00000000000000000042.base",
      "42.base",
      "README",
    ]);
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

/** A real nats-server with JetStream on a free loopback port, its store in a temp directory. */
class NatsServer {
  private process: ChildProcess | undefined;

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly configFile: string,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async start(): Promise<NatsServer> {
    const version = spawnSync("nats-server", ["--version"], { encoding: "utf8" });
    if (version.error) {
      throw new Error(
        "nats-server is not installed (needed by the NATS checkpoint store tests): install it, " +
          "e.g. `apt-get install nats-server` (.ci/run does)",
      );
    }
    const dir = mkdtempSync(join(tmpdir(), "tara-nats-"));
    const port = await freePort();
    const configFile = join(dir, "nats.conf");
    writeFileSync(configFile, natsConfig(version.stdout, port, join(dir, "jetstream")));
    const server = new NatsServer(dir, port, configFile);
    await server.restart();
    return server;
  }

  /** Starts (again) on the same port and store directory; resolves once it serves. */
  async restart(): Promise<void> {
    const child = spawn("nats-server", ["-c", this.configFile], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.process = child;
    running.add(child);
    child.once("exit", () => running.delete(child));
    let log = "";
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`nats-server not ready in 20 s:\n${log}`)),
        20_000,
      );
      child.stderr!.on("data", (chunk: Buffer) => {
        log += chunk.toString();
        if (log.includes("Server is ready")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`nats-server exited (code ${code}) before it was ready:\n${log}`));
      });
    });
    await ready;
  }

  signal(signal: NodeJS.Signals): void {
    this.process?.kill(signal);
  }

  /** Kills the server (SIGKILL: a crash, not a clean shutdown) and waits until it is gone. */
  async stop(): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGKILL");
    await exited;
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * nats-server 2.10 and later can fsync every write before acknowledging it; 2.9.x has no such
 * option (it writes each acknowledged message to the block file, and fsyncs every 2 minutes).
 */
function natsConfig(versionOutput: string, port: number, storeDir: string): string {
  const [major = 0, minor = 0] = (/v?(\d+)\.(\d+)/.exec(versionOutput) ?? []).slice(1).map(Number);
  const syncAlways = major > 2 || (major === 2 && minor >= 10);
  return [
    `listen: 127.0.0.1:${port}`,
    "jetstream {",
    `  store_dir: ${JSON.stringify(storeDir)}`,
    ...(syncAlways ? ["  sync_interval: always"] : []),
    "}",
    "",
  ].join("\n");
}

async function freePort(): Promise<number> {
  const probe = createServer();
  probe.listen(0, "127.0.0.1");
  await once(probe, "listening");
  const address = probe.address();
  probe.close();
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/** Servers still running are killed if the test process exits early. */
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});
