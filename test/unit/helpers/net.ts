/**
 * Helpers for loopback link tests: a logger whose lines can be awaited, an awaitable list, and a
 * hand-written client speaking the link protocol over a raw socket (so tests can misbehave).
 */
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { pino, type Logger } from "pino";
import { decodeBody, encodeFrame, FrameDecoder } from "../../../src/platform/wire/frames.js";
import { clientProof, newNonce, serverProof } from "../../../src/platform/wire/handshake.js";

/** Items that arrive over time; waitFor resolves once a predicate over all of them holds. */
export class Inbox<T> {
  readonly items: T[] = [];
  private waiters: { check: (items: readonly T[]) => boolean; resolve: () => void }[] = [];

  push(item: T): void {
    this.items.push(item);
    this.waiters = this.waiters.filter((w) => {
      if (!w.check(this.items)) return true;
      w.resolve();
      return false;
    });
  }

  waitFor(check: (items: readonly T[]) => boolean): Promise<void> {
    if (check(this.items)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ check, resolve }));
  }

  /** Resolves with the first item (already there or to come) matching the predicate. */
  async first(match: (item: T) => boolean): Promise<T> {
    await this.waitFor((items) => items.some(match));
    return this.items.find(match)!;
  }

  count(n: number): Promise<void> {
    return this.waitFor((items) => items.length >= n);
  }
}

export interface LogLine {
  level: number;
  event?: string;
  code?: string;
  reason?: string;
  peer?: string;
  msg?: string;
  [key: string]: unknown;
}

/** A pino logger at warn level writing into an Inbox of parsed lines. */
export function captureLog(): { log: Logger; lines: Inbox<LogLine> } {
  const lines = new Inbox<LogLine>();
  const log = pino(
    { level: "warn" },
    { write: (line: string) => lines.push(JSON.parse(line) as LogLine) },
  );
  return { log, lines };
}

export function rejected(code: string): (line: LogLine) => boolean {
  return (line) => line.event === "frame-rejected" && line.code === code;
}

/** A raw TCP client that decodes the frames it receives and remembers every byte. */
export class RawClient {
  readonly frames = new Inbox<unknown>();
  readonly received: Buffer[] = [];
  readonly closed: Promise<void>;
  private readonly decoder = new FrameDecoder();

  private constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.received.push(chunk);
      for (const body of this.decoder.push(chunk)) this.frames.push(decodeBody(body));
    });
    socket.on("error", () => {}); // a reset by the server shows up as close
    this.closed = once(socket, "close").then(() => undefined);
  }

  static async connect(port: number): Promise<RawClient> {
    const socket = connect(port, "127.0.0.1");
    const client = new RawClient(socket);
    await once(socket, "connect");
    return client;
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  send(message: unknown): void {
    this.write(encodeFrame(message));
  }

  /** Waits for frame number `index` (0-based) and returns it. */
  async frame(index: number): Promise<unknown> {
    await this.frames.count(index + 1);
    return this.frames.items[index];
  }

  /**
   * Plays the client side of the handshake; returns the hello frame it would send (already sent
   * unless `send` is false, so a test can append bytes to the same write).
   */
  async hello(secret: Buffer, role = "instance", id = "raw:0", send = true): Promise<Buffer> {
    const challenge = (await this.frame(0)) as { t: string; nonce: Uint8Array };
    if (challenge.t !== "challenge") throw new Error(`expected a challenge, got ${challenge.t}`);
    const nonce = newNonce();
    const proof = clientProof(secret, challenge.nonce, nonce, role, id);
    const frame = encodeFrame({ t: "hello", role, id, nonce, proof });
    if (send) this.write(frame);
    this.serverNonce = challenge.nonce;
    this.nonce = nonce;
    return frame;
  }

  /** Completes the handshake after hello(); throws if the server's proof is wrong. */
  async welcome(secret: Buffer): Promise<void> {
    const welcome = (await this.frame(1)) as { t: string; proof: Uint8Array };
    if (welcome.t !== "welcome") throw new Error(`expected welcome, got ${welcome.t}`);
    const expected = serverProof(secret, this.nonce!, this.serverNonce!);
    if (!expected.equals(welcome.proof)) throw new Error("server proof does not verify");
  }

  async handshake(secret: Buffer, role = "instance", id = "raw:0"): Promise<void> {
    await this.hello(secret, role, id);
    await this.welcome(secret);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private nonce: Buffer | undefined;
  private serverNonce: Uint8Array | undefined;
}

/**
 * Resolves like `expected`, but rejects at once if `forbidden` settles first: a test waiting for
 * a refusal fails fast, with a clear message, when the link is accepted instead.
 */
export function unless<T>(
  expected: Promise<T>,
  forbidden: Promise<unknown>,
  what: string,
): Promise<T> {
  return Promise.race([
    expected,
    forbidden.then(() => {
      throw new Error(what);
    }),
  ]);
}
