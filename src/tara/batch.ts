/**
 * A consensus value: the requests of one proposal, encoded once by the leader, carried as
 * opaque bytes by committers and decoded only by executors. Its digest names it in votes.
 */
import { createHash } from "node:crypto";
import { pack, unpack } from "msgpackr";
import type { ClientRequest, Value } from "./messages.js";

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

/** The no-op a new leader proposes for a sequence number nobody reported. */
export const NOOP: Value = encodeBatch([]);
