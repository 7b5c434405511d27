/**
 * Checkpoints in a NATS JetStream object store bucket (one bucket for every owner), each entry
 * an object named `<topology>/<stage>/<replica or "group">/<id padded to 20 digits>.<kind>`.
 *
 * Why the object store and not a KV bucket: a KV value is one message, capped by the server's
 * max_payload (1 MiB by default) and bases can be several MB; the object store splits an entry
 * into chunks, publishes them, and only then publishes the metadata message that makes the entry
 * visible, replacing (and then purging) a previous version atomically. A small delta costs two
 * acknowledged publishes (one chunk, one metadata message), which is acceptable at delta rates.
 * One mechanism for both kinds keeps listing and overwrite semantics identical.
 *
 * Durability: the bucket's stream uses file storage, and `put` resolves only after the server
 * acknowledged every chunk and the metadata. What an acknowledgement means depends on the
 * server's `jetstream { sync_interval }` (nats-server 2.10 and later): with `sync_interval:
 * always`, every write is fsync'd before it is acknowledged, so an acknowledged entry survives
 * power loss. Without it (and always on 2.9.x, which has no such option), an acknowledged
 * write has been written to the stream's block file, so it survives a crash or kill of
 * nats-server, but reaches the disk only at the next periodic sync (every 2 minutes per stream
 * on 2.9.x; sync_interval, default 2 minutes, on 2.10+): a power loss or kernel crash can lose
 * the last ones. With a replicated stream (R3), an acknowledgement also means a quorum holds it.
 *
 * Unreachable server: the client reconnects forever in the background; meanwhile every
 * operation rejects at once with a clear error, and any operation in flight rejects after
 * `timeoutMs`. A put that rejected may still have been stored (its acknowledgement was lost),
 * as with any remote write.
 *
 * `list` reads the metadata of every entry in the bucket (the object store has no listing by
 * prefix), so its cost grows with the number of live entries across owners; it runs at
 * recovery and pruning, not on the hot path.
 */
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Base64UrlPaddedCodec, Objm, StorageType, type ObjectStore } from "@nats-io/obj";
import { connect, TimeoutError, type NatsConnection } from "@nats-io/transport-node";
import {
  compareRefs,
  decodeEntry,
  encodeEntry,
  entryName,
  parseEntryName,
  validateOwner,
  validateRef,
} from "./format.js";
import {
  CheckpointMissing,
  CheckpointRejected,
  describeRef,
  type CheckpointOwner,
  type CheckpointStore,
  type EntryRef,
} from "./store.js";

export interface NatsStoreOptions {
  /** "host:port" or "nats://host:port", or several for a cluster. */
  readonly servers: string | readonly string[];
  /** Object store bucket name: letters, digits, '-' and '_'. Created if missing. */
  readonly bucket: string;
  /**
   * Bound on one operation (connecting, or a whole put/get of one entry). Raise it for
   * entries of many MB over slow links. Default 10 s.
   */
  readonly timeoutMs?: number;
  /** Client name shown in the server's monitoring. */
  readonly name?: string;
}

const DEFAULT_TIMEOUT_MS = 10_000;
/** Larger than the object store's 128 KiB default: fewer acknowledged round trips per MB. */
const MAX_CHUNK_BYTES = 512 * 1024;

class Timeout extends Error {}

