/**
 * The gateway of one container: the front end (native-front-end.ts, or a service's own, e.g.
 * ZooKeeper's) accepts clients and submits their requests; the gateway hands each to one
 * request source and passes the first reply any reply sink sends back to the requester
 * waiting for it, and pushes (messages for no request) to the front end. Sources and sinks
 * reach it through their ports (port.ts) over the platform's authenticated links.
 *
 * Routing: a request (c, r) entering here gets g = this gateway's index and goes to one
 * connected source, preferably replica g mod (number of sources). The pending table remembers,
 * per (c, r), the requester to answer and the source it went to: a source link that drops has
 * its pending requests re-sent to another source at once, a requester re-submitting a pending
 * (c, r) takes the entry over (and it is forwarded again), the first reply deletes the entry
 * (later copies, one per sink, are dropped) and a requester that goes away drops its entries.
 * Without any source, requests wait (up to `maxUnrouted`, then they are refused) and leave
 * when one connects. While a source link is congested the front end stops reading clients.
 */
import type { Server } from "node:net";
import type { Logger } from "pino";
import { listen } from "../../platform/transport/tcp.js";
import type { Connection } from "../../platform/wire/connection.js";
import type { ClientReply, ClientRequest } from "../messages.js";
import {
  INTERNAL_BATCH_BYTES,
  parsePortMessage,
  type PortRole,
  type RegisterPort,
  type RepliesMessage,
} from "./protocol.js";

/** The client side of a gateway: a listening socket and its protocol. */
export interface FrontEnd {
  /** Starts accepting clients on `port` (0: any); resolves with the port bound. */
  listen(gateway: Gateway, host: string, port: number): Promise<number>;
  /** Stops (or resumes) reading clients: a source link is congested. */
  setPaused(paused: boolean): void;
  /** A message of the state machine to client `push.c` of this gateway, not a reply. */
  onPush(push: ClientReply): void;
  /** Stops listening and drops every client. */
  close(): Promise<void>;
  /** The front end's counters, merged into the gateway's stats. */
  readonly stats: Readonly<Record<string, number | boolean>>;
}

/** A front end's client server listening on host:port (0: any); resolves with the port bound. */
export function listenForClients(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      const bound = server.address();
      if (bound === null || typeof bound === "string") throw new Error("unexpected address");
      resolve(bound.port);
    });
  });
}

/** Who waits for the replies of the requests it submits (e.g. a client connection). */
export interface Requester {
  /** The first reply to a pending request of this requester. */
  deliver(reply: ClientReply): void;
  /** The gateway will not forward request (c, r): too many requests wait. */
  refuse(c: number, r: number, message: string): void;
}

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
  /** Requests kept while no source is connected; beyond this a new one is refused. */
  readonly maxUnrouted?: number;
  /** Requests awaiting a reply, all clients together; beyond this a new one is refused. */
  readonly maxPending?: number;
  /** A link to a source queueing more than this is congested: clients are not read. */
  readonly highWatermarkBytes?: number;
}

export interface GatewayStats {
  sources: number;
  sinks: number;
  pending: number;
  unrouted: number;
  requests: number;
  /** Requests sent to a source again after their source link dropped. */
  resent: number;
  replies: number;
  pushes: number;
  /** Replies for no pending request: copies from further sinks, or for gone requesters. */
  dropped: number;
  overloaded: number;
  clientsPaused: boolean;
  /** The front end's own counters. */
  [counter: string]: number | boolean;
}

const DEFAULT_MAX_UNROUTED = 10_000;
const DEFAULT_MAX_PENDING = 100_000;
const DEFAULT_HIGH_WATERMARK_BYTES = 4 * 1024 * 1024;

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
  requester: Requester;
  source: PortLink | undefined;
}

export class Gateway {
  private readonly sources = new Map<string, PortLink>();
  private readonly sinks = new Map<string, PortLink>();
  private readonly pending = new Map<string, Entry>();
  /** The keys of each requester's pending entries. */
  private readonly byRequester = new Map<Requester, Set<string>>();
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
    pushes: 0,
    dropped: 0,
    overloaded: 0,
  };

  private internalServer: Server | undefined;
  /** The ports it listens on (the ones asked for, or the ones the system chose). */
  internalPort = 0;
  clientPort = 0;

  private constructor(
    private readonly options: GatewayOptions,
    private readonly frontEnd: FrontEnd,
  ) {
    this.maxUnrouted = options.maxUnrouted ?? DEFAULT_MAX_UNROUTED;
    this.maxPending = options.maxPending ?? DEFAULT_MAX_PENDING;
  }

  get index(): number {
    return this.options.index;
  }

  get log(): Logger {
    return this.options.log;
  }

  /** Listens on both ports; rejects (e.g. EADDRINUSE) with nothing left open. */
  static async start(options: GatewayOptions, frontEnd: FrontEnd): Promise<Gateway> {
    const gateway = new Gateway(options, frontEnd);
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
      gateway.clientPort = await frontEnd.listen(gateway, options.host, options.clientPort);
    } catch (error) {
      server.close();
      throw error;
    }
    return gateway;
  }

  get stats(): GatewayStats {
    return {
      ...this.frontEnd.stats,
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
    const closing = new Promise<void>((resolve) =>
      this.internalServer ? this.internalServer.close(() => resolve()) : resolve(),
    );
    for (const connection of this.portConnections) connection.close("gateway closed");
    await Promise.all([closing, this.frontEnd.close()]);
  }

  // ---- requesters ----

  /** Forwards request (c, r) of `requester`; its reply comes back through `deliver`. */
  submit(requester: Requester, c: number, r: number, op: Uint8Array): void {
    this.counters.requests++;
    const key = `${c}:${r}`;
    const existing = this.pending.get(key);
    if (existing) {
      // A retry: it takes the entry over and goes out again (the first copy may be lost).
      if (existing.requester !== requester) {
        this.keysOf(existing.requester).delete(key);
        existing.requester = requester;
        this.keysOf(requester).add(key);
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
      requester.refuse(
        c,
        r,
        noSource
          ? "no request source is connected to this gateway and too many requests wait"
          : "too many requests pending at this gateway",
      );
      return;
    }
    const entry: Entry = { key, c, r, op, requester, source: undefined };
    this.pending.set(key, entry);
    this.keysOf(requester).add(key);
    this.route(entry);
  }

  /** The requester is gone: its pending requests are forgotten (not withdrawn from sources). */
  withdraw(requester: Requester): void {
    const keys = this.byRequester.get(requester);
    if (!keys) return;
    this.byRequester.delete(requester);
    for (const key of keys) {
      const entry = this.pending.get(key);
      if (entry && entry.requester === requester) this.forget(entry);
    }
  }

  private keysOf(requester: Requester): Set<string> {
    let keys = this.byRequester.get(requester);
    if (!keys) this.byRequester.set(requester, (keys = new Set()));
    return keys;
  }

  /** Removes an entry from every table. */
  private forget(entry: Entry): void {
    this.pending.delete(entry.key);
    this.byRequester.get(entry.requester)?.delete(entry.key);
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
    this.frontEnd.setPaused(pause);
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
      if (reply.g !== this.options.index) {
        this.counters.dropped++;
        continue;
      }
      if (reply.r === 0) {
        this.counters.pushes++;
        this.frontEnd.onPush(reply);
        continue;
      }
      const entry = this.pending.get(`${reply.c}:${reply.r}`);
      if (!entry) {
        this.counters.dropped++;
        continue;
      }
      this.forget(entry);
      this.counters.replies++;
      entry.requester.deliver(reply);
    }
  }
}
