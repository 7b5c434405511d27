/**
 * ZooKeeper's client records on the wire (../shared/ZOOKEEPER.md sections 3-6 and 11-12): the
 * session handshake, request decoding (and encoding, for tests and load generators), and reply
 * and notification frames.
 *
 * Conventions: `encode*` and `*Frame` return whole frames (length prefix included); `decode*`
 * take a frame's body (without the prefix) or a reader positioned at the record.
 */
import { JuteError, JuteReader, JuteWriter } from "./jute.js";
import {
  Err,
  OpCode,
  SYNC_CONNECTED,
  Xid,
  type Acl,
  type CreateOp,
  type DeleteOp,
  type ErrCode,
  type MultiReadOp,
  type MultiResult,
  type MultiWriteOp,
  type SetDataOp,
  type Stat,
  type ZkOp,
  type ZkRequest,
} from "./types.js";

// ---- Session handshake (section 4) ----

export interface ConnectRequest {
  readonly protocolVersion: number;
  readonly lastZxidSeen: bigint;
  readonly timeOut: number;
  readonly sessionId: bigint;
  readonly passwd: Uint8Array;
  /** undefined when the client sent no readOnly byte (node-zookeeper-client: 44-byte body). */
  readonly readOnly: boolean | undefined;
}

export interface ConnectResponse {
  readonly protocolVersion: number;
  readonly timeOut: number;
  readonly sessionId: bigint;
  readonly passwd: Uint8Array;
  readonly readOnly: boolean | undefined;
}

/** Throws JuteError when the body does not hold the five fields. A null passwd reads as empty. */
export function decodeConnectRequest(body: Buffer): ConnectRequest {
  const r = new JuteReader(body);
  return {
    protocolVersion: r.int(),
    lastZxidSeen: r.long(),
    timeOut: r.int(),
    sessionId: r.long(),
    passwd: r.buffer() ?? Buffer.alloc(0),
    readOnly: r.remaining > 0 ? r.bool() : undefined,
  };
}

export function encodeConnectRequest(
  req: Omit<ConnectRequest, "lastZxidSeen" | "sessionId"> & {
    readonly lastZxidSeen: number | bigint;
    readonly sessionId: number | bigint;
  },
): Buffer {
  const w = new JuteWriter(64);
  w.int(req.protocolVersion).long(req.lastZxidSeen).int(req.timeOut).long(req.sessionId);
  w.buffer(req.passwd);
  if (req.readOnly !== undefined) w.bool(req.readOnly);
  return w.frame();
}

/**
 * `readOnly` is whether this server is read-only (we never are: pass false), or undefined to
 * omit the byte because the request had none; never echo the client's flag.
 */
export function encodeConnectResponse(res: {
  readonly timeOut: number;
  readonly sessionId: number | bigint;
  readonly passwd: Uint8Array;
  readonly readOnly: boolean | undefined;
}): Buffer {
  const w = new JuteWriter(64);
  w.int(0).int(res.timeOut).long(res.sessionId).buffer(res.passwd);
  if (res.readOnly !== undefined) w.bool(res.readOnly);
  return w.frame();
}

export function decodeConnectResponse(body: Buffer): ConnectResponse {
  const r = new JuteReader(body);
  return {
    protocolVersion: r.int(),
    timeOut: r.int(),
    sessionId: r.long(),
    passwd: r.buffer() ?? Buffer.alloc(0),
    readOnly: r.remaining > 0 ? r.bool() : undefined,
  };
}

// ---- Requests (sections 3, 6 and 11) ----

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);

/** Our request types have no null strings: a null one is a malformed request. */
function str(r: JuteReader): string {
  const s = r.ustring();
  if (s === null) throw new JuteError("null string");
  return s;
}

/** A null vector reads as empty (a null ACL list then fails as InvalidACL, as in ZooKeeper). */
function strings(r: JuteReader): string[] {
  return r.vector(str) ?? [];
}

function readAcl(r: JuteReader): Acl {
  return { perms: r.int(), id: { scheme: str(r), id: str(r) } };
}

export function readAcls(r: JuteReader): Acl[] {
  return r.vector(readAcl) ?? [];
}

