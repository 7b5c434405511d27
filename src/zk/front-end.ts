/**
 * The ZooKeeper front end of a gateway: ZooKeeper's client protocol on the client port, the
 * replicated ZooKeeper state machine behind it (commands.ts says how they talk).
 *
 * A connection's first frame is its ConnectRequest (or a four-letter word); the session is
 * created or re-attached through the replicated order, and requests that arrive meanwhile
 * wait. Then request frames are queued as they came (the state machine decodes them: a bad
 * one is answered in its place, then the connection closes); the connection has one TARA
 * request in flight at a time, holding everything queued, so pipelined requests are applied
 * and answered in the order sent. What the state machine sends a connection is
 * written in its numbering order; a number that stays missing (its every copy lost) closes
 * the connection, and the client reconnects, as after any connection loss.
 *
 * ZooKeeper clients never resend a request, but TARA may drop one that was not yet chosen
 * (e.g. proposed by a leader that a view change displaced): the connection resends its command
 * in flight until a reply comes, with the same request id, so the replicas execute it once.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import type { Logger } from "pino";
import { FrameDecoder } from "../platform/wire/frames.js";
import {
  listenForClients,
  type FrontEnd,
  type Gateway,
  type Requester,
} from "../tara/gateway/gateway.js";
import type { ClientReply } from "../tara/messages.js";
import { decodeReply, encodeCommand, type ConnectionMessage, type ZkCommand } from "./commands.js";
import { decodeConnectRequest, encodeConnectResponse } from "./protocol.js";
import { MAX_FRAME_BYTES } from "./types.js";

/** How long a missing message may hold up a connection's later ones before it is closed. */
const GAP_TIMEOUT_MS = 3000;
/** Requests of one connection gathered in one replicated command, at most (bytes of frames). */
const COMMAND_BYTES = 512 * 1024;
/** A command unanswered this long is sent again; the wait doubles per resend, up to the max. */
const RESEND_FIRST_MS = 1000;
const RESEND_MAX_MS = 8000;
/** RequestHeader: xid and type. */
const REQUEST_HEADER_BYTES = 8;
/** A connection queueing more than this is not read until its queue drains. */
const QUEUE_HIGH_BYTES = 8 * 1024 * 1024;
/** A client that leaves this much of its replies unread is dropped. */
const CLIENT_WRITE_LIMIT_BYTES = 64 * 1024 * 1024;

export const ZK_VERSION = "3.8.0-tara";

/** Four-letter words ZooKeeper knows; those not served answer as when not whitelisted. */
const FOUR_LETTER_WORDS = new Set([
  "conf",
  "cons",
  "crst",
  "dirs",
  "dump",
  "envi",
  "gtmk",
  "ruok",
  "stmk",
  "srvr",
  "srst",
  "stat",
  "wchc",
  "wchp",
  "wchs",
  "mntr",
  "isro",
  "hash",
]);

/** A random TARA client id for a connection (53 bits, never 0). */
function newClientId(): number {
  const bytes = randomBytes(8);
  return Number(bytes.readBigUInt64BE() & 0x1f_ffff_ffff_ffffn) || 1;
}

export interface ZkFrontEndOptions {
  readonly log: Logger;
}

interface Pending {
  readonly count: number;
  readonly at: number;
}

class ZkConnection implements Requester {
  readonly c = newClientId();
  state: "handshake" | "connecting" | "open" | "closed" = "handshake";
  private readonly decoder = new FrameDecoder(MAX_FRAME_BYTES);
  private r = 0;
  private readOnly: boolean | undefined;
  private session = 0;
  /** Request frame bodies not yet sent, oldest first. */
  private queue: Buffer[] = [];
  private queueBytes = 0;
  private inflight: Pending | undefined;
  private expected = 1;
  private readonly held = new Map<number, ConnectionMessage>();
  private gapTimer: NodeJS.Timeout | undefined;
  private resendTimer: NodeJS.Timeout | undefined;
  private corked = false;
  private readingPaused = false;

  constructor(
    readonly socket: Socket,
    private readonly frontEnd: ZkFrontEnd,
    private readonly gateway: Gateway,
  ) {}

