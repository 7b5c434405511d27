/**
 * The gateway of one container: clients send requests to it over the native protocol
 * (protocol.ts), it hands each to one request source and passes the first reply any reply sink
 * sends back to the client waiting for it. Sources and sinks reach it through their ports
 * (port.ts) over the platform's authenticated links.
 *
 * Routing: a request (c, r) entering here gets g = this gateway's index and goes to one
 * connected source, preferably replica g mod (number of sources). The pending table remembers,
 * per (c, r), the client connection to answer and the source it went to: a source link that
 * drops has its pending requests re-sent to another source at once, a client re-sending a
 * pending (c, r) takes the entry over (and it is forwarded again), the first reply deletes the
 * entry (later copies, one per sink, are dropped) and a client connection that closes drops
 * its entries. Without any source, requests wait (up to `maxUnrouted`, then OVERLOADED) and
 * leave when one connects. While a source link is congested the gateway stops reading clients.
 */
import { createServer, type Server, type Socket } from "node:net";
import type { Logger } from "pino";
import { listen } from "../../platform/transport/tcp.js";
import type { Connection } from "../../platform/wire/connection.js";
import { WireError } from "../../platform/wire/errors.js";
import { decodeBody, encodeFrame, FrameDecoder } from "../../platform/wire/frames.js";
import type { ClientReply, ClientRequest } from "../messages.js";
import {
  INTERNAL_BATCH_BYTES,
  MAX_CLIENT_FRAME_BYTES,
  ProtocolError,
  parseClientFrame,
  parsePortMessage,
  type ErrorCode,
  type ErrorFrame,
  type PortRole,
  type RegisterPort,
  type RepliesMessage,
  type ReplyFrame,
  type RequestFrame,
} from "./protocol.js";

export interface GatewayOptions {
  /** This gateway's index: its container's. Requests entering here carry it as `g`. */
  readonly index: number;
  readonly host: string;
  /** Port for clients; 0: any free port. */
  readonly clientPort: number;
  /** Port for stage ports (authenticated links); 0: any free port. */
  readonly internalPort: number;
  readonly secret: Buffer;
  readonly log: Logger;
  /** Requests kept while no source is connected; beyond this a new one is OVERLOADED. */
  readonly maxUnrouted?: number;
  /** Requests awaiting a reply, all clients together; beyond this a new one is OVERLOADED. */
  readonly maxPending?: number;
  /** A link to a source queueing more than this is congested: clients are not read. */
  readonly highWatermarkBytes?: number;
}

export interface GatewayStats {
  clients: number;
  sources: number;
  sinks: number;
  pending: number;
  unrouted: number;
  requests: number;
  /** Requests sent to a source again after their source link dropped. */
  resent: number;
  replies: number;
  /** Replies for no pending request: copies from further sinks, or for gone clients. */
  dropped: number;
  /** Client connections closed for a protocol error. */
  rejected: number;
  overloaded: number;
  clientsPaused: boolean;
}

const DEFAULT_MAX_UNROUTED = 10_000;
const DEFAULT_MAX_PENDING = 100_000;
const DEFAULT_HIGH_WATERMARK_BYTES = 4 * 1024 * 1024;
/** A client that leaves this much of its replies unread is dropped. */
const CLIENT_WRITE_LIMIT_BYTES = 64 * 1024 * 1024;
/** After an error frame, how long a client has to close before its socket is destroyed. */
const LINGER_MS = 5000;

/** One client connection. */
class Client {
  readonly keys = new Set<string>();
  readonly decoder = new FrameDecoder(MAX_CLIENT_FRAME_BYTES);
  /** Closed for us: no more input is read, nothing more is written. */
  closed = false;
  private corked = false;

  constructor(readonly socket: Socket) {}

  /** Writes a frame; the frames of one turn leave in one write. */
  write(frame: Buffer): void {
    if (this.closed) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(frame);
  }
}

/** A registered port's link. */
interface PortLink {
  readonly connection: Connection<RegisterPort | RepliesMessage>;
  readonly role: PortRole;
  readonly name: string;
  readonly index: number;
  readonly parallelism: number;
  /** Sources: entries sent (or about to be) over this link and not answered yet. */
  readonly assigned: Set<Entry>;
  /** Sources: requests of this turn, not yet sent. */
  out: ClientRequest[];
  outBytes: number;
  flushScheduled: boolean;
}

