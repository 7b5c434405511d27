/**
 * What the ZooKeeper front end (a gateway) and the replicated ZooKeeper state machine say to
 * each other through TARA, as msgpack.
 *
 * Each client connection is one TARA client (its own random id `c`); it has at most one
 * request in flight, carrying every ZooKeeper request the connection sent meanwhile, so a
 * connection's requests are applied in the order sent and answered in that order.
 *
 * Everything the state machine sends one connection is numbered: `o` counts the messages of
 * the session since it attached to that connection (the connect reply is 0), replies and
 * pushes (watch notifications caused by other sessions) alike. Replies and pushes travel by
 * different reply sinks and may overtake each other; the front end writes them in `o` order,
 * and so a notification always reaches the client before any later reply.
 */
import { pack, unpack } from "msgpackr";
import { encodeRequest } from "./protocol.js";
import type { ZkRequest } from "./types.js";

/** Front end -> state machine. */
export type ZkCommand =
  | {
      readonly t: "connect";
      /** 0: a new session. */
      readonly session: number;
      readonly passwd: Uint8Array;
      /** Requested session timeout, ms. */
      readonly timeout: number;
      /** The client's last seen zxid: a service behind it must refuse the client. */
      readonly lastZxid: number;
      /** The password of the session if one is created: 16 random bytes. */
      readonly newPasswd: Uint8Array;
      /** The client's address: its `ip` identity for ACLs. */
      readonly ip: string;
    }
  | {
      readonly t: "requests";
      readonly session: number;
      /**
       * The connection's ZooKeeper request frames as the client sent them (length-prefixed,
       * concatenated): decoded by the state machine, once per replica, so a gateway neither
       * decodes nor re-encodes them.
       */
      readonly frames: Uint8Array;
    };

/** State machine -> front end: the answer to a connect. */
export type ConnectReply =
  | {
      readonly t: "connected";
      readonly session: number;
      readonly passwd: Uint8Array;
      readonly timeout: number;
      readonly z: number;
    }
  /**
   * expired: unknown or closed session, or wrong password (the client is told its session
   * expired); behind: the client has seen a later zxid than this service has (the socket is
   * closed without a reply).
   */
  | { readonly t: "refused"; readonly reason: "expired" | "behind"; readonly z: number };

/** State machine -> front end: frames for one connection. */
export interface ConnectionMessage {
  readonly t: "frames";
  /** Its number on the connection (see above); absent: deliver at once (a final close). */
  readonly o?: number;
  /** Whole ZooKeeper frames (length-prefixed), concatenated. */
  readonly f: Uint8Array;
  /** After these frames, close the connection, for this reason. */
  readonly close?: string;
  /** The service's last zxid. */
  readonly z: number;
  /** The service's node count (for the four-letter words). */
  readonly n: number;
}

export type ZkReply = ConnectReply | ConnectionMessage;

export function encodeCommand(command: ZkCommand): Uint8Array {
  return pack(command);
}

/** Request frames for a "requests" command (tests, the simulator). */
export function encodeRequests(reqs: readonly ZkRequest[]): Uint8Array {
  return Buffer.concat(reqs.map(encodeRequest));
}

export function decodeReply(bytes: Uint8Array): ZkReply {
  return unpack(bytes) as ZkReply;
}
