/**
 * The TypeScript client of a Tara cluster: submits opaque operations to the gateways over the
 * native protocol (src/tara/gateway/protocol.ts) and returns the replicated state machine's
 * replies.
 *
 * Requests of one client are sequential: one is outstanding, further submits queue behind it.
 * Request ids increase from 1. When no reply comes within `timeoutMs`, or the connection to the
 * gateway is lost, the same (client id, request id) is sent to the next gateway of the list
 * (round robin, reconnecting as needed) until a reply arrives or the client is closed: the
 * replicas execute a request once however often it is retried. An error frame of the gateway
 * about the request rejects it with a TaraGatewayError.
 *
 *     const client = new TaraClient({ gateways: ["127.0.0.1:7850", "127.0.0.1:7851"] });
 *     await client.connect();
 *     const reply = await client.submit(op);
 *     await client.close();
 */
import { randomInt } from "node:crypto";
import { createConnection, type Socket } from "node:net";
import { decodeBody, encodeFrame, FrameDecoder } from "../platform/wire/frames.js";
import {
  MAX_OP_BYTES,
  parseGatewayFrame,
  type GatewayFrame,
  type RequestFrame,
} from "../tara/gateway/protocol.js";

export interface TaraClientOptions {
  /** Client addresses of the gateways, "host:port" ("[v6]:port"), e.g. from cluster.json. */
  readonly gateways: readonly string[];
  /** How long to wait for a reply before retrying at the next gateway; default 1000 ms. */
  readonly timeoutMs?: number;
  /** A safe positive integer; default: a random 53-bit one. Two clients must not share one. */
  readonly clientId?: number;
  /** Index in `gateways` of the gateway to use first (default 0); spreads many clients' load. */
  readonly firstGateway?: number;
}

/** The gateway refused a request or a frame (`code`: see the protocol, e.g. OVERLOADED). */
export class TaraGatewayError extends Error {
  override readonly name = "TaraGatewayError";
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`gateway error ${code}: ${message}`);
  }
}

export interface TaraClientStats {
  /** Requests answered. */
  replies: number;
  /** Sends of a request after its first: timeouts and lost connections. */
  retries: number;
  timeouts: number;
  /** Connections to a gateway that closed or could not be opened. */
  connectionsLost: number;
}

interface Request {
  readonly r: number;
  readonly frame: Buffer;
  readonly resolve: (reply: Uint8Array) => void;
  readonly reject: (error: Error) => void;
  /** Sends so far. */
  attempts: number;
  /** The connection the latest copy went out on (or is waiting to go out on). */
  via: GatewayConnection | undefined;
}

interface Address {
  readonly host: string;
  readonly port: number;
}

export function parseAddress(text: string): Address {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port < 1 || port > 65535) {
    throw new Error(`invalid gateway address ${JSON.stringify(text)}: expected host:port`);
  }
  return { host: match[1] ?? match[2]!, port };
}

function randomClientId(): number {
  // 53 random bits: 21 high and 32 low; 0 is not a valid id.
  for (;;) {
    const id = randomInt(0, 2 ** 21) * 2 ** 32 + randomInt(0, 2 ** 32);
    if (id > 0) return id;
  }
}

export class TaraClient {
  readonly clientId: number;
  readonly stats: TaraClientStats = { replies: 0, retries: 0, timeouts: 0, connectionsLost: 0 };
  private readonly addresses: readonly Address[];
  private readonly timeoutMs: number;
  private readonly connections: (GatewayConnection | undefined)[];
  private current = 0;
  private nextRequestId = 1;
  private readonly queue: Request[] = [];
  private outstanding: Request | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Connections lost or attempts timed out since the last reply or open connection. */
  private failuresInRow = 0;
  private closed = false;