function readCreate(r: JuteReader, type: CreateOp["type"]): CreateOp {
  return {
    type,
    path: str(r),
    data: r.buffer(),
    acl: readAcls(r),
    flags: r.int(),
    ttl: type === OpCode.createTTL ? r.safeLong() : -1,
  };
}

function readDelete(r: JuteReader): DeleteOp {
  return { type: OpCode.delete, path: str(r), version: r.int() };
}

function readSetData(r: JuteReader): SetDataOp {
  return { type: OpCode.setData, path: str(r), data: r.buffer(), version: r.int() };
}

/** MultiOperationRecord: {MultiHeader, op} pairs until a header with done set. */
function readMulti<T>(r: JuteReader, readOp: (r: JuteReader, type: number) => T): T[] {
  const ops: T[] = [];
  for (;;) {
    const type = r.int();
    const done = r.bool();
    r.int(); // err: -1 in requests
    if (done) return ops;
    ops.push(readOp(r, type));
  }
}

function readMultiWriteOp(r: JuteReader, type: number): MultiWriteOp {
  switch (type) {
    case OpCode.create:
    case OpCode.create2:
    case OpCode.createContainer:
    case OpCode.createTTL:
      return readCreate(r, type);
    case OpCode.delete:
      return readDelete(r);
    case OpCode.setData:
      return readSetData(r);
    case OpCode.check:
      return { type, path: str(r), version: r.int() };
    default:
      throw new JuteError(`op ${type} in a multi`);
  }
}

function readMultiReadOp(r: JuteReader, type: number): MultiReadOp {
  if (type !== OpCode.getData && type !== OpCode.getChildren) {
    throw new JuteError(`op ${type} in a multiRead`);
  }
  return { type, path: str(r), watch: r.bool() };
}

/** A long that is only compared: clamped into the safe-integer range. */
function clampedLong(r: JuteReader): number {
  const v = r.long();
  return v > MAX_SAFE
    ? Number.MAX_SAFE_INTEGER
    : v < MIN_SAFE
      ? Number.MIN_SAFE_INTEGER
      : Number(v);
}

function readOp(r: JuteReader, xid: number, type: number): ZkRequest {
  switch (type) {
    case OpCode.create:
    case OpCode.create2:
    case OpCode.createContainer:
    case OpCode.createTTL:
      return { xid, ...readCreate(r, type) };
    case OpCode.delete:
      return { xid, ...readDelete(r) };
    case OpCode.setData:
      return { xid, ...readSetData(r) };
    case OpCode.exists:
    case OpCode.getData:
    case OpCode.getChildren:
    case OpCode.getChildren2:
      return { xid, type, path: str(r), watch: r.bool() };
    case OpCode.getACL:
      return { xid, type, path: str(r) };
    case OpCode.sync:
      return { xid, type, path: str(r) };
    case OpCode.getEphemerals:
    case OpCode.getAllChildrenNumber:
      return { xid, type, path: str(r) };
    case OpCode.setACL:
      return { xid, type, path: str(r), acl: readAcls(r), version: r.int() };
    case OpCode.ping:
      return { xid, type };
    case OpCode.whoAmI:
      return { xid, type };
    case OpCode.closeSession:
      return { xid, type };
    case OpCode.multi:
      return { xid, type, ops: readMulti(r, readMultiWriteOp) };
    case OpCode.multiRead:
      return { xid, type, ops: readMulti(r, readMultiReadOp) };
    case OpCode.auth:
      r.int(); // AuthPacket.type: unused
      return { xid, type, scheme: str(r), auth: r.buffer() ?? Buffer.alloc(0) };
    case OpCode.setWatches:
    case OpCode.setWatches2: {
      const v2 = type === OpCode.setWatches2;
      return {
        xid,
        type,
        relativeZxid: clampedLong(r),
        dataWatches: strings(r),
        existWatches: strings(r),
        childWatches: strings(r),
        persistentWatches: v2 ? strings(r) : [],
        persistentRecursiveWatches: v2 ? strings(r) : [],
      };
    }
    case OpCode.checkWatches:
    case OpCode.removeWatches:
      return { xid, type, path: str(r), watcherType: r.int() };
    case OpCode.addWatch:
      return { xid, type, path: str(r), mode: r.int() };
    default:
      // Unknown opcodes, and check (13) outside a multi, reconfig (16) and sasl (102).
      return { xid, type, invalid: Err.unimplemented };
  }
}