  /** A method, not a field test: what was called before may have closed the connection. */
  get isClosed(): boolean {
    return this.state === "closed";
  }

  get outstanding(): number {
    return this.queue.length + (this.inflight?.count ?? 0);
  }

  onData(chunk: Buffer): void {
    if (this.state === "closed") return;
    if (this.state === "handshake" && this.decoder.pendingBytes === 0 && chunk.length >= 4) {
      const word = chunk.toString("latin1", 0, 4);
      if (FOUR_LETTER_WORDS.has(word)) return this.fourLetterWord(word);
    }
    let bodies: Buffer[];
    try {
      bodies = this.decoder.push(chunk);
    } catch (error) {
      return this.close(`bad frame: ${(error as Error).message}`);
    }
    for (const body of bodies) {
      if (this.isClosed) return;
      this.frontEnd.counters.received++;
      if (this.state === "handshake") this.connect(body);
      else this.enqueue(body);
    }
  }

  // ---- handshake ----

  private connect(body: Buffer): void {
    let request: ReturnType<typeof decodeConnectRequest>;
    try {
      request = decodeConnectRequest(body);
    } catch (error) {
      return this.close(`not a ConnectRequest: ${(error as Error).message}`);
    }
    // Answered with a readOnly byte (0: we never serve read-only) only if the client sent one.
    this.readOnly = request.readOnly === undefined ? undefined : false;
    const id = request.sessionId;
    const command: ZkCommand = {
      t: "connect",
      // An id we cannot have issued is unknown: the service refuses it as expired.
      session: id === 0n ? 0 : id > 0n && id <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(id) : -1,
      passwd: request.passwd,
      timeout: request.timeOut,
      lastZxid: Number(request.lastZxidSeen),
      newPasswd: randomBytes(16),
      ip: (this.socket.remoteAddress ?? "").replace(/^::ffff:/, ""),
    };
    this.state = "connecting";
    this.submit(command);
  }

  private onConnectReply(res: Uint8Array): void {
    const reply = decodeReply(res);
    if (reply.t === "connected") {
      this.session = reply.session;
      this.state = "open";
      this.frontEnd.noteZxid(reply.z, undefined);
      this.write(
        encodeConnectResponse({
          timeOut: reply.timeout,
          sessionId: reply.session,
          passwd: reply.passwd,
          readOnly: this.readOnly,
        }),
      );
      this.drainHeld();
      this.send();
    } else if (reply.t === "refused" && reply.reason === "expired") {
      // Every client reads timeOut 0 as "session expired".
      this.write(
        encodeConnectResponse({
          timeOut: 0,
          sessionId: 0,
          passwd: Buffer.alloc(16),
          readOnly: this.readOnly,
        }),
      );
      this.close("session expired or unknown");
    } else {
      this.close("the client has seen a later zxid than this service: refused");
    }
  }

  // ---- requests ----

  private enqueue(body: Buffer): void {
    // The state machine decodes requests; one without even a header (xid, type) is not one.
    if (body.length < REQUEST_HEADER_BYTES) return this.close("a request frame without a header");
    this.queue.push(body);
    this.queueBytes += body.length;
    if (this.queueBytes > QUEUE_HIGH_BYTES && !this.readingPaused) {
      this.readingPaused = true;
      this.updateReading();
    }
    this.send();
  }

  /** Sends what is queued as one command, unless one is in flight already. */
  private send(): void {
    if (this.state !== "open" || this.inflight || this.queue.length === 0) return;
    let count = 0;
    let bytes = 0;
    while (count < this.queue.length && (count === 0 || bytes < COMMAND_BYTES)) {
      bytes += this.queue[count]!.length;
      count++;
    }
    const frames = Buffer.allocUnsafe(bytes + 4 * count);
    let at = 0;
    for (const body of this.queue.splice(0, count)) {
      frames.writeInt32BE(body.length, at);
      body.copy(frames, at + 4);
      at += 4 + body.length;
    }
    this.queueBytes -= bytes;
    if (this.readingPaused && this.queueBytes < QUEUE_HIGH_BYTES / 2) {
      this.readingPaused = false;
      this.updateReading();
    }
    this.inflight = { count, at: performance.now() };
    this.submit({ t: "requests", session: this.session, frames });
  }