export class NatsCheckpointStore implements CheckpointStore {
  private disconnectedAt: number | undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly objects: ObjectStore,
    private readonly jsm: JetStreamManager,
    readonly bucket: string,
    readonly description: string,
    private readonly timeoutMs: number,
    private readonly chunkBytes: number,
  ) {
    void this.watchConnection();
  }

  static async connect(options: NatsStoreOptions): Promise<NatsCheckpointStore> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const servers = typeof options.servers === "string" ? [options.servers] : [...options.servers];
    const { bucket } = options;
    if (!/^[A-Za-z0-9_-]+$/.test(bucket)) {
      throw new TypeError(
        `NATS bucket name ${JSON.stringify(bucket)}: use letters, digits, - and _`,
      );
    }
    const description = `nats:${servers.join(",")}/${bucket}`;
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers,
        name: options.name ?? "tara-checkpoints",
        timeout: timeoutMs,
        // Once connected, never give up: checkpoints resume when the server is back.
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
      });
    } catch (error) {
      throw new Error(`${description}: cannot connect: ${message(error)}`, { cause: error });
    }
    let opened;
    try {
      opened = await withTimeout(
        (async () => {
          const js = jetstream(nc, { timeout: timeoutMs });
          const objects = await new Objm(js).create(bucket, { storage: StorageType.File });
          const status = await objects.status();
          const jsm = await jetstreamManager(nc, { timeout: timeoutMs });
          return { objects, status, jsm };
        })(),
        timeoutMs,
      );
    } catch (error) {
      await nc.close().catch(() => undefined);
      const detail = error instanceof Timeout ? `no answer within ${timeoutMs} ms` : message(error);
      throw new Error(`${description}: cannot open the bucket (is JetStream enabled?): ${detail}`, {
        cause: error,
      });
    }
    if (opened.status.storage !== StorageType.File) {
      await nc.close().catch(() => undefined);
      throw new Error(
        `${description}: the bucket uses ${opened.status.storage} storage; checkpoints need file`,
      );
    }
    const maxPayload = nc.info?.max_payload ?? MAX_CHUNK_BYTES;
    return new NatsCheckpointStore(
      nc,
      opened.objects,
      opened.jsm,
      bucket,
      description,
      timeoutMs,
      Math.min(MAX_CHUNK_BYTES, maxPayload),
    );
  }

  /** The object name of an entry (exposed for tests and tooling). */
  static objectName(ref: EntryRef): string {
    validateRef(ref);
    return `${ownerPrefix(ref.owner)}${entryName(ref)}`;
  }

  async put(ref: EntryRef, data: Uint8Array): Promise<void> {
    const name = NatsCheckpointStore.objectName(ref);
    const bytes = encodeEntry(ref, data);
    await this.run(`put ${describeRef(ref)}`, () =>
      this.objects.putBlob({ name, options: { max_chunk_size: this.chunkBytes } }, bytes, {
        timeout: this.timeoutMs,
      }),
    );
  }

  async list(owner: CheckpointOwner): Promise<EntryRef[]> {
    validateOwner(owner);
    const prefix = ownerPrefix(owner);
    const infos = await this.run(`list ${prefix}`, () => this.objects.list());
    const refs: EntryRef[] = [];
    for (const info of infos) {
      if (info.deleted || !info.name.startsWith(prefix)) continue;
      const ref = parseEntryName(owner, info.name.slice(prefix.length));
      if (ref) refs.push(ref);
    }
    return refs.sort(compareRefs);
  }

  async get(ref: EntryRef): Promise<Uint8Array> {
    const name = NatsCheckpointStore.objectName(ref);
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    const bytes = await this.run(
      `get ${describeRef(ref)}`,
      async () => {
        for (let replaced = 0; ; replaced++) {
          const read = await this.readObject(ref, name, (opened) => (reader = opened));
          if (read !== "replaced") return read;
          if (replaced === 3) {
            throw new Error(`${name} was replaced during each of 4 reads (retry later)`);
          }
        }
      },
      () => void reader?.cancel().catch(() => undefined),
    );
    return decodeEntry(ref, bytes);
  }

  /** One read of an object's chunks; "replaced" if another writer replaced it meanwhile. */
  private async readObject(
    ref: EntryRef,
    name: string,
    opened: (reader: ReadableStreamDefaultReader<Uint8Array>) => void,
  ): Promise<Uint8Array | "replaced"> {
    let result;
    try {
      result = await this.objects.get(name);
    } catch (error) {
      // The object's metadata message is not valid JSON or names no known digest.
      if (error instanceof SyntaxError || /digest/i.test(message(error))) {
        throw new CheckpointRejected(ref, `corrupt object metadata: ${message(error)}`);
      }
      throw error;
    }
    if (result === null) throw new CheckpointMissing(ref);
    const reader = result.data.getReader();
    opened(reader);
    const parts: Uint8Array[] = [];
    let length = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        length += value.length;
      }
    } catch (error) {
      // The object store checks the SHA-256 of the chunks against the metadata.
      if (/corrupt object|digests do not match/i.test(message(error))) {
        // Every executor saves the same group checkpoint: a put of the same name publishes new
        // chunks, then purges the ones being read here.
        const now = await this.objects.info(name);
        if (now && now.nuid !== result.info.nuid) return "replaced";
        throw new CheckpointRejected(ref, "object chunks do not match their SHA-256 digest");
      }
      throw error;
    }
    return Buffer.concat(parts, length);
  }

  async delete(refs: readonly EntryRef[]): Promise<void> {
    const stream = `OBJ_${this.bucket}`;
    for (const ref of refs) {
      const name = NatsCheckpointStore.objectName(ref);
      await this.run(`delete ${describeRef(ref)}`, async () => {
        // Marks the object deleted and purges its chunks; then the deletion marker itself goes,
        // or frequent deltas would leave one marker each in the stream forever.
        await this.objects.delete(name);
        await this.jsm.streams.purge(stream, {
          filter: `$O.${this.bucket}.M.${Base64UrlPaddedCodec.encode(name)}`,
        });
      });
    }
  }

  async close(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.close();
  }

  /** Runs one operation: at once rejected while disconnected, else bounded by the timeout. */
  private async run<T>(what: string, operation: () => Promise<T>, onTimeout?: () => void) {
    if (this.nc.isClosed()) throw new Error(`${this.description}: ${what}: the store is closed`);
    if (this.disconnectedAt !== undefined) {
      const seconds = ((Date.now() - this.disconnectedAt) / 1000).toFixed(1);
      throw new Error(
        `${this.description}: ${what} failed: NATS server unreachable ` +
          `(disconnected ${seconds} s ago; reconnecting in the background)`,
      );
    }
    try {
      return await withTimeout(operation(), this.timeoutMs);
    } catch (error) {
      if (error instanceof CheckpointRejected) throw error;
      // The client bounds each request by the same timeout; whichever fires first, same story.
      if (error instanceof Timeout || error instanceof TimeoutError) {
        onTimeout?.();
        throw new Error(
          `${this.description}: ${what} did not complete within ${this.timeoutMs} ms ` +
            `(NATS server unreachable or overloaded?)`,
        );
      }
      // A request cut short by a disconnect fails with the client's own error: name the cause.
      const unreachable = this.disconnectedAt === undefined ? "" : "NATS server unreachable: ";
      throw new Error(`${this.description}: ${what} failed: ${unreachable}${message(error)}`, {
        cause: error,
      });
    }
  }

  private async watchConnection(): Promise<void> {
    for await (const status of this.nc.status()) {
      if (status.type === "disconnect") this.disconnectedAt ??= Date.now();
      else if (status.type === "reconnect") this.disconnectedAt = undefined;
    }
  }
}

function ownerPrefix(owner: CheckpointOwner): string {
  return `${owner.topology}/${owner.stage}/${owner.replica}/`;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Timeout()), ms);
  });
  // An operation abandoned on timeout may still fail later: that failure is not news.
  promise.catch(() => undefined);
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