/**
 * Decodes a request frame's body. Throws JuteError only when the 8-byte RequestHeader is
 * incomplete (the connection should then be closed); a body that does not decode yields
 * `invalid: marshallingError`. Bytes after the record are ignored, as ZooKeeper does. Buffers
 * in the result are copies, not views of `body`.
 */
export function decodeRequest(body: Buffer): ZkRequest {
  if (body.length < 8) throw new JuteError(`request header needs 8 bytes, got ${body.length}`);
  const r = new JuteReader(body);
  const xid = r.int();
  const type = r.int();
  try {
    return readOp(r, xid, type);
  } catch (error) {
    if (error instanceof JuteError) return { xid, type, invalid: Err.marshallingError };
    throw error;
  }
}

type ValidOp = Exclude<ZkOp, { readonly invalid: ErrCode }>;

function writeString(w: JuteWriter, s: string): void {
  w.ustring(s);
}

function writeAcl(w: JuteWriter, acl: Acl): void {
  w.int(acl.perms).ustring(acl.id.scheme).ustring(acl.id.id);
}

export function writeAcls(w: JuteWriter, acls: readonly Acl[]): void {
  w.vector(acls, writeAcl);
}

function writeOpBody(w: JuteWriter, op: ValidOp): void {
  switch (op.type) {
    case OpCode.create:
    case OpCode.create2:
    case OpCode.createContainer:
    case OpCode.createTTL:
      w.ustring(op.path).buffer(op.data);
      writeAcls(w, op.acl);
      w.int(op.flags);
      if (op.type === OpCode.createTTL) w.long(op.ttl);
      return;
    case OpCode.delete:
    case OpCode.check:
      w.ustring(op.path).int(op.version);
      return;
    case OpCode.setData:
      w.ustring(op.path).buffer(op.data).int(op.version);
      return;
    case OpCode.exists:
    case OpCode.getData:
    case OpCode.getChildren:
    case OpCode.getChildren2:
      w.ustring(op.path).bool(op.watch);
      return;
    case OpCode.getACL:
    case OpCode.sync:
    case OpCode.getEphemerals:
    case OpCode.getAllChildrenNumber:
      w.ustring(op.path);
      return;
    case OpCode.setACL:
      w.ustring(op.path);
      writeAcls(w, op.acl);
      w.int(op.version);
      return;
    case OpCode.ping:
    case OpCode.whoAmI:
    case OpCode.closeSession:
      return;
    case OpCode.multi:
    case OpCode.multiRead:
      for (const sub of op.ops) {
        w.int(sub.type).bool(false).int(-1);
        writeOpBody(w, sub);
      }
      w.int(-1).bool(true).int(-1);
      return;
    case OpCode.auth:
      w.int(0).ustring(op.scheme).buffer(op.auth);
      return;
    case OpCode.setWatches:
    case OpCode.setWatches2:
      w.long(op.relativeZxid);
      w.vector(op.dataWatches, writeString);
      w.vector(op.existWatches, writeString);
      w.vector(op.childWatches, writeString);
      if (op.type === OpCode.setWatches2) {
        w.vector(op.persistentWatches, writeString);
        w.vector(op.persistentRecursiveWatches, writeString);
      }
      return;
    case OpCode.checkWatches:
    case OpCode.removeWatches:
      w.ustring(op.path).int(op.watcherType);
      return;
    case OpCode.addWatch:
      w.ustring(op.path).int(op.mode);
      return;
    default: {
      const unhandled: never = op;
      throw new Error(`no encoding for ${JSON.stringify(unhandled)}`);
    }
  }
}

/** The request as a whole frame; an `invalid` request is its header alone. */
export function encodeRequest(req: ZkRequest): Buffer {
  const w = new JuteWriter();
  w.int(req.xid).int(req.type);
  if (!("invalid" in req)) writeOpBody(w, req);
  return w.frame();
}

// ---- Replies (sections 5, 11 and 12) ----

const REPLY_HEADER_BYTES = 16;

/** ReplyHeader{xid, zxid, err} and, when given, the response record: a whole frame. */
export function replyFrame(
  xid: number,
  zxid: number,
  err: number,
  body?: (w: JuteWriter) => void,
): Buffer {
  const w = new JuteWriter(body === undefined ? 4 + REPLY_HEADER_BYTES : 256);
  w.int(xid).long(zxid).int(err);
  if (body !== undefined) body(w);
  return w.frame();
}