  /** Reads the socket unless this connection queues too much or the gateway is congested. */
  updateReading(): void {
    if (this.readingPaused || this.frontEnd.paused) this.socket.pause();
    else this.socket.resume();
  }

  private submit(command: ZkCommand): void {
    const op = encodeCommand(command);
    const r = ++this.r;
    this.gateway.submit(this, this.c, r, op);
    const resend = (waitMs: number): void => {
      this.resendTimer = setTimeout(() => {
        this.frontEnd.counters.resent++;
        this.gateway.submit(this, this.c, r, op);
        resend(Math.min(2 * waitMs, RESEND_MAX_MS));
      }, waitMs);
    };
    resend(RESEND_FIRST_MS);
  }

  deliver(reply: ClientReply): void {
    if (this.state === "closed") return;
    clearTimeout(this.resendTimer);
    if (this.state === "connecting") return this.onConnectReply(reply.res);
    const pending = this.inflight;
    this.inflight = undefined;
    if (pending) this.frontEnd.noteLatency(performance.now() - pending.at);
    this.receive(decodeReply(reply.res) as ConnectionMessage);
    this.send();
  }

  refuse(): void {
    this.close("the gateway is overloaded");
  }

  // ---- output ----

  /** A message of the state machine for this connection, reply or push. */
  receive(message: ConnectionMessage): void {
    if (this.state === "closed" || message.t !== "frames") return;
    this.frontEnd.noteZxid(message.z, message.n);
    if (message.o === undefined) return this.write(message.f, message.close);
    if (message.o < this.expected) return; // another sink's copy
    this.held.set(message.o, message);
    if (this.state === "open") this.drainHeld();
  }

  private drainHeld(): void {
    for (;;) {
      const next = this.held.get(this.expected);
      if (!next) break;
      this.held.delete(this.expected);
      this.expected++;
      this.write(next.f, next.close);
      if (this.state === "closed") return;
    }
    clearTimeout(this.gapTimer);
    this.gapTimer = undefined;
    if (this.held.size > 0) {
      this.gapTimer = setTimeout(
        () => this.close(`message ${this.expected} never arrived`),
        GAP_TIMEOUT_MS,
      );
    }
  }

  /** Writes frames (the frames of one turn leave in one write), then closes if asked. */
  private write(frames: Uint8Array, close?: string): void {
    if (this.state === "closed") return;
    if (frames.length > 0) {
      if (!this.corked) {
        this.corked = true;
        this.socket.cork();
        setImmediate(() => {
          this.corked = false;
          this.socket.uncork();
        });
      }
      this.socket.write(frames);
      this.frontEnd.counters.sent++;
      if (this.socket.writableLength > CLIENT_WRITE_LIMIT_BYTES) {
        return this.close("the client does not read its replies", true);
      }
    }
    if (close !== undefined) this.close(close);
  }

  private fourLetterWord(word: string): void {
    this.state = "closed";
    this.socket.end(this.frontEnd.fourLetterWord(word));
    this.frontEnd.forget(this);
  }

  /** Closes the connection: what was written still leaves, unless `abort`. */
  close(reason: string, abort = false): void {
    if (this.state === "closed") return;
    this.state = "closed";
    clearTimeout(this.gapTimer);
    clearTimeout(this.resendTimer);
    this.frontEnd.log.debug({ event: "zk-connection-closed", session: this.session, reason });
    if (abort) this.socket.destroy();
    else this.socket.end();
    this.frontEnd.forget(this);
  }
}

export class ZkFrontEnd implements FrontEnd {
  private readonly connections = new Map<number, ZkConnection>();
  private gateway: Gateway | undefined;
  private server: Server | undefined;
  paused = false;
  private closed = false;
  /** `resent`: commands sent again for want of a reply. */
  readonly counters = { received: 0, sent: 0, connectionsAccepted: 0, resent: 0 };
  private readonly latency = { min: Infinity, max: 0, total: 0, count: 0 };
  private zxid = 0;
  private nodeCount = 0;

