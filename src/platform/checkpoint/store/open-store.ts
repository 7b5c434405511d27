/**
 * Opens the checkpoint store a URL names:
 *
 * - `fs:<path>` or a plain path (no scheme): a `FsCheckpointStore` rooted there;
 * - `nats://host:port[/bucket]`: a `NatsCheckpointStore` (bucket `tara-checkpoints` if none).
 */
import { FsCheckpointStore } from "./fs-store.js";
import { NatsCheckpointStore } from "./nats-store.js";
import type { CheckpointStore } from "./store.js";

export const DEFAULT_NATS_BUCKET = "tara-checkpoints";

export interface OpenStoreOptions {
  /** For NATS: bound on one operation (see `NatsStoreOptions.timeoutMs`). */
  readonly timeoutMs?: number;
}

export async function openStore(
  url: string,
  options: OpenStoreOptions = {},
): Promise<CheckpointStore> {
  const usage = "use fs:<path>, a plain path, or nats://host:port[/bucket]";
  if (url.trim() === "") throw new Error(`empty checkpoint store URL: ${usage}`);
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined) return new FsCheckpointStore(url);
  if (scheme === "fs") {
    const path = url.slice("fs:".length);
    if (path === "") throw new Error(`checkpoint store URL ${url} names no directory: ${usage}`);
    return new FsCheckpointStore(path);
  }
  if (scheme === "nats") {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new Error(`checkpoint store URL ${url} is not a valid URL: ${usage}`);
    }
    if (parsed.hostname === "") throw new Error(`checkpoint store URL ${url} names no host`);
    if (parsed.search || parsed.hash || parsed.username || parsed.password) {
      throw new Error(
        `checkpoint store URL ${url}: credentials, queries and fragments are not supported`,
      );
    }
    const path = decodeURIComponent(parsed.pathname).replace(/^\/+|\/+$/g, "");
    if (path.includes("/")) {
      throw new Error(`checkpoint store URL ${url}: the path is one bucket name, not ${path}`);
    }
    return NatsCheckpointStore.connect({
      servers: `${parsed.hostname}:${parsed.port || "4222"}`,
      bucket: path || DEFAULT_NATS_BUCKET,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    });
  }
  throw new Error(`unsupported checkpoint store URL scheme "${scheme}:" in ${url}: ${usage}`);
}
