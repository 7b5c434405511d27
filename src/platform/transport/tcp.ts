/**
 * The only place the platform opens TCP sockets: listening for authenticated links, and a
 * client link that reconnects with backoff to wherever its target currently is.
 */
import { createConnection, createServer, type Server } from "node:net";
import { Connection, type LinkLog, type Peer } from "../wire/connection.js";

export interface Address {
  readonly host: string;
  readonly port: number;
}

export interface LinkOptions<In> {
  readonly secret: Buffer;
  readonly parse: (value: unknown) => In;
  readonly log: LinkLog;
  readonly highWatermarkBytes?: number;
}

export function listen<In>(
  address: Address,
  options: LinkOptions<In>,
  onConnection: (connection: Connection<In>) => void,
): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => {
    onConnection(new Connection<In>({ ...options, socket, side: "server" }));
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(address.port, address.host, () => {
      server.off("error", reject);
      const bound = server.address();
      if (bound === null || typeof bound === "string") throw new Error("unexpected server address");
      resolve({ server, port: bound.port });
    });
  });
}

export interface ClientLinkHandlers<In> {
  onReady(connection: Connection<In>): void;
  onMessage(message: In): void;
  onDown?(reason: string): void;
  onDrain?(): void;
}

/** A link to a server that comes back by itself: reconnects after 50 ms, doubling to 1 s. */
export class ClientLink<In> {
  private connection: Connection<In> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private backoffMs = 0;
  private closed = false;

  constructor(
    private target: Address,
    private readonly me: Peer,
    private readonly options: LinkOptions<In>,
    private readonly handlers: ClientLinkHandlers<In>,
  ) {
    this.connect();
  }

  get ready(): Connection<In> | undefined {
    return this.connection?.isReady ? this.connection : undefined;
  }

  get address(): Address {
    return this.target;
  }

  /** Points the link somewhere else; reconnects at once if the target changed. */
  retarget(target: Address): void {
    if (target.host === this.target.host && target.port === this.target.port) return;
    this.target = target;
    this.backoffMs = 0;
    this.connection?.close("target moved");
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.connection?.close("link closed");
  }

  private connect(): void {
    if (this.closed) return;
    const socket = createConnection(this.target.port, this.target.host);
    const connection = new Connection<In>({ ...this.options, socket, side: this.me });
    this.connection = connection;
    connection.start({
      onReady: () => {
        this.backoffMs = 0;
        this.handlers.onReady(connection);
      },
      onMessage: (message) => this.handlers.onMessage(message),
      onDrain: () => this.handlers.onDrain?.(),
      onClose: (reason) => {
        if (this.connection !== connection) return;
        this.connection = undefined;
        this.handlers.onDown?.(reason);
        if (this.closed) return;
        this.retryTimer = setTimeout(() => this.connect(), this.backoffMs);
        this.backoffMs = Math.min(1000, Math.max(50, this.backoffMs * 2));
      },
    });
  }
}
