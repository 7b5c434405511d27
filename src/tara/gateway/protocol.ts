/**
 * The gateway's two protocols.
 *
 * ## Native client protocol (clients <-> gateway, TCP, no authentication)
 *
 * Every frame is a 4-byte big-endian body length followed by a body of exactly one msgpack
 * map (string keys). A client frame's body is at most MAX_CLIENT_FRAME_BYTES (1 MiB of
 * operation plus 1 KiB for the rest); a zero-length frame is malformed.
 *
 *   client -> gateway  {t: "req", c, r, op}
 *       c   client id: a safe positive integer (clients pick a random 53-bit one)
 *       r   request id: a safe positive integer, increasing per client; a retry of a request
 *           reuses (c, r), on the same or another gateway
 *       op  bin, at most MAX_OP_BYTES (1 MiB): the command, opaque to the gateway
 *   gateway -> client  {t: "rep", c, r, res}
 *       res bin: the state machine's reply to (c, r); sent once per (c, r) and connection
 *   gateway -> client  {t: "error", code, message, c?, r?}
 *       With c and r: that request was refused (code OVERLOADED: too many requests pending;
 *       retry later); the connection stays open. Without them: the connection sent a frame the
 *       gateway cannot accept (FRAME_TOO_LARGE, MALFORMED: not one msgpack value or empty,
 *       INVALID: a "req" with missing or wrong fields, UNKNOWN_MESSAGE: any other map or value)
 *       and the gateway closes that connection right after this frame.
 *
 * A client may have several requests outstanding on a connection; replies come in any order.
 * Nothing is acknowledged but replies: a client that hears nothing retries (same c, r), and
 * replicated execution makes the retry safe.
 *
 * ## Internal protocol (stage ports <-> gateway)
 *
 * The platform's authenticated links (src/platform/wire: same framing, HMAC handshake with the
 * cluster secret, role "port", id "<role>/<stage>:<index>"), then:
 *
 *   port -> gateway     {t: "register", role: "source" | "sink", stage, index, parallelism}
 *   gateway -> source   {t: "requests", reqs: ClientRequest[]}   (batched per event-loop turn)
 *   sink -> gateway     {t: "replies", replies: ClientReply[]}   (batched per event-loop turn)
 */
import { z } from "zod";
import type { ClientReply, ClientRequest } from "../messages.js";
import { messageParser } from "../../platform/wire/messages.js";

export const MAX_OP_BYTES = 1024 * 1024;
/** An operation as a front end forwards it: up to 1 MiB of a client's, plus its own framing. */
export const MAX_FORWARDED_OP_BYTES = MAX_OP_BYTES + 64 * 1024;
/** An operation and the rest of a request frame's body. */
export const MAX_CLIENT_FRAME_BYTES = MAX_OP_BYTES + 1024;
/** Internal messages are sealed at about this many bytes of operations or results. */
export const INTERNAL_BATCH_BYTES = 1024 * 1024;

/** Codes of the gateway's error frames. */
export type ErrorCode =
  "FRAME_TOO_LARGE" | "MALFORMED" | "INVALID" | "UNKNOWN_MESSAGE" | "OVERLOADED";

export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, "expected bin");
/** A client or request id: a safe positive integer. */
export const idSchema = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const opBytes = bytes.refine((b) => b.length <= MAX_OP_BYTES, "op larger than 1 MiB");

export const requestFrameSchema = z.object({
  t: z.literal("req"),
  c: idSchema,
  r: idSchema,
  op: opBytes,
});
export type RequestFrame = z.infer<typeof requestFrameSchema>;

export interface ReplyFrame {
  readonly t: "rep";
  readonly c: number;
  readonly r: number;
  readonly res: Uint8Array;
}

export interface ErrorFrame {
  readonly t: "error";
  readonly code: ErrorCode;
  readonly message: string;
  readonly c?: number;
  readonly r?: number;
}

