/**
 * TARA's parameters. A deployment sets them as topology parameters (`tara start --param
 * f=2 --param checkpointInterval=500`); the simulator passes them directly.
 */
import { z } from "zod";

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const taraConfigSchema = z
  .object({
    /** Crashes tolerated per stage: f+1 request sources, proposers and reply sinks, 2f+1 committers and executors. */
    f: int(1, 8).default(1),
    /** K: executors take a group checkpoint after every K-th sequence number. */
    checkpointInterval: int(1, 1_000_000).default(1000),
    /** W: the leader never proposes beyond the stable checkpoint + W (flow control, bounded logs). */
    window: int(2, 10_000_000).optional(),
    /** Most requests in one proposal. */
    batchMax: int(1, 100_000).default(256),
    /** Most bytes of requests in one proposal (or request batch); a larger request goes alone. */
    batchBytes: int(1024, 256 * 1024 * 1024).default(1024 * 1024),
    /** How long the leader (and a request source) waits to fill a batch; 0: the end of the current turn. */
    batchDelayMs: int(0, 10_000).default(0),
    /** The leader's heartbeat period when it has nothing to propose. */
    heartbeatMs: int(1, 60_000).default(50),
    /** A committer that hears nothing from its leader this long asks for a view change (doubles per failed view). */
    viewChangeMs: int(2, 600_000).default(500),
    /** A trailing executor's state request goes to the next peer after this long without an answer. */
    stateTimeoutMs: int(1, 600_000).default(300),
    /** Proposers that do not lead keep clients' requests this long, for when they take over. */
    requestRetentionMs: int(1, 3_600_000).default(3000),
    /**
     * Tests: executors log every accept they receive from this committer, and the committer
     * logs the state it recovers (checked against each other after a crash); -1: off.
     */
    traceCommitter: int(-1, 1000).default(-1),
  })
  .strict()
  .transform((c) => ({ ...c, window: c.window ?? 2 * c.checkpointInterval }))
  .refine((c) => c.window > c.checkpointInterval, {
    message: "window must be larger than checkpointInterval, or the window never moves",
  });

export type TaraConfig = z.output<typeof taraConfigSchema>;

export function parseTaraConfig(input: Readonly<Record<string, unknown>>): TaraConfig {
  return taraConfigSchema.parse(input);
}

/** The leader of view `v` among `proposers` proposers. */
export function leaderOf(view: number, proposers: number): number {
  return view % proposers;
}