interface Entry {
  readonly key: string;
  readonly c: number;
  readonly r: number;
  op: Uint8Array;
  client: Client;
  source: PortLink | undefined;
}

export class Gateway {
  private readonly clients = new Set<Client>();
  private readonly sources = new Map<string, PortLink>();
  private readonly sinks = new Map<string, PortLink>();
  private readonly pending = new Map<string, Entry>();
  /** Entries waiting for a source, oldest first. */
  private readonly unrouted = new Set<Entry>();
  private readonly congested = new Set<PortLink>();
  private readonly portConnections = new Set<Connection<unknown>>();
  private readonly maxUnrouted: number;
  private readonly maxPending: number;
  private clientsPaused = false;
  private closed = false;
  /** pickSource's answer while the sources stay the same (null: not computed). */
  private chosenSource: PortLink | undefined | null = null;
  private readonly counters = {
    requests: 0,
    resent: 0,
    replies: 0,
    dropped: 0,
    rejected: 0,
    overloaded: 0,
  };

  private internalServer: Server | undefined;
  private clientServer: Server | undefined;
  /** The ports it listens on (the ones asked for, or the ones the system chose). */
  internalPort = 0;
  clientPort = 0;

  private constructor(private readonly options: GatewayOptions) {
    this.maxUnrouted = options.maxUnrouted ?? DEFAULT_MAX_UNROUTED;
    this.maxPending = options.maxPending ?? DEFAULT_MAX_PENDING;
  }

  get index(): number {
    return this.options.index;
  }

  /** Listens on both ports; rejects (e.g. EADDRINUSE) with nothing left open. */
  static async start(options: GatewayOptions): Promise<Gateway> {
    const gateway = new Gateway(options);
    const { server, port } = await listen<RegisterPort | RepliesMessage>(
      { host: options.host, port: options.internalPort },
      {
        secret: options.secret,
        log: options.log,
        parse: parsePortMessage,
        highWatermarkBytes: options.highWatermarkBytes ?? DEFAULT_HIGH_WATERMARK_BYTES,
      },
      (connection) => gateway.acceptPort(connection),
    );
    gateway.internalServer = server;
    gateway.internalPort = port;
    try {
      await gateway.listenClients();
    } catch (error) {
      server.close();
      throw error;
    }
    return gateway;
  }

  get stats(): GatewayStats {
    return {
      clients: this.clients.size,
      sources: this.sources.size,
      sinks: this.sinks.size,
      pending: this.pending.size,
      unrouted: this.unrouted.size,
      ...this.counters,
      clientsPaused: this.clientsPaused,
    };
  }

  /** Stops listening and drops every connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const closing = [this.internalServer, this.clientServer].map(
      (server) =>
        new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())),
    );
    for (const client of this.clients) client.socket.destroy();
    for (const connection of this.portConnections) connection.close("gateway closed");
    await Promise.all(closing);
  }

  // ---- clients ----

  private listenClients(): Promise<void> {
    const server = createServer((socket) => this.acceptClient(socket));
    this.clientServer = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.options.clientPort, this.options.host, () => {
        server.off("error", reject);
        const bound = server.address();
        if (bound === null || typeof bound === "string") throw new Error("unexpected address");
        this.clientPort = bound.port;
        resolve();
      });
    });
  }

  private acceptClient(socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const client = new Client(socket);
    this.clients.add(client);
    if (this.clientsPaused) socket.pause();
    socket.on("data", (chunk: Buffer) => this.onClientData(client, chunk));
    socket.on("error", () => undefined); // followed by close
    socket.on("close", () => this.dropClient(client));
  }

  private onClientData(client: Client, chunk: Buffer): void {
    if (client.closed) return;
    let bodies: Buffer[];
    try {
      bodies = client.decoder.push(chunk);
    } catch (error) {
      const code: ErrorCode =
        error instanceof WireError && error.code === "FRAME_TOO_LARGE"
          ? "FRAME_TOO_LARGE"
          : "MALFORMED";
      this.reject(client, code, (error as Error).message);
      return;
    }
    for (const body of bodies) {
      let request: RequestFrame;
      try {
        request = parseClientFrame(decodeBody(body));
      } catch (error) {
        if (error instanceof ProtocolError) this.reject(client, error.code, error.message);
        else this.reject(client, "MALFORMED", (error as Error).message);
        return;
      }
      this.onRequest(client, request);
    }
  }

  /** Answers a bad frame with an error frame and closes that client's connection. */
  private reject(client: Client, code: ErrorCode, message: string): void {
    this.counters.rejected++;
    this.options.log.warn(
      {
        event: "client-rejected",
        code,
        reason: message,
        remote: `${client.socket.remoteAddress}:${client.socket.remotePort}`,
      },
      "bad frame from a client, closing its connection",
    );
    const frame: ErrorFrame = { t: "error", code, message };
    client.write(encodeFrame(frame));
    client.closed = true;
    this.dropClient(client);
    // Input that follows is discarded; the client has a while to read the error and close.
    client.socket.resume();
    client.socket.end();
    setTimeout(() => client.socket.destroy(), LINGER_MS).unref();
  }

