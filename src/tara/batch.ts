/**
 * A consensus value: the requests of one proposal, encoded once by the leader, carried as
 * opaque bytes by committers and decoded only by executors. Its digest names it in votes.
 */
import { createHash } from "node:crypto";
import { pack, unpack } from "msgpackr";
import type { ClientReply, ClientRequest, Value } from "./messages.js";

type WireRequest = [c: number, r: number, g: number, op: Uint8Array];

export function digestOf(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export function encodeBatch(requests: readonly ClientRequest[]): Value {
  const b = pack(requests.map((q): WireRequest => [q.c, q.r, q.g, q.op]));
  return { d: digestOf(b), b };
}

export function decodeBatch(bytes: Uint8Array): ClientRequest[] {
  return (unpack(bytes) as WireRequest[]).map(([c, r, g, op]) => ({ c, r, g, op }));
}

type WireReply = [c: number, r: number, g: number, res: Uint8Array];

export function encodeReplies(replies: readonly ClientReply[]): Uint8Array {
  return pack(replies.map((q): WireReply => [q.c, q.r, q.g, q.res]));
}

export function decodeReplies(bytes: Uint8Array): ClientReply[] {
  return (unpack(bytes) as WireReply[]).map(([c, r, g, res]) => ({ c, r, g, res }));
}

/** The no-op a new leader proposes for a sequence number nobody reported. */
export const NOOP: Value = encodeBatch([]);
