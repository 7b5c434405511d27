/**
 * The reference state machine: a key-value map with get, put, delete and compare-and-set,
 * used by the tests, the simulator and the benchmarks. Commands and replies are msgpack.
 */
import { pack, unpack } from "msgpackr";
import { z } from "zod";
import type { Applied, StateMachine } from "../state-machine.js";

export type KvOp =
  | { type: "get"; key: string }
  | { type: "put"; key: string; value: string }
  | { type: "delete"; key: string }
  /** Sets `value` iff the current value is `expected` (null: the key is absent). */
  | { type: "cas"; key: string; expected: string | null; value: string };

export type KvResult =
  | { type: "get"; value: string | null }
  | { type: "put" }
  | { type: "delete"; existed: boolean }
  | { type: "cas"; ok: boolean };

export type KvReply = KvResult | { type: "error"; message: string };

/** Limits: a command beyond them is refused with an error reply. */
export const KV_KEY_BYTES_MAX = 1024;
export const KV_VALUE_BYTES_MAX = 1024 * 1024;

const key = z.string().refine((k) => Buffer.byteLength(k) <= KV_KEY_BYTES_MAX, "key too long");
const value = z
  .string()
  .refine((v) => Buffer.byteLength(v) <= KV_VALUE_BYTES_MAX, "value too long");
const opSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("get"), key }).strict(),
  z.object({ type: z.literal("put"), key, value }).strict(),
  z.object({ type: z.literal("delete"), key }).strict(),
  z.object({ type: z.literal("cas"), key, expected: value.nullable(), value }).strict(),
]);
const snapshotSchema = z.array(z.tuple([z.string(), z.string()]));

export function encodeKvOp(op: KvOp): Uint8Array {
  return pack(op);
}

export function decodeKvReply(bytes: Uint8Array): KvReply {
  return unpack(bytes) as KvReply;
}

export class KvStateMachine implements StateMachine {
  private readonly entries = new Map<string, string>();

  apply(command: Uint8Array): Applied {
    return { reply: pack(this.execute(command)) };
  }

  snapshot(): Uint8Array {
    // Sorted, so that equal maps give equal bytes whatever their insertion order.
    const sorted = [...this.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return pack(sorted);
  }

  restore(snapshot: Uint8Array): void {
    const parsed = snapshotSchema.safeParse(unpack(snapshot));
    if (!parsed.success) throw new Error(`not a key-value snapshot: ${parsed.error.message}`);
    this.entries.clear();
    for (const [k, v] of parsed.data) this.entries.set(k, v);
  }

  get size(): number {
    return this.entries.size;
  }

  private execute(command: Uint8Array): KvReply {
    let decoded: unknown;
    try {
      decoded = unpack(command);
    } catch {
      return { type: "error", message: "undecodable command" };
    }
    const parsed = opSchema.safeParse(decoded);
    if (!parsed.success) {
      return { type: "error", message: `invalid command: ${parsed.error.issues[0]?.message}` };
    }
    const op = parsed.data;
    const current = this.entries.get(op.key) ?? null;
    switch (op.type) {
      case "get":
        return { type: "get", value: current };
      case "put":
        this.entries.set(op.key, op.value);
        return { type: "put" };
      case "delete":
        this.entries.delete(op.key);
        return { type: "delete", existed: current !== null };
      case "cas":
        if (current !== op.expected) return { type: "cas", ok: false };
        this.entries.set(op.key, op.value);
        return { type: "cas", ok: true };
    }
  }
}
