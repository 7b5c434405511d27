/**
 * One authenticated, framed, validated link over a TCP socket. Outgoing frames are queued and
 * written once per event-loop turn (one syscall for many tuples). A frame that is malformed,
 * oversized, unexpected or unauthenticated closes this connection with a logged reason; it
 * never throws out of the process.
 */
import type { Socket } from "node:net";
import { WireError } from "./errors.js";
import {
  decodeBody,
  encodeFrame,
  FrameDecoder,
  DEFAULT_MAX_FRAME_BYTES,
  HANDSHAKE_MAX_FRAME_BYTES,
} from "./frames.js";
import { TupleWriter, type TupleFrameType } from "./tuples.js";
import { clientProof, newNonce, proofsEqual, serverProof } from "./handshake.js";
import { challengeSchema, helloSchema, welcomeSchema, type Role } from "./messages.js";

export interface Peer {
  readonly role: Role;
  readonly id: string;
}

/** What a connection logs with: a pino logger, or a stage's `Log`. */
export interface LinkLog {
  warn(obj: object, msg?: string): void;
}

export interface ConnectionHandlers<In> {
  onReady?(peer: Peer): void;
  onMessage(message: In): void;
  onClose?(reason: string): void;
  /** The queued bytes fell below the low watermark after having been above it. */
  onDrain?(): void;
}

export interface ConnectionOptions<In> {
  readonly socket: Socket;
  readonly secret: Buffer;
  /** "server" accepts any authenticated peer; a client presents its own identity. */
  readonly side: "server" | Peer;
  readonly parse: (value: unknown) => In;
  readonly log: LinkLog;
  readonly maxFrameBytes?: number;
  readonly handshakeTimeoutMs?: number;
  /** Above this many queued bytes the connection reports itself congested. */
  readonly highWatermarkBytes?: number;
}

/** Written tuple batches at least this big have their buffers reused, at most SPARES_MAX. */
const SPARE_MIN_BYTES = 16 * 1024;
const SPARES_MAX = 4;
/** A tuple batch frame is sealed at about this size, well under the frame limit. */
const BATCH_BYTES_MAX = 1024 * 1024;

type HandshakeState =
  | { step: "await-challenge"; nonce: Buffer }
  | { step: "await-hello"; nonce: Buffer }
  | { step: "await-welcome"; nonce: Buffer; serverNonce: Uint8Array }
  | { step: "ready" };

export class Connection<In> {
  peer: Peer | undefined;
  private readonly socket: Socket;
  private readonly decoder: FrameDecoder;
  private handshake: HandshakeState;
  private pending: Buffer[] = [];
  private batch: TupleWriter | undefined;
  private lastBatchBytes = 0;
  /** Buffers of written tuple batches, for the next ones. */
  private spares: Buffer[] = [];
  /** Frames this connection built itself (tuple batches), as opposed to sendFrame's. */
  private readonly ownBatches = new WeakSet<Buffer>();
  private pendingBytes = 0;
  private flushScheduled = false;
  private closed = false;
  private congested = false;
  private readonly highWatermark: number;
  private readonly handshakeTimer: NodeJS.Timeout;
  private handlers: ConnectionHandlers<In> | undefined;

  constructor(private readonly options: ConnectionOptions<In>) {
    this.socket = options.socket;
    this.socket.setNoDelay(true);
    // Until the peer proves it knows the secret, only handshake-sized frames are buffered.
    this.decoder = new FrameDecoder(
      Math.min(HANDSHAKE_MAX_FRAME_BYTES, options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES),
    );
    this.highWatermark = options.highWatermarkBytes ?? 8 * 1024 * 1024;
    const nonce = newNonce();
    if (options.side === "server") {
      this.handshake = { step: "await-hello", nonce };
      this.writeNow(encodeFrame({ t: "challenge", nonce }));
    } else {
      this.handshake = { step: "await-challenge", nonce };
    }
    this.handshakeTimer = setTimeout(
      () => this.reject(new WireError("HANDSHAKE_TIMEOUT", "no handshake in time")),
      options.handshakeTimeoutMs ?? 5000,
    );
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.on("drain", () => this.checkDrained());
    this.socket.on("error", (error) => this.close(`socket error: ${error.message}`));
    this.socket.on("close", () => this.close("socket closed"));
  }

  /** Starts delivering events; call once, right after construction. */
  start(handlers: ConnectionHandlers<In>): this {
    this.handlers = handlers;
    return this;
  }

