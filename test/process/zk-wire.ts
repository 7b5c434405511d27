/**
 * A raw ZooKeeper wire client for tests: one TCP connection, the ConnectRequest/ConnectResponse
 * handshake, then request frames written as given and every frame the server sends (replies,
 * watch notifications with xid -1) read back in arrival order, undecoded beyond the header, so
 * a test sees exactly what the server did. Encoding comes from src/zk/protocol.ts; the reply
 * bodies are decoded here with 64-bit Stat fields kept as bigints (real ZooKeeper's session ids,
 * and so its ephemeralOwner values, exceed 2^53, which src/zk's readStat rejects).
 */
import { connect, type Socket } from "node:net";
import { JuteReader } from "../../src/zk/jute.js";
import {
  decodeConnectResponse,
  decodeReplyHeader,
  decodeWatcherEvent,
  encodeConnectRequest,
  encodeRequest,
  readAcls,
  type ConnectResponse,
  type WatcherEvent,
} from "../../src/zk/protocol.js";
import { OpCode, Xid, type Acl, type ZkOp, type ZkRequest } from "../../src/zk/types.js";

export const REPLY_TIMEOUT_MS = 10_000;

/** What a connection receives, in order; "closed" once the server closed it and all was read. */
export type Frame =
  | {
      readonly kind: "reply";
      readonly xid: number;
      readonly zxid: bigint;
      readonly err: number;
      /** The bytes after the ReplyHeader. */
      readonly body: Buffer;
    }
  | {
      readonly kind: "notification";
      readonly xid: number;
      readonly zxid: bigint;
      readonly err: number;
      readonly event: WatcherEvent;
      /** Bytes left after the WatcherEvent (0 expected). */
      readonly extra: number;
    }
  | { readonly kind: "closed" }
  | { readonly kind: "timeout"; readonly ms: number };

/** The Stat record with its longs as bigints. */
export interface WireStat {
  readonly czxid: bigint;
  readonly mzxid: bigint;
  readonly ctime: bigint;
  readonly mtime: bigint;
  readonly version: number;
  readonly cversion: number;
  readonly aversion: number;
  readonly ephemeralOwner: bigint;
  readonly dataLength: number;
  readonly numChildren: number;
  readonly pzxid: bigint;
}

export function readWireStat(r: JuteReader): WireStat {
  return {
    czxid: r.long(),
    mzxid: r.long(),
    ctime: r.long(),
    mtime: r.long(),
    version: r.int(),
    cversion: r.int(),
    aversion: r.int(),
    ephemeralOwner: r.long(),
    dataLength: r.int(),
    numChildren: r.int(),
    pzxid: r.long(),
  };
}

/** One entry of a MultiResponse. */
export interface WireMultiResult {
  readonly type: number;
  readonly err: number;
  readonly path?: string;
  readonly stat?: WireStat;
  readonly data?: Buffer | null;
  readonly children?: string[];
}

/** A decoded response record (fields by response type); `extra` counts bytes left unread. */
export interface WireBody {
  path?: string;
  stat?: WireStat;
  data?: Buffer | null;
  acl?: Acl[];
  children?: string[];
  results?: WireMultiResult[];
  extra: number;
}

function str(r: JuteReader): string {
  const s = r.ustring();
  if (s === null) throw new Error("null string in a response");
  return s;
}

function readMultiResults(r: JuteReader): WireMultiResult[] {
  const results: WireMultiResult[] = [];
  for (;;) {
    const type = r.int();
    const done = r.bool();
    const err = r.int();
    if (done) return results;
    switch (type) {
      case OpCode.create:
        results.push({ type, err, path: str(r) });
        break;
      case OpCode.create2:
        results.push({ type, err, path: str(r), stat: readWireStat(r) });
        break;
      case OpCode.delete:
      case OpCode.check:
        results.push({ type, err });
        break;
      case OpCode.setData:
        results.push({ type, err, stat: readWireStat(r) });
        break;
      case OpCode.getData:
        results.push({ type, err, data: r.buffer(), stat: readWireStat(r) });
        break;
      case OpCode.getChildren:
        results.push({ type, err, children: r.vector(str) ?? [] });
        break;
      case OpCode.error: {
        const bodyErr = r.int();
        if (bodyErr !== err) throw new Error(`multi error header ${err}, body ${bodyErr}`);
        results.push({ type, err });
        break;
      }
      default:
        throw new Error(`multi result type ${type}`);
    }
  }
}

/**
 * Decodes the response record of a successful request of type `type` (an error reply's body is
 * expected empty: its length is `extra`).
 */
export function decodeBody(type: number, err: number, body: Buffer): WireBody {
  const r = new JuteReader(body);
  const out: WireBody = { extra: 0 };
  if (err === 0 || type === OpCode.multi || type === OpCode.multiRead) {
    switch (type) {
      case OpCode.create:
      case OpCode.sync:
        out.path = str(r);
        break;
      case OpCode.create2:
      case OpCode.createContainer:
      case OpCode.createTTL:
        out.path = str(r);
        out.stat = readWireStat(r);
        break;
      case OpCode.exists:
      case OpCode.setData:
      case OpCode.setACL:
        out.stat = readWireStat(r);
        break;
      case OpCode.getData:
        out.data = r.buffer();
        out.stat = readWireStat(r);
        break;
      case OpCode.getACL:
        out.acl = readAcls(r);
        out.stat = readWireStat(r);
        break;
      case OpCode.getChildren:
        out.children = r.vector(str) ?? [];
        break;
      case OpCode.getChildren2:
        out.children = r.vector(str) ?? [];
        out.stat = readWireStat(r);
        break;
      case OpCode.multi:
      case OpCode.multiRead:
        out.results = readMultiResults(r);
        break;
      default:
        // delete, ping, auth, closeSession, setWatches, ...: no record
        break;
    }
  }
  out.extra = r.remaining;
  return out;
}