  private dropClient(client: Client): void {
    client.closed = true;
    if (!this.clients.delete(client)) return;
    for (const key of client.keys) {
      const entry = this.pending.get(key);
      if (entry && entry.client === client) this.forget(entry);
    }
    client.keys.clear();
  }

  private onRequest(client: Client, request: RequestFrame): void {
    this.counters.requests++;
    const { c, r, op } = request;
    const key = `${c}:${r}`;
    const existing = this.pending.get(key);
    if (existing) {
      // A retry: it takes the entry over and goes out again (the first copy may be lost).
      if (existing.client !== client) {
        existing.client.keys.delete(key);
        existing.client = client;
        client.keys.add(key);
      }
      existing.op = op;
      existing.source?.assigned.delete(existing);
      existing.source = undefined;
      this.unrouted.delete(existing);
      this.route(existing);
      return;
    }
    const noSource = this.pickSource() === undefined;
    if (
      this.pending.size >= this.maxPending ||
      (noSource && this.unrouted.size >= this.maxUnrouted)
    ) {
      this.counters.overloaded++;
      const frame: ErrorFrame = {
        t: "error",
        code: "OVERLOADED",
        message: noSource
          ? "no request source is connected to this gateway and too many requests wait"
          : "too many requests pending at this gateway",
        c,
        r,
      };
      client.write(encodeFrame(frame));
      return;
    }
    const entry: Entry = { key, c, r, op, client, source: undefined };
    this.pending.set(key, entry);
    client.keys.add(key);
    this.route(entry);
  }

  /** Removes an entry from every table. */
  private forget(entry: Entry): void {
    this.pending.delete(entry.key);
    entry.client.keys.delete(entry.key);
    entry.source?.assigned.delete(entry);
    this.unrouted.delete(entry);
  }

  // ---- sources ----

  /** A connected source: replica g mod (number of sources) if connected, else the next one that is. */
  private pickSource(): PortLink | undefined {
    if (this.chosenSource === null) this.chosenSource = this.chooseSource();
    return this.chosenSource;
  }

  private chooseSource(): PortLink | undefined {
    if (this.sources.size === 0) return undefined;
    let count = 0;
    const byIndex = new Map<number, PortLink>();
    for (const link of this.sources.values()) {
      count = Math.max(count, link.parallelism, link.index + 1);
      if (!byIndex.has(link.index)) byIndex.set(link.index, link);
    }
    const preferred = this.options.index % count;
    for (let k = 0; k < count; k++) {
      const link = byIndex.get((preferred + k) % count);
      if (link) return link;
    }
    return this.sources.values().next().value;
  }

  private route(entry: Entry): void {
    const source = this.pickSource();
    if (!source) {
      this.unrouted.add(entry);
      return;
    }
    entry.source = source;
    source.assigned.add(entry);
    const { c, r, op } = entry;
    source.out.push({ c, r, g: this.options.index, op });
    source.outBytes += op.length;
    if (source.outBytes >= INTERNAL_BATCH_BYTES) this.flush(source);
    else if (!source.flushScheduled) {
      source.flushScheduled = true;
      setImmediate(() => {
        source.flushScheduled = false;
        this.flush(source);
      });
    }
  }

