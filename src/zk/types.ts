/**
 * ZooKeeper's protocol constants and the records the data tree and the wire share, as
 * ZooKeeper 3.8 defines them (ZooDefs, KeeperException.Code, CreateMode, Watcher.Event).
 * ../shared/ZOOKEEPER.md is the spec this code follows.
 *
 * Numbers: zxids, times and session ids are jute longs on the wire; ours all stay below 2^53,
 * so they are plain JS numbers inside and converted at the codec's edge.
 */

/** KeeperException.Code: the values of ReplyHeader.err and MultiHeader.err. */
export const Err = {
  ok: 0,
  runtimeInconsistency: -2,
  marshallingError: -5,
  unimplemented: -6,
  badArguments: -8,
  noNode: -101,
  noAuth: -102,
  badVersion: -103,
  noChildrenForEphemerals: -108,
  nodeExists: -110,
  notEmpty: -111,
  sessionExpired: -112,
  invalidAcl: -114,
  authFailed: -115,
  sessionMoved: -118,
  noWatcher: -121,
} as const;
export type ErrCode = (typeof Err)[keyof typeof Err];

/** ZooDefs.OpCode. */
export const OpCode = {
  notification: 0,
  create: 1,
  delete: 2,
  exists: 3,
  getData: 4,
  setData: 5,
  getACL: 6,
  setACL: 7,
  getChildren: 8,
  sync: 9,
  ping: 11,
  getChildren2: 12,
  check: 13,
  multi: 14,
  create2: 15,
  reconfig: 16,
  checkWatches: 17,
  removeWatches: 18,
  createContainer: 19,
  deleteContainer: 20,
  createTTL: 21,
  multiRead: 22,
  auth: 100,
  setWatches: 101,
  sasl: 102,
  getEphemerals: 103,
  getAllChildrenNumber: 104,
  setWatches2: 105,
  addWatch: 106,
  whoAmI: 107,
  createSession: -10,
  closeSession: -11,
  error: -1,
} as const;

/** CreateMode flags. */
export const CreateFlag = {
  persistent: 0,
  ephemeral: 1,
  persistentSequential: 2,
  ephemeralSequential: 3,
  container: 4,
  persistentWithTtl: 5,
  persistentSequentialWithTtl: 6,
} as const;

/** Watcher.Event.EventType values the server sends. */
export const EventType = {
  nodeCreated: 1,
  nodeDeleted: 2,
  nodeDataChanged: 3,
  nodeChildrenChanged: 4,
} as const;
export type EventTypeCode = (typeof EventType)[keyof typeof EventType];

/** Watcher.Event.KeeperState.SyncConnected: the only state a server puts in an event. */
export const SYNC_CONNECTED = 3;

/** ZooDefs.Perms. */
export const Perm = { read: 1, write: 2, create: 4, delete: 8, admin: 16, all: 31 } as const;

/** Special xids. */
export const Xid = { notification: -1, ping: -2, auth: -4, setWatches: -8 } as const;

export interface Id {
  readonly scheme: string;
  readonly id: string;
}

export interface Acl {
  readonly perms: number;
  readonly id: Id;
}

/** The Stat record, field order as on the wire. */
export interface Stat {
  readonly czxid: number;
  readonly mzxid: number;
  readonly ctime: number;
  readonly mtime: number;
  readonly version: number;
  readonly cversion: number;
  readonly aversion: number;
  readonly ephemeralOwner: number;
  readonly dataLength: number;
  readonly numChildren: number;
  readonly pzxid: number;
}

/** world:anyone with every permission: ZooDefs.Ids.OPEN_ACL_UNSAFE. */
export const OPEN_ACL: readonly Acl[] = [
  { perms: Perm.all, id: { scheme: "world", id: "anyone" } },
];

/** Largest frame a connection may send (jute.maxbuffer); larger ones close it. */
export const MAX_FRAME_BYTES = 0xfffff;

// ---- Requests, as the front end decodes them and the state machine applies them ----
// Plain data (strings, numbers, booleans, null, Uint8Array, arrays): they travel in TARA
// commands as msgpack. `data: null` is jute's null buffer, distinct from an empty one.

export interface CreateOp {
  readonly type: 1 | 15 | 19 | 21; // create, create2, createContainer, createTTL
  readonly path: string;
  readonly data: Uint8Array | null;
  readonly acl: readonly Acl[];
  readonly flags: number;
  /** createTTL only (-1 when absent). */
  readonly ttl: number;
}
export interface DeleteOp {
  readonly type: 2;
  readonly path: string;
  readonly version: number;
}
export interface SetDataOp {
  readonly type: 5;
  readonly path: string;
  readonly data: Uint8Array | null;
  readonly version: number;
}
export interface CheckOp {
  readonly type: 13;
  readonly path: string;
  readonly version: number;
}
/** exists, getData, getChildren, getChildren2. */
export interface ReadOp {
  readonly type: 3 | 4 | 8 | 12;
  readonly path: string;
  readonly watch: boolean;
}
/** What a multi (14) may hold. */
export type MultiWriteOp = CreateOp | DeleteOp | SetDataOp | CheckOp;
/** What a multiRead (22) may hold (getData, getChildren). */
export type MultiReadOp = ReadOp & { readonly type: 4 | 8 };

export type ZkOp =
  | CreateOp
  | DeleteOp
  | SetDataOp
  | CheckOp
  | ReadOp
  | { readonly type: 6; readonly path: string } // getACL
  | {
      readonly type: 7;
      readonly path: string;
      readonly acl: readonly Acl[];
      readonly version: number;
    }
  | { readonly type: 9; readonly path: string } // sync
  | { readonly type: 11 } // ping
  | { readonly type: 14; readonly ops: readonly MultiWriteOp[] }
  | { readonly type: 22; readonly ops: readonly MultiReadOp[] }
  | { readonly type: 100; readonly scheme: string; readonly auth: Uint8Array }
  | {
      readonly type: 101 | 105; // setWatches, setWatches2
      readonly relativeZxid: number;
      readonly dataWatches: readonly string[];
      readonly existWatches: readonly string[];
      readonly childWatches: readonly string[];
      readonly persistentWatches: readonly string[];
      readonly persistentRecursiveWatches: readonly string[];
    }
  | { readonly type: 17 | 18; readonly path: string; readonly watcherType: number }
  | { readonly type: 103 | 104; readonly path: string } // getEphemerals, getAllChildrenNumber
  | { readonly type: 106; readonly path: string; readonly mode: number } // addWatch
  | { readonly type: 107 } // whoAmI
  | { readonly type: -11 } // closeSession
  /** A request the server cannot serve: unknown opcode (Unimplemented) or undecodable body. */
  | { readonly type: number; readonly invalid: ErrCode };

/** One request of a connection: its xid and operation. */
export type ZkRequest = ZkOp & { readonly xid: number };

/**
 * One entry of a multi (14) or multiRead (22) response, by result type: 1 create/create2,
 * 15 createContainer/createTTL, 2 delete, 5 setData, 13 check, 4 getData, 8 getChildren,
 * -1 error (section 11).
 */
export type MultiResult =
  | { readonly type: 1; readonly path: string }
  | { readonly type: 15; readonly path: string; readonly stat: Stat }
  | { readonly type: 2 }
  | { readonly type: 5; readonly stat: Stat }
  | { readonly type: 13 }
  | { readonly type: 4; readonly data: Uint8Array | null; readonly stat: Stat }
  | { readonly type: 8; readonly children: readonly string[] }
  | { readonly type: -1; readonly err: number };