export interface ConnectOptions {
  readonly host?: string;
  readonly timeOut?: number;
  /** Send the trailing readOnly byte (Java, C, kazoo do; node-zookeeper-client does not). */
  readonly readOnlyByte?: boolean;
  readonly timeoutMs?: number;
  /** Re-attach to this session (with `passwd`) instead of creating one. */
  readonly sessionId?: bigint;
  readonly passwd?: Uint8Array;
  readonly lastZxidSeen?: bigint;
}

/** One raw connection. */
export class ZkWire {
  private buffered: Buffer = Buffer.alloc(0);
  private readonly frames: Buffer[] = [];
  private waiter: (() => void) | undefined;
  private ended = false;
  private nextXid = 1;
  /** Sent requests not answered yet, oldest first (the reply decoder needs their types). */
  private readonly pending: ZkRequest[] = [];
  session: ConnectResponse | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      this.ended = true;
      this.wake();
    });
  }

  /** Connects and completes the handshake; rejects if the server closes or does not answer. */
  static async connect(port: number, options: ConnectOptions = {}): Promise<ZkWire> {
    const socket = connect({ host: options.host ?? "127.0.0.1", port });
    socket.setNoDelay(true);
    const wire = new ZkWire(socket);
    const timeoutMs = options.timeoutMs ?? REPLY_TIMEOUT_MS;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${port}: timeout`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
    socket.write(
      encodeConnectRequest({
        protocolVersion: 0,
        lastZxidSeen: options.lastZxidSeen ?? 0n,
        timeOut: options.timeOut ?? 30_000,
        sessionId: options.sessionId ?? 0n,
        passwd: options.passwd ?? Buffer.alloc(16),
        readOnly: options.readOnlyByte === false ? undefined : false,
      }),
    );
    const first = await wire.nextRaw(timeoutMs);
    if (!Buffer.isBuffer(first)) {
      wire.destroy();
      throw new Error(`connect to ${port}: ${first.kind} before the ConnectResponse`);
    }
    wire.session = decodeConnectResponse(first);
    return wire;
  }

  get sessionId(): bigint {
    return this.session?.sessionId ?? 0n;
  }

  /** Whether the server has closed the connection (frames may still be unread). */
  get closed(): boolean {
    return this.ended;
  }

  /**
   * Sends a request: xid -2 for a ping, -4 for auth, else the next xid (from 1). Returns the
   * request as sent.
   */
  send(op: ZkOp): ZkRequest {
    const xid =
      op.type === OpCode.ping ? Xid.ping : op.type === OpCode.auth ? Xid.auth : this.nextXid++;
    const request = { ...op, xid } as ZkRequest;
    this.pending.push(request);
    this.socket.write(encodeRequest(request));
    return request;
  }

  /** The next frame in arrival order, "closed" after the last one, "timeout" if none comes. */
  async next(timeoutMs = REPLY_TIMEOUT_MS): Promise<Frame> {
    const raw = await this.nextRaw(timeoutMs);
    if (!Buffer.isBuffer(raw)) return raw;
    const r = new JuteReader(raw);
    const header = decodeReplyHeader(r);
    if (header.xid === Xid.notification) {
      const event = decodeWatcherEvent(r);
      return { kind: "notification", ...header, event, extra: r.remaining };
    }
    return { kind: "reply", ...header, body: raw.subarray(16) };
  }

  /** The oldest request not answered yet. */
  oldestPending(): ZkRequest | undefined {
    return this.pending[0];
  }

  /**
   * The request a reply answers: the oldest pending one with its xid (replies come in request
   * order, so that is the oldest pending one of all when the server is right).
   */
  answered(xid: number): ZkRequest | undefined {
    const index = this.pending.findIndex((request) => request.xid === xid);
    if (index < 0) return undefined;
    return this.pending.splice(index, 1)[0];
  }

  /**
   * Ends the session: closeSession, then waits (up to the reply timeout) for the server to
   * close the connection, reading past whatever comes first.
   */
  async closeSession(): Promise<void> {
    if (!this.ended) {
      this.send({ type: OpCode.closeSession });
      const deadline = Date.now() + REPLY_TIMEOUT_MS;
      for (;;) {
        const frame = await this.next(Math.max(0, deadline - Date.now()));
        if (frame.kind === "closed" || frame.kind === "timeout") break;
      }
    }
    this.destroy();
  }

  /** Closes the socket at once. */
  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    while (this.buffered.length >= 4) {
      const length = this.buffered.readInt32BE(0);
      if (length < 0) {
        this.socket.destroy(new Error(`frame length ${length}`));
        return;
      }
      if (this.buffered.length < 4 + length) break;
      this.frames.push(Buffer.from(this.buffered.subarray(4, 4 + length)));
      this.buffered = this.buffered.subarray(4 + length);
    }
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  private async nextRaw(timeoutMs: number): Promise<Buffer | Exclude<Frame, { kind: "reply" }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const frame = this.frames.shift();
      if (frame) return frame;
      if (this.ended) return { kind: "closed" };
      const left = deadline - Date.now();
      if (left <= 0) return { kind: "timeout", ms: timeoutMs };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}
