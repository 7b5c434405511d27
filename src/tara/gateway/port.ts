/**
 * The stage end of the gateways: a port connects its replica to every container's gateway,
 * found through the addresses each publishes in the run directory (re-read at every reconnect:
 * a gateway may come back elsewhere), over the platform's authenticated links.
 *
 * - A source port delivers every request any gateway sends it (to the stage's `onExternal`)
 *   and, while paused (its replica is throttled), stops reading from the gateways, which then
 *   stop reading their clients.
 * - A sink port sends each ClientReply the stage outputs to gateway `reply.g`, batched per
 *   event-loop turn per gateway; a reply for a gateway that is not connected is dropped (the
 *   client retries).
 */
import type { Tuple } from "../../platform/api/stage.js";
import type { ExternalPort, PortEnvironment, PortFactory } from "../../platform/api/topology.js";
import { readGatewayFile } from "../../platform/runtime/gateway-file.js";
import { ClientLink } from "../../platform/transport/tcp.js";
import type { Connection } from "../../platform/wire/connection.js";
import type { ClientReply, ClientRequest } from "../messages.js";
import {
  INTERNAL_BATCH_BYTES,
  isClientReply,
  parseGatewayMessage,
  type PortRole,
  type RegisterPort,
  type RequestsMessage,
} from "./protocol.js";

/** How often a port looks for a gateway's address file that is not there yet. */
const FILE_POLL_MS = 100;

/** The port of a request source ("source") or a reply sink ("sink"). */
export function gatewayPort(role: PortRole): PortFactory {
  return (index, env) => new GatewayPort(role, index, env);
}

export interface GatewayPortStats {
  /** Gateways this port is connected to now. */
  connected: number;
  delivered: number;
  sent: number;
  /** Replies dropped: their gateway was not connected, or they were not ClientReplies. */
  dropped: number;
}

export class GatewayPort implements ExternalPort {
  readonly stats: GatewayPortStats = { connected: 0, delivered: 0, sent: 0, dropped: 0 };
  private readonly links: GatewayLink[] = [];
  private deliver: ((input: Tuple) => void) | undefined;
  private paused = false;
  private closed = false;
  private warnedInvalid = false;

  constructor(
    readonly role: PortRole,
    readonly index: number,
    readonly env: PortEnvironment,
  ) {}

  open(deliver: (input: Tuple) => void): void {
    if (this.deliver || this.closed) return;
    this.deliver = deliver;
    for (let container = 0; container < this.env.containers; container++) {
      this.links.push(new GatewayLink(this, container));
    }
  }

  send(output: Tuple): void {
    if (this.role !== "sink" || !isClientReply(output)) {
      this.stats.dropped++;
      if (!this.warnedInvalid) {
        this.warnedInvalid = true;
        this.env.log.warn(
          { event: "port-output-dropped", role: this.role },
          "only a sink port sends, and only ClientReplies: output dropped",
        );
      }
      return;
    }
    const link = this.links[output.g];
    if (!link || !link.queue(output)) this.stats.dropped++;
  }

  pause(): void {
    this.paused = true;
    for (const link of this.links) link.ready?.pauseReading();
  }

  resume(): void {
    this.paused = false;
    for (const link of this.links) link.ready?.resumeReading();
  }

  close(): void {
    this.closed = true;
    for (const link of this.links) link.close();
  }

  /** Called by a link when a gateway sends requests. */
  onRequests(requests: readonly ClientRequest[]): void {
    if (this.closed || this.role !== "source") return;
    for (const request of requests) {
      this.stats.delivered++;
      this.deliver?.(request);
    }
  }

  get isPaused(): boolean {
    return this.paused;
  }
}

/** One port's link to one container's gateway. */
class GatewayLink {
  private link: ClientLink<RequestsMessage> | undefined;
  private fileTimer: NodeJS.Timeout | undefined;
  private out: ClientReply[] = [];
  private outBytes = 0;
  private flushScheduled = false;
  private closed = false;
  private up = false;

  constructor(
    private readonly port: GatewayPort,
    private readonly container: number,
  ) {
    this.start();
  }

  get ready(): Connection<RequestsMessage> | undefined {
    return this.link?.ready;
  }

  /** Queues a reply for this turn's batch; false if the gateway is not connected. */
  queue(reply: ClientReply): boolean {
    const connection = this.ready;
    if (!connection) return false;
    this.out.push(reply);
    this.outBytes += reply.res.length;
    if (this.outBytes >= INTERNAL_BATCH_BYTES) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.flush();
      });
    }
    return true;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.fileTimer);
    this.link?.close();
  }

  private flush(): void {
    if (this.out.length === 0) return;
    const replies = this.out;
    this.out = [];
    this.outBytes = 0;
    const connection = this.ready;
    if (!connection) {
      this.port.stats.dropped += replies.length;
      return;
    }
    this.port.stats.sent += replies.length;
    connection.send({ t: "replies", replies });
  }

  /** Waits for the gateway's address file, then links to it. */
  private start(): void {
    if (this.closed) return;
    const { env } = this.port;
    const addresses = readGatewayFile(env.runDir, this.container);
    if (!addresses) {
      this.fileTimer = setTimeout(() => this.start(), FILE_POLL_MS);
      return;
    }
    const id = `${this.port.role}/${env.stage}:${this.port.index}`;
    this.link = new ClientLink<RequestsMessage>(
      { host: addresses.host, port: addresses.internalPort },
      { role: "port", id },
      { secret: env.secret, parse: parseGatewayMessage, log: env.log },
      {
        onReady: (connection) => {
          const register: RegisterPort = {
            t: "register",
            role: this.port.role,
            stage: env.stage,
            index: this.port.index,
            parallelism: env.parallelism,
          };
          connection.send(register);
          if (this.port.isPaused) connection.pauseReading();
          this.up = true;
          this.port.stats.connected++;
          env.log.info(
            { event: "gateway-connected", gateway: this.container },
            "port connected to a gateway",
          );
        },
        onMessage: (message) => this.port.onRequests(message.reqs),
        onDown: (reason) => {
          if (this.up) {
            this.up = false;
            this.port.stats.connected--;
            env.log.info(
              { event: "gateway-disconnected", gateway: this.container, reason },
              "port lost a gateway",
            );
          }
          // The next attempt goes wherever the gateway publishes itself now.
          const now = readGatewayFile(env.runDir, this.container);
          if (now && !this.closed) this.link?.retarget({ host: now.host, port: now.internalPort });
        },
      },
    );
  }
}
