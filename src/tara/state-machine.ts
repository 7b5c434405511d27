/**
 * What TARA replicates: any deterministic state machine. Every executor applies the same
 * commands in the same order, so every replica's state and every reply are the same; a
 * snapshot of one replica restores any other (a group checkpoint).
 */
export interface StateMachine {
  /**
   * Applies one command and returns the reply. Must be deterministic: no clock, no randomness,
   * no I/O. A command the machine cannot understand gets an error reply, never an exception,
   * since clients choose the bytes.
   */
  apply(command: Uint8Array): Uint8Array;
  /** The whole state as bytes, canonical: equal states give equal bytes. */
  snapshot(): Uint8Array;
  /** Replaces the state with a snapshot's; throws if the bytes are not a snapshot. */
  restore(snapshot: Uint8Array): void;
}