/** What the gateway accepts from a client: a "req" frame, or a ProtocolError. */
export function parseClientFrame(value: unknown): RequestFrame {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError("UNKNOWN_MESSAGE", "a frame must hold a msgpack map");
  }
  const tag = (value as { t?: unknown }).t;
  if (tag !== "req") {
    const shown = typeof tag === "string" ? JSON.stringify(tag) : "no string t";
    throw new ProtocolError("UNKNOWN_MESSAGE", `unknown message (${shown})`);
  }
  const parsed = requestFrameSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ProtocolError("INVALID", `invalid req: ${issue?.path.join(".")}: ${issue?.message}`);
  }
  return parsed.data;
}

const gatewayFrameSchema = z.discriminatedUnion("t", [
  z.object({ t: z.literal("rep"), c: idSchema, r: idSchema, res: bytes }),
  z.object({
    t: z.literal("error"),
    code: z.string(),
    message: z.string(),
    c: idSchema.optional(),
    r: idSchema.optional(),
  }),
]);
export type GatewayFrame = z.infer<typeof gatewayFrameSchema>;

/** What a client accepts from a gateway; throws on anything else. */
export function parseGatewayFrame(value: unknown): GatewayFrame {
  const parsed = gatewayFrameSchema.safeParse(value);
  if (!parsed.success) throw new Error("the gateway sent an invalid frame");
  return parsed.data;
}

// ---- internal links ----

export const portRoles = ["source", "sink"] as const;
export type PortRole = (typeof portRoles)[number];

const index = z
  .number()
  .int()
  .min(0)
  .max(1 << 20);
/**
 * Requests and replies are checked by hand, not by a schema: they are every message of the
 * service, several times on their way, and the links are authenticated anyway.
 */
const isId = (v: unknown): v is number =>
  typeof v === "number" && Number.isSafeInteger(v) && v >= 1;
const isIndex = (v: unknown): v is number =>
  typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 1 << 20;

function isClientRequest(value: unknown): value is ClientRequest {
  const q = value as ClientRequest;
  return (
    typeof q === "object" &&
    q !== null &&
    isId(q.c) &&
    isId(q.r) &&
    isIndex(q.g) &&
    q.op instanceof Uint8Array &&
    q.op.length <= MAX_FORWARDED_OP_BYTES
  );
}

/** A reply to a request, or a push (r = 0, see ClientReply). */
export function isClientReply(value: unknown): value is ClientReply {
  const q = value as ClientReply;
  return (
    typeof q === "object" &&
    q !== null &&
    isId(q.c) &&
    (q.r === 0 || isId(q.r)) &&
    isIndex(q.g) &&
    q.res instanceof Uint8Array
  );
}

const arrayOf = <T>(check: (v: unknown) => v is T) =>
  z.custom<T[]>((v) => Array.isArray(v) && v.every(check), "invalid entries");

export const registerPortSchema = z.object({
  t: z.literal("register"),
  role: z.enum(portRoles),
  stage: z.string().max(100),
  index,
  parallelism: z
    .number()
    .int()
    .min(1)
    .max(1 << 20),
});
export const requestsSchema = z.object({
  t: z.literal("requests"),
  reqs: arrayOf(isClientRequest),
});
export const repliesSchema = z.object({
  t: z.literal("replies"),
  replies: arrayOf(isClientReply),
});

export type RegisterPort = z.infer<typeof registerPortSchema>;
export interface RequestsMessage {
  readonly t: "requests";
  readonly reqs: readonly ClientRequest[];
}
export interface RepliesMessage {
  readonly t: "replies";
  readonly replies: readonly ClientReply[];
}

/** The gateway's side of a port link: registration, then replies from sinks. */
export const parsePortMessage = messageParser<RegisterPort | RepliesMessage>(
  [],
  [registerPortSchema, repliesSchema],
);
/** A port's side: batches of requests (sources only). */
export const parseGatewayMessage = messageParser<RequestsMessage>([], [requestsSchema]);