  get isReady(): boolean {
    return this.handshake.step === "ready" && !this.closed;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Bytes queued here and in the socket, not yet handed to the kernel. */
  get queuedBytes(): number {
    return (this.batch?.byteLength ?? 0) + this.pendingBytes + this.socket.writableLength;
  }

  get isCongested(): boolean {
    return this.congested;
  }

  get remote(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`;
  }

  send(message: unknown): void {
    this.sendFrame(encodeFrame(message));
  }

  /** Queues an already encoded frame (one encoding fanned out to several links). */
  sendFrame(frame: Buffer): void {
    if (this.closed) return;
    this.sealBatch();
    this.pending.push(frame);
    this.pendingBytes += frame.length;
    this.queued();
  }

  /**
   * The open tuple frame of `type`, to append tuples to. All tuples of a turn share one frame;
   * any other frame queued after them seals it first, so frames keep the order of the calls.
   * Call `queued()` after appending (the queue accounting and the flush).
   */
  tuples(type: TupleFrameType): TupleWriter {
    if (
      this.batch === undefined ||
      this.batch.type !== type ||
      this.batch.byteLength > BATCH_BYTES_MAX
    ) {
      this.sealBatch();
      const expected = this.lastBatchBytes + this.lastBatchBytes / 4;
      this.batch = new TupleWriter(type, expected, this.spareBuffer(expected));
    }
    return this.batch;
  }

  private sealBatch(): void {
    if (this.batch === undefined) return;
    const frame = this.batch.finish();
    this.ownBatches.add(frame);
    this.lastBatchBytes = Math.min(frame.length, BATCH_BYTES_MAX);
    this.batch = undefined;
    this.pending.push(frame);
    this.pendingBytes += frame.length;
  }

  queued(): void {
    if (this.closed) {
      this.batch = undefined;
      return;
    }
    if (!this.congested && this.queuedBytes > this.highWatermark) this.congested = true;
    if (!this.flushScheduled && this.handshake.step === "ready") {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  pauseReading(): void {
    this.socket.pause();
  }

  resumeReading(): void {
    if (!this.closed) this.socket.resume();
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.handshakeTimer);
    this.pending = [];
    this.pendingBytes = 0;
    this.batch = undefined;
    this.socket.destroy();
    this.handlers?.onClose?.(reason);
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.closed) return;
    this.sealBatch();
    if (this.pending.length === 0) return;
    // One writev for the turn's frames, without copying them together.
    const frames = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    this.socket.cork();
    for (const frame of frames) {
      // Our own tuple batches' buffers are reused once the kernel has them: large short-lived
      // buffers were a third of a stream manager's time, in garbage collection. (Frames
      // handed to sendFrame belong to the caller and may be shared: never reused.)
      if (this.ownBatches.has(frame) && frame.byteLength >= SPARE_MIN_BYTES) {
        this.socket.write(frame, () => this.keepSpare(frame));
      } else {
        this.socket.write(frame);
      }
    }
    this.socket.uncork();
    this.checkDrained();
  }

  private spareBuffer(minBytes: number): Buffer | undefined {
    const spare = this.spares.pop();
    return spare && spare.length >= minBytes ? spare : undefined;
  }

  private keepSpare(frame: Buffer): void {
    if (this.spares.length >= SPARES_MAX || this.closed) return;
    this.spares.push(
      Buffer.from(frame.buffer, frame.byteOffset, frame.buffer.byteLength - frame.byteOffset),
    );
  }

  private writeNow(frame: Buffer): void {
    this.socket.write(frame);
  }

  private checkDrained(): void {
    if (this.congested && this.queuedBytes <= this.highWatermark / 2) {
      this.congested = false;
      this.handlers?.onDrain?.();
    }
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    this.decoder.feed(chunk);
    // Frame by frame: the handshake's last frame raises the size limit for the ones after it.
    for (;;) {
      if (this.closed) return;
      let message: In;
      try {
        const body = this.decoder.next();
        if (body === undefined) return;
        const value = decodeBody(body);
        if (this.handshake.step !== "ready") {
          this.onHandshake(value);
          continue;
        }
        message = this.options.parse(value);
      } catch (error) {
        this.reject(error);
        return;
      }
      this.handlers?.onMessage(message);
    }
  }

  private onHandshake(value: unknown): void {
    const { secret } = this.options;
    const state = this.handshake;
    switch (state.step) {
      case "await-challenge": {
        const challenge = expect(challengeSchema, value);
        const me = this.options.side as Peer;
        const proof = clientProof(secret, challenge.nonce, state.nonce, me.role, me.id);
        this.writeNow(
          encodeFrame({ t: "hello", role: me.role, id: me.id, nonce: state.nonce, proof }),
        );
        this.handshake = {
          step: "await-welcome",
          nonce: state.nonce,
          serverNonce: challenge.nonce,
        };
        return;
      }
      case "await-hello": {
        const hello = expect(helloSchema, value);
        const proof = clientProof(secret, state.nonce, hello.nonce, hello.role, hello.id);
        if (!proofsEqual(proof, hello.proof)) {
          throw new WireError("AUTH_FAILED", `bad proof from ${hello.role} ${hello.id}`);
        }
        this.writeNow(
          encodeFrame({ t: "welcome", proof: serverProof(secret, hello.nonce, state.nonce) }),
        );
        this.becomeReady({ role: hello.role, id: hello.id });
        return;
      }
      case "await-welcome": {
        const welcome = expect(welcomeSchema, value);
        if (!proofsEqual(serverProof(secret, state.nonce, state.serverNonce), welcome.proof)) {
          throw new WireError("AUTH_FAILED", "server does not know the cluster secret");
        }
        this.becomeReady(this.options.side as Peer);
        return;
      }
      case "ready":
        return;
    }
  }

  private becomeReady(peer: Peer): void {
    clearTimeout(this.handshakeTimer);
    this.handshake = { step: "ready" };
    this.decoder.maxFrameBytes = this.options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.peer = peer;
    this.handlers?.onReady?.(peer);
    if ((this.pending.length > 0 || this.batch !== undefined) && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private reject(error: unknown): void {
    const code = error instanceof WireError ? error.code : "INTERNAL";
    const reason = error instanceof Error ? error.message : String(error);
    this.options.log.warn(
      { event: "frame-rejected", code, reason, remote: this.remote, peer: this.peer?.id },
      "frame rejected, closing connection",
    );
    this.close(`${code}: ${reason}`);
  }
}

function expect<T>(
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false } },
  value: unknown,
): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new WireError("UNEXPECTED_FRAME", "unexpected frame during handshake");
  return parsed.data;
}
