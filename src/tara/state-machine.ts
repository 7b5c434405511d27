/**
 * What TARA replicates: any deterministic state machine. Every executor applies the same
 * commands in the same order, so every replica's state and every output are the same; a
 * snapshot of one replica restores any other (a group checkpoint).
 */
export interface StateMachine {
  /**
   * Applies one command. Must be deterministic: no clock, no randomness, no I/O (the time it
   * may use is the leader's, in `execution`). A command the machine cannot understand gets an
   * error reply, never an exception, since clients choose the bytes.
   */
  apply(command: Uint8Array, execution: Execution): Applied;
  /** The whole state as bytes, canonical: equal states give equal bytes. */
  snapshot(): Uint8Array;
  /** Replaces the state with a snapshot's; throws if the bytes are not a snapshot. */
  restore(snapshot: Uint8Array): void;
}

/** Where a command sits in the replicated order, and who sent it. */
export interface Execution {
  /** Sequence number of the batch holding the command. */
  readonly s: number;
  /**
   * The leader's clock (ms since the epoch) when it proposed the batch; never smaller than
   * the time of an earlier batch.
   */
  readonly time: number;
  /** The client, and the gateway its request entered through. */
  readonly c: number;
  readonly g: number;
}

/** What one command produced. */
export interface Applied {
  /** The reply to the command's client (cached: a retry of the request gets it again). */
  readonly reply: Uint8Array;
  /**
   * Messages to other clients, each to client `c` at gateway `g` (e.g. a watch firing):
   * delivered at most once, in any order, so they carry their own sequencing.
   */
  readonly pushes?: readonly Push[];
}

export interface Push {
  readonly c: number;
  readonly g: number;
  readonly res: Uint8Array;
}
