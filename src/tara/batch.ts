/**
 * A consensus value: the requests of one proposal and the leader's clock when it made it,
 * encoded once by the leader, carried as opaque bytes by committers and decoded only by
 * executors. Its digest names it in votes.
 */
import { createHash } from "node:crypto";
import { pack, unpack } from "msgpackr";
import type { ClientReply, ClientRequest, Value } from "./messages.js";

type WireRequest = [c: number, r: number, g: number, op: Uint8Array];

export function digestOf(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export interface Batch {
  /** The proposing leader's clock, ms since the epoch (0 for the no-op). */
  readonly time: number;
  readonly requests: ClientRequest[];
}

export function encodeBatch(requests: readonly ClientRequest[], time: number): Value {
  const b = pack([time, requests.map((q): WireRequest => [q.c, q.r, q.g, q.op])]);
  return { d: digestOf(b), b };
}

export function decodeBatch(bytes: Uint8Array): Batch {
  const [time, requests] = unpack(bytes) as [number, WireRequest[]];
  return { time, requests: requests.map(([c, r, g, op]) => ({ c, r, g, op })) };
}

/** r = 0: a push (see StateMachine), not the reply to a request. */
type WireReply = [c: number, r: number, g: number, res: Uint8Array];

export function encodeReplies(replies: readonly ClientReply[]): Uint8Array {
  return pack(replies.map((q): WireReply => [q.c, q.r, q.g, q.res]));
}

export function decodeReplies(bytes: Uint8Array): ClientReply[] {
  return (unpack(bytes) as WireReply[]).map(([c, r, g, res]) => ({ c, r, g, res }));
}

/** The no-op a new leader proposes for a sequence number nobody reported. */
export const NOOP: Value = encodeBatch([], 0);
