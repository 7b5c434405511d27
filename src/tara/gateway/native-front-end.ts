/**
 * The gateway's front end for Tara's native client protocol (protocol.ts): msgpack frames
 * carrying opaque operations, replies matched by (c, r). Every connection is a requester; a
 * bad frame gets an error frame and closes that connection only.
 */
import { createServer, type Server, type Socket } from "node:net";
import { WireError } from "../../platform/wire/errors.js";
import { decodeBody, encodeFrame, FrameDecoder } from "../../platform/wire/frames.js";
import type { ClientReply } from "../messages.js";
import { listenForClients, type FrontEnd, type Gateway, type Requester } from "./gateway.js";
import {
  MAX_CLIENT_FRAME_BYTES,
  ProtocolError,
  parseClientFrame,
  type ErrorCode,
  type ErrorFrame,
  type ReplyFrame,
  type RequestFrame,
} from "./protocol.js";

/** A client that leaves this much of its replies unread is dropped. */
const CLIENT_WRITE_LIMIT_BYTES = 64 * 1024 * 1024;
/** After an error frame, how long a client has to close before its socket is destroyed. */
const LINGER_MS = 5000;

/** One client connection. */
class Client implements Requester {
  readonly decoder = new FrameDecoder(MAX_CLIENT_FRAME_BYTES);
  /** Closed for us: no more input is read, nothing more is written. */
  closed = false;
  private corked = false;

  constructor(
    readonly socket: Socket,
    private readonly frontEnd: NativeFrontEnd,
  ) {}

  deliver(reply: ClientReply): void {
    const frame: ReplyFrame = { t: "rep", c: reply.c, r: reply.r, res: reply.res };
    this.write(encodeFrame(frame));
    if (this.socket.writableLength > CLIENT_WRITE_LIMIT_BYTES) {
      this.frontEnd.log?.warn({ event: "client-overflow" }, "a client does not read its replies");
      this.socket.destroy();
    }
  }

  refuse(c: number, r: number, message: string): void {
    const frame: ErrorFrame = { t: "error", code: "OVERLOADED", message, c, r };
    this.write(encodeFrame(frame));
  }

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

export class NativeFrontEnd implements FrontEnd {
  private readonly clients = new Set<Client>();
  private gateway: Gateway | undefined;
  private server: Server | undefined;
  private paused = false;
  private closed = false;
  private readonly counters = { rejected: 0 };

  get log() {
    return this.gateway?.log;
  }

  get stats(): Readonly<Record<string, number>> {
    return { ...this.counters, clients: this.clients.size };
  }

  listen(gateway: Gateway, host: string, port: number): Promise<number> {
    this.gateway = gateway;
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    return listenForClients(server, host, port);
  }

  setPaused(paused: boolean): void {
    this.paused = paused;
    for (const client of this.clients) {
      if (paused) client.socket.pause();
      else client.socket.resume();
    }
  }

  /** The native protocol has no pushes: the state machines it serves do not send any. */
  onPush(): void {}

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const client of this.clients) client.socket.destroy();
    await new Promise<void>((resolve) =>
      this.server ? this.server.close(() => resolve()) : resolve(),
    );
  }

  private accept(socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const client = new Client(socket, this);
    this.clients.add(client);
    if (this.paused) socket.pause();
    socket.on("data", (chunk: Buffer) => this.onData(client, chunk));
    socket.on("error", () => undefined); // followed by close
    socket.on("close", () => this.drop(client));
  }

  private onData(client: Client, chunk: Buffer): void {
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
      this.gateway!.submit(client, request.c, request.r, request.op);
    }
  }

  /** Answers a bad frame with an error frame and closes that client's connection. */
  private reject(client: Client, code: ErrorCode, message: string): void {
    this.counters.rejected++;
    this.log?.warn(
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
    this.drop(client);
    // Input that follows is discarded; the client has a while to read the error and close.
    client.socket.resume();
    client.socket.end();
    setTimeout(() => client.socket.destroy(), LINGER_MS).unref();
  }

  private drop(client: Client): void {
    client.closed = true;
    if (!this.clients.delete(client)) return;
    this.gateway?.withdraw(client);
  }
}