  constructor(options: TaraClientOptions) {
    if (options.gateways.length === 0) throw new Error("TaraClient needs at least one gateway");
    this.addresses = options.gateways.map(parseAddress);
    this.connections = this.addresses.map(() => undefined);
    this.timeoutMs = options.timeoutMs ?? 1000;
    if (!(this.timeoutMs > 0)) throw new Error("timeoutMs must be positive");
    const id = options.clientId ?? randomClientId();
    if (!Number.isSafeInteger(id) || id < 1) {
      throw new Error("clientId must be a safe positive integer");
    }
    this.clientId = id;
    const first = options.firstGateway ?? 0;
    if (!Number.isInteger(first) || first < 0) throw new Error("firstGateway must be an index");
    this.current = first % this.addresses.length;
  }

  /** Index (in `gateways`) of the gateway requests go to now. */
  get gateway(): number {
    return this.current;
  }

  /** Connects to the first gateway that answers, starting with the current one. */
  async connect(): Promise<void> {
    const n = this.addresses.length;
    const errors: string[] = [];
    for (let i = 0; i < n; i++) {
      if (this.closed) throw new Error("TaraClient closed");
      const index = (this.current + i) % n;
      try {
        await this.connection(index).opened;
        this.current = index;
        return;
      } catch (error) {
        errors.push(`${this.addressText(index)}: ${(error as Error).message}`);
      }
    }
    throw new Error(`no gateway reachable (${errors.join("; ")})`);
  }

  /** Submits an operation; resolves with its reply. Retried until it is answered or closed. */
  submit(op: Uint8Array): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new Error("TaraClient closed"));
    if (!(op instanceof Uint8Array)) return Promise.reject(new TypeError("op must be bytes"));
    if (op.length > MAX_OP_BYTES) {
      return Promise.reject(new Error(`op of ${op.length} bytes exceeds ${MAX_OP_BYTES}`));
    }
    return new Promise((resolve, reject) => {
      const r = this.nextRequestId++;
      const frame: RequestFrame = { t: "req", c: this.clientId, r, op };
      this.queue.push({
        r,
        frame: encodeFrame(frame),
        resolve,
        reject,
        attempts: 0,
        via: undefined,
      });
      this.pump();
    });
  }

  /** Rejects what is pending and closes every connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    const error = new Error("TaraClient closed");
    this.outstanding?.reject(error);
    this.outstanding = undefined;
    for (const request of this.queue.splice(0)) request.reject(error);
    const closing = this.connections.map((c) => c?.close("client closed"));
    await Promise.all(closing);
  }

  private pump(): void {
    if (this.outstanding || this.closed) return;
    const next = this.queue.shift();
    if (!next) return;
    this.outstanding = next;
    this.attempt(next);
  }

  /** Sends the outstanding request to the current gateway, connecting if needed. */
  private attempt(request: Request): void {
    if (this.closed || this.outstanding !== request) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.onTimeout(request), this.timeoutMs);
    if (request.attempts > 0) this.stats.retries++;
    request.attempts++;
    const connection = this.connection(this.current);
    request.via = connection;
    if (connection.isOpen) connection.send(request.frame);
    // else: sent by onOpen, or retried elsewhere by onClose.
  }

  private onTimeout(request: Request): void {
    if (this.outstanding !== request) return;
    this.stats.timeouts++;
    const via = request.via;
    // A connection that did not even open in that time is given up; an open one stays, so
    // that a late reply on it is still taken.
    if (via && !via.isOpen) via.close("connect timed out");
    this.failuresInRow++;
    this.advance();
    this.attempt(request);
  }

  private advance(): void {
    this.current = (this.current + 1) % this.addresses.length;
  }

  private connection(index: number): GatewayConnection {
    const existing = this.connections[index];
    if (existing && !existing.isClosed) return existing;
    const connection = new GatewayConnection(this.addresses[index]!, {
      onOpen: () => {
        this.failuresInRow = 0;
        const request = this.outstanding;
        if (request && request.via === connection) connection.send(request.frame);
      },
      onFrame: (frame) => this.onFrame(connection, frame),
      onClose: () => this.onClose(index, connection),
    });
    this.connections[index] = connection;
    return connection;
  }

  private onClose(index: number, connection: GatewayConnection): void {
    if (this.connections[index] === connection) this.connections[index] = undefined;
    if (this.closed) return;
    this.stats.connectionsLost++;
    const request = this.outstanding;
    if (request && request.via === connection) {
      // Lost on its way or before its reply: the same request goes to the next gateway, at
      // once, or after a growing pause once every gateway has failed in a row.
      this.failuresInRow++;
      this.advance();
      const n = this.addresses.length;
      const rounds = Math.floor(this.failuresInRow / n);
      const delay = rounds === 0 ? 0 : Math.min(this.timeoutMs, 25 * 2 ** Math.min(rounds, 10));
      request.via = undefined;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.attempt(request), delay);
    } else if (!request && index === this.current) {
      this.advance(); // next time, try another gateway first
    }
  }

  private onFrame(connection: GatewayConnection, frame: GatewayFrame): void {
    const request = this.outstanding;
    if (frame.t === "rep") {
      if (!request || frame.c !== this.clientId || frame.r !== request.r) return; // late copy
      this.settle(request);
      this.stats.replies++;
      this.failuresInRow = 0;
      request.resolve(frame.res);
      return;
    }
    const aboutIt = frame.c === this.clientId && request !== undefined && frame.r === request.r;
    // An error without ids closes the connection it came on: about the frame sent on it.
    const aboutConnection = frame.c === undefined && request?.via === connection;
    if (!request || !(aboutIt || aboutConnection)) return;
    this.settle(request);
    request.reject(new TaraGatewayError(frame.code, frame.message));
  }

  /** The outstanding request is done: the next one goes out. */
  private settle(request: Request): void {
    clearTimeout(this.timer);
    this.outstanding = undefined;
    request.via = undefined;
    setImmediate(() => this.pump());
  }

  private addressText(index: number): string {
    const { host, port } = this.addresses[index]!;
    return `${host.includes(":") ? `[${host}]` : host}:${port}`;
  }
}