  constructor(private readonly options: ZkFrontEndOptions) {}

  get log(): Logger {
    return this.options.log;
  }

  get stats(): Readonly<Record<string, number>> {
    return { ...this.counters, clients: this.connections.size, zxid: this.zxid };
  }

  listen(gateway: Gateway, host: string, port: number): Promise<number> {
    this.gateway = gateway;
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    return listenForClients(server, host, port);
  }

  setPaused(paused: boolean): void {
    this.paused = paused;
    for (const connection of this.connections.values()) connection.updateReading();
  }

  onPush(push: ClientReply): void {
    this.connections.get(push.c)?.receive(decodeReply(push.res) as ConnectionMessage);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const connection of this.connections.values()) connection.socket.destroy();
    await new Promise<void>((resolve) =>
      this.server ? this.server.close(() => resolve()) : resolve(),
    );
  }

  forget(connection: ZkConnection): void {
    if (this.connections.get(connection.c) === connection) this.connections.delete(connection.c);
    this.gateway?.withdraw(connection);
  }

  noteZxid(zxid: number, nodeCount: number | undefined): void {
    this.zxid = Math.max(this.zxid, zxid);
    if (nodeCount !== undefined) this.nodeCount = nodeCount;
  }

  noteLatency(ms: number): void {
    const l = this.latency;
    l.min = Math.min(l.min, ms);
    l.max = Math.max(l.max, ms);
    l.total += ms;
    l.count++;
  }

  private accept(socket: Socket): void {
    if (this.closed || !this.gateway) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const connection = new ZkConnection(socket, this, this.gateway);
    this.connections.set(connection.c, connection);
    this.counters.connectionsAccepted++;
    if (this.paused) socket.pause();
    socket.on("data", (chunk: Buffer) => connection.onData(chunk));
    socket.on("error", () => undefined); // followed by close
    socket.on("close", () => connection.close("the client closed the connection"));
  }

  /** The text a four-letter word answers. */
  fourLetterWord(word: string): string {
    const l = this.latency;
    const min = l.count ? Math.round(l.min) : 0;
    const avg = l.count ? (l.total / l.count).toFixed(1) : "0.0";
    const max = Math.round(l.max);
    const outstanding = [...this.connections.values()].reduce((n, c) => n + c.outstanding, 0);
    const body = [
      `Latency min/avg/max: ${min}/${avg}/${max}`,
      `Received: ${this.counters.received}`,
      `Sent: ${this.counters.sent}`,
      `Connections: ${this.connections.size}`,
      `Outstanding: ${outstanding}`,
      `Zxid: 0x${this.zxid.toString(16)}`,
      "Mode: follower",
      `Node count: ${this.nodeCount}`,
    ];
    switch (word) {
      case "ruok":
        return "imok";
      case "isro":
        return "rw";
      case "srvr":
        return [`Zookeeper version: ${ZK_VERSION}`, ...body, ""].join("\n");
      case "stat": {
        const clients = [...this.connections.values()].map(
          (c) => ` /${c.socket.remoteAddress}:${c.socket.remotePort}[1](queued=${c.outstanding})`,
        );
        return [`Zookeeper version: ${ZK_VERSION}`, "Clients:", ...clients, "", ...body, ""].join(
          "\n",
        );
      }
      case "mntr":
        return (
          [
            ["zk_version", ZK_VERSION],
            ["zk_server_state", "follower"],
            ["zk_avg_latency", avg],
            ["zk_max_latency", max],
            ["zk_min_latency", min],
            ["zk_packets_received", this.counters.received],
            ["zk_packets_sent", this.counters.sent],
            ["zk_num_alive_connections", this.connections.size],
            ["zk_outstanding_requests", outstanding],
            ["zk_znode_count", this.nodeCount],
            ["zk_last_zxid", `0x${this.zxid.toString(16)}`],
          ]
            .map(([key, value]) => `${key}\t${value}`)
            .join("\n") + "\n"
        );
      case "envi":
        return `Environment:\nzookeeper.version=${ZK_VERSION}\n`;
      default:
        return `${word} is not executed because it is not in the whitelist.\n`;
    }
  }
}