export function writeStat(w: JuteWriter, stat: Stat): void {
  w.long(stat.czxid).long(stat.mzxid).long(stat.ctime).long(stat.mtime);
  w.int(stat.version).int(stat.cversion).int(stat.aversion);
  w.long(stat.ephemeralOwner).int(stat.dataLength).int(stat.numChildren).long(stat.pzxid);
}

/** A watch notification: ReplyHeader{-1, -1, 0} + WatcherEvent{type, SyncConnected, path}. */
export function notificationFrame(type: number, path: string): Buffer {
  const w = new JuteWriter(4 + REPLY_HEADER_BYTES + 12 + 3 * path.length);
  w.int(Xid.notification).long(-1).int(Err.ok);
  w.int(type).int(SYNC_CONNECTED).ustring(path);
  return w.frame();
}

/** MultiResponse: {MultiHeader{type, false, err}, result} per entry, then {-1, true, -1}. */
export function writeMultiResults(w: JuteWriter, results: readonly MultiResult[]): void {
  for (const result of results) {
    w.int(result.type).bool(false);
    switch (result.type) {
      case 1:
        w.int(Err.ok).ustring(result.path);
        break;
      case 15:
        w.int(Err.ok).ustring(result.path);
        writeStat(w, result.stat);
        break;
      case 2:
      case 13:
        w.int(Err.ok);
        break;
      case 5:
        w.int(Err.ok);
        writeStat(w, result.stat);
        break;
      case 4:
        w.int(Err.ok).buffer(result.data);
        writeStat(w, result.stat);
        break;
      case 8:
        w.int(Err.ok).vector(result.children, writeString);
        break;
      case -1:
        w.int(result.err).int(result.err);
        break;
    }
  }
  w.int(-1).bool(true).int(-1);
}

// ---- Reply decoding, for tests and clients ----

export interface ReplyHeader {
  readonly xid: number;
  readonly zxid: bigint;
  readonly err: number;
}

/** From a frame body, or from a reader (which is then positioned at the response record). */
export function decodeReplyHeader(source: Buffer | JuteReader): ReplyHeader {
  const r = source instanceof JuteReader ? source : new JuteReader(source);
  return { xid: r.int(), zxid: r.long(), err: r.int() };
}

export function readStat(r: JuteReader): Stat {
  return {
    czxid: r.safeLong(),
    mzxid: r.safeLong(),
    ctime: r.safeLong(),
    mtime: r.safeLong(),
    version: r.int(),
    cversion: r.int(),
    aversion: r.int(),
    ephemeralOwner: r.safeLong(),
    dataLength: r.int(),
    numChildren: r.int(),
    pzxid: r.safeLong(),
  };
}

export interface WatcherEvent {
  readonly type: number;
  readonly state: number;
  readonly path: string;
}

/** The WatcherEvent after a notification's ReplyHeader. */
export function decodeWatcherEvent(r: JuteReader): WatcherEvent {
  return { type: r.int(), state: r.int(), path: str(r) };
}

function readMultiResult(r: JuteReader, type: number, err: number): MultiResult {
  switch (type) {
    case 1:
      return { type, path: str(r) };
    case 15:
      return { type, path: str(r), stat: readStat(r) };
    case 2:
    case 13:
      return { type };
    case 5:
      return { type, stat: readStat(r) };
    case 4:
      return { type, data: r.buffer(), stat: readStat(r) };
    case 8:
      return { type, children: strings(r) };
    case -1: {
      const bodyErr = r.int();
      if (bodyErr !== err) throw new JuteError(`multi error ${err} with body ${bodyErr}`);
      return { type, err };
    }
    default:
      throw new JuteError(`multi result type ${type}`);
  }
}

/** A MultiResponse, from a reader positioned after the ReplyHeader. */
export function decodeMultiResults(r: JuteReader): MultiResult[] {
  const results: MultiResult[] = [];
  for (;;) {
    const type = r.int();
    const done = r.bool();
    const err = r.int();
    if (done) return results;
    results.push(readMultiResult(r, type, err));
  }
}