interface ConnectionHandlers {
  onOpen(): void;
  onFrame(frame: GatewayFrame): void;
  onClose(reason: string): void;
}

/** One TCP connection to one gateway. */
class GatewayConnection {
  readonly opened: Promise<void>;
  isOpen = false;
  isClosed = false;
  private readonly socket: Socket;
  private readonly decoder = new FrameDecoder();
  private readonly closedPromise: Promise<void>;
  private resolveOpened!: () => void;
  private rejectOpened!: (error: Error) => void;

  constructor(
    address: Address,
    private readonly handlers: ConnectionHandlers,
  ) {
    this.opened = new Promise((resolve, reject) => {
      this.resolveOpened = resolve;
      this.rejectOpened = reject;
    });
    this.opened.catch(() => undefined);
    this.socket = createConnection(address.port, address.host);
    this.socket.setNoDelay(true);
    this.closedPromise = new Promise((resolve) => this.socket.once("close", () => resolve()));
    this.socket.once("connect", () => {
      if (this.isClosed) return;
      this.isOpen = true;
      this.resolveOpened();
      this.handlers.onOpen();
    });
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.on("error", (error) => this.close(error.message));
    this.socket.on("close", () => this.close("connection closed by the gateway"));
  }

  send(frame: Buffer): void {
    if (this.isOpen && !this.isClosed) this.socket.write(frame);
  }

  close(reason: string): Promise<void> {
    if (!this.isClosed) {
      this.isClosed = true;
      this.isOpen = false;
      this.rejectOpened(new Error(reason));
      this.socket.destroy();
      this.handlers.onClose(reason);
    }
    return this.closedPromise;
  }

  private onData(chunk: Buffer): void {
    if (this.isClosed) return;
    let frames: GatewayFrame[];
    try {
      frames = this.decoder.push(chunk).map((body) => parseGatewayFrame(decodeBody(body)));
    } catch (error) {
      void this.close(`bad frame from the gateway: ${(error as Error).message}`);
      return;
    }
    for (const frame of frames) {
      if (this.isClosed) return;
      this.handlers.onFrame(frame);
    }
  }
}
