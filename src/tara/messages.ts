/**
 * Every message of the TARA protocol, as it travels on the topology's streams. Short field
 * names keep the msgpack encoding small: these tuples are the protocol's whole traffic.
 * docs/PROTOCOLS.md has the message table and the sequences.
 */

/** A client's command as it enters a request source from gateway `g`. */
export interface ClientRequest {
  /** Client id (a random 53-bit integer chosen by the client). */
  readonly c: number;
  /** Request id, strictly increasing per client; a retry reuses it. */
  readonly r: number;
  /** Index of the gateway (container) the request entered through: its reply goes there. */
  readonly g: number;
  readonly op: Uint8Array;
}

/** A reply as a reply sink hands it to gateway `g`. */
export interface ClientReply {
  readonly c: number;
  /** The request answered; 0: a push, a message the state machine sends client `c` unasked. */
  readonly r: number;
  readonly g: number;
  readonly res: Uint8Array;
}

/** Stream names: one per (producer stage, purpose), see the topology. */
export const streams = {
  requests: "requests", // request sources -> proposers (all)
  proposals: "proposals", // proposers -> committers (all): propose, heartbeat, prepare
  accepts: "accepts", // committers -> executors (all)
  votes: "votes", // committers -> proposers (all): view-change, promise
  replies: "replies", // executors -> reply sinks (all)
  checkpointed: "checkpointed", // executors -> proposers and executors (all)
  gaps: "gaps", // executors -> proposers (all): a hole that does not fill
  state: "state", // executors -> executors (direct): state request / state reply
} as const;

/** Request source -> proposers. */
export interface RequestBatch {
  readonly t: "requests";
  readonly reqs: readonly ClientRequest[];
}

/** The value of one consensus instance: an encoded batch (msgpack ClientRequest[]) and its digest. */
export interface Value {
  /** SHA-256 of `b`, hex; the empty batch (no-op) has the digest of the empty array. */
  readonly d: string;
  readonly b: Uint8Array;
}

/** Leader -> committers: accept `value` at sequence number `s` in view `v`. */
export interface Propose extends Value {
  readonly t: "propose";
  readonly v: number;
  readonly s: number;
  /** The stable checkpoint the leader knows: committers collect garbage up to it. */
  readonly lw: number;
}

/** Leader -> committers, when idle: I am alive and lead view `v`. */
export interface Heartbeat {
  readonly t: "heartbeat";
  readonly v: number;
  readonly lw: number;
}

/** Candidate -> committers: promise me view `v` (Paxos phase 1a). */
export interface Prepare {
  readonly t: "prepare";
  readonly v: number;
}

export type ProposerMessage = Propose | Heartbeat | Prepare;

/** Committer -> executors: I accepted `value` at `s` in view `v`. */
export interface Accept extends Value {
  readonly t: "accept";
  readonly v: number;
  readonly s: number;
  /** Stable checkpoint as the committer knows it: an executor below it must catch up from a peer. */
  readonly lw: number;
}

/** An accepted entry as a committer reports it. */
export interface AcceptedEntry extends Value {
  readonly s: number;
  readonly v: number;
}

/** Committer -> proposers: the leader of my view seems dead; I want view `want`. */
export interface ViewChange {
  readonly t: "view-change";
  readonly c: number;
  /** The view this committer has promised. */
  readonly v: number;
  readonly want: number;
}

/** Committer -> proposers: promise for view `v` with every accepted entry above `lw` (1b). */
export interface Promise {
  readonly t: "promise";
  readonly c: number;
  readonly v: number;
  readonly lw: number;
  /** This part's share of the accepted entries: a promise is sent in parts of bounded size. */
  readonly accepted: readonly AcceptedEntry[];
  /** Part `part` (from 0) of `parts`: the promise counts once every part has arrived. */
  readonly part: number;
  readonly parts: number;
}

export type CommitterVote = ViewChange | Promise;

/** Executor -> reply sinks: the replies of one executed batch. */
export interface Replies {
  readonly t: "replies";
  readonly e: number;
  readonly s: number;
  /**
   * The replies, encoded once (see batch.ts `encodeReplies`): every executor sends the same
   * bytes for a sequence number, and a sink decodes only the first copy it gets.
   */
  readonly b: Uint8Array;
}

/**
 * Executor -> proposers and executors: my latest group checkpoint is at `s` (sent when taken
 * and repeated every tick; s = 0 before the first).
 */
export interface Checkpointed {
  readonly t: "checkpointed";
  readonly e: number;
  readonly s: number;
  /** SHA-256 (hex) of the checkpoint's bytes. */
  readonly d: string;
  /** Highest sequence number the executor has executed: a trailing peer asks it. */
  readonly x: number;
}

/** Executor -> proposers: `s` stays missing while later sequence numbers are committed. */
export interface Gap {
  readonly t: "gap";
  readonly e: number;
  readonly s: number;
}

/** Trailing executor -> a peer (direct): send me what I miss after `have`. */
export interface StateRequest {
  readonly t: "state-request";
  readonly e: number;
  readonly have: number;
  readonly nonce: number;
}

/** A committed value as an executor keeps it for peers' catch-up. */
export interface LogEntry extends Value {
  readonly s: number;
}

/** Peer -> trailing executor (direct): my latest checkpoint if newer, then my log after it. */
export interface StateReply {
  readonly t: "state";
  readonly e: number;
  readonly nonce: number;
  readonly checkpoint: {
    readonly s: number;
    readonly d: string;
    readonly bytes: Uint8Array;
  } | null;
  readonly log: readonly LogEntry[];
}