  private flush(source: PortLink): void {
    if (source.out.length === 0) return;
    const reqs = source.out;
    source.out = [];
    source.outBytes = 0;
    if (source.connection.isClosed) return; // its entries were re-routed when it closed
    source.connection.send({ t: "requests", reqs });
    if (source.connection.isCongested && !this.congested.has(source)) {
      this.congested.add(source);
      this.updateClientPause();
    }
  }

  private updateClientPause(): void {
    const pause = this.congested.size > 0;
    if (pause === this.clientsPaused) return;
    this.clientsPaused = pause;
    this.options.log.info(
      { event: pause ? "clients-paused" : "clients-resumed" },
      pause ? "a source link is congested: not reading clients" : "source links drained",
    );
    for (const client of this.clients) {
      if (pause) client.socket.pause();
      else client.socket.resume();
    }
  }

  // ---- ports ----

  private acceptPort(connection: Connection<RegisterPort | RepliesMessage>): void {
    this.portConnections.add(connection as Connection<unknown>);
    let link: PortLink | undefined;
    connection.start({
      onReady: (peer) => {
        if (peer.role !== "port") connection.close(`role ${peer.role} may not use a gateway`);
      },
      onMessage: (message) => {
        if (message.t === "register") {
          if (link) return connection.close("registered twice");
          link = this.register(connection, message);
          return;
        }
        if (!link || link.role !== "sink") return connection.close("replies from a non-sink");
        this.onReplies(message.replies);
      },
      onDrain: () => {
        if (link && this.congested.delete(link)) this.updateClientPause();
      },
      onClose: (reason) => {
        this.portConnections.delete(connection as Connection<unknown>);
        if (link) this.unregister(link, reason);
      },
    });
  }

  private register(
    connection: Connection<RegisterPort | RepliesMessage>,
    message: RegisterPort,
  ): PortLink {
    const name = `${message.stage}:${message.index}`;
    const link: PortLink = {
      connection,
      role: message.role,
      name,
      index: message.index,
      parallelism: message.parallelism,
      assigned: new Set(),
      out: [],
      outBytes: 0,
      flushScheduled: false,
    };
    const table = message.role === "source" ? this.sources : this.sinks;
    const previous = table.get(name);
    table.set(name, link);
    this.chosenSource = null;
    this.options.log.info(
      { event: "port-connected", role: message.role, port: name },
      "port connected",
    );
    // A new incarnation replaces the old link, whose requests go to the new one if preferred.
    previous?.connection.close("replaced by a new connection");
    if (message.role === "source" && this.unrouted.size > 0) {
      const waiting = [...this.unrouted];
      this.unrouted.clear();
      for (const entry of waiting) this.route(entry);
    }
    return link;
  }

  private unregister(link: PortLink, reason: string): void {
    const table = link.role === "source" ? this.sources : this.sinks;
    if (table.get(link.name) === link) table.delete(link.name);
    this.chosenSource = null;
    this.options.log.info(
      { event: "port-disconnected", role: link.role, port: link.name, reason },
      "port disconnected",
    );
    if (link.role !== "source") return;
    link.out = [];
    link.outBytes = 0;
    if (this.congested.delete(link)) this.updateClientPause();
    const orphans = [...link.assigned];
    link.assigned.clear();
    for (const entry of orphans) {
      entry.source = undefined;
      this.counters.resent++;
      this.route(entry);
    }
  }

  private onReplies(replies: readonly ClientReply[]): void {
    for (const reply of replies) {
      const entry =
        reply.g === this.options.index ? this.pending.get(`${reply.c}:${reply.r}`) : undefined;
      if (!entry) {
        this.counters.dropped++;
        continue;
      }
      this.forget(entry);
      this.counters.replies++;
      const frame: ReplyFrame = { t: "rep", c: reply.c, r: reply.r, res: reply.res };
      entry.client.write(encodeFrame(frame));
      if (entry.client.socket.writableLength > CLIENT_WRITE_LIMIT_BYTES) {
        this.options.log.warn({ event: "client-overflow" }, "a client does not read its replies");
        entry.client.socket.destroy();
      }
    }
  }
}
