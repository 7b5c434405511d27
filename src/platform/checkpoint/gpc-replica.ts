/**
 * GPC at one replica (docs/CHECKPOINTING.md): markers, snapshots, output commit and rollback.
 * Markers for checkpoint i come on every input. The first one (a source: its stream manager's
 * command) makes the replica snapshot its stage at once and send the marker downstream; then,
 * on every other input, it records what arrives until that input's marker comes (the channel's
 * state, replayed after a rollback): Chandy-Lamport's snapshot, Flink's unaligned checkpoint.
 * No input is ever blocked, so a checkpoint costs the request path no waiting. The snapshot
 * and the record are saved through the checkpoint manager; "saved" goes to the topology
 * manager, which declares checkpoint i global once every replica saved it.
 *
 * Incremental checkpoints: a stage that records every change of its state (`recordsEveryUpdate`)
 * is saved as a delta, the updates since this replica's previous checkpoint, on top of the
 * chain back to its last full snapshot (a base). A new base is written once the deltas since
 * the last one add up to its size, or number MAX_DELTAS, and as the first checkpoint after a
 * rollback (so a chain never crosses entries of an abandoned run). A checkpoint is reported
 * saved only once every entry of its chain is durable; one abandoned here is still saved when
 * later deltas build on it, but never reported. Other stages are snapshotted whole each time.
 *
 * Output commit: what the replica sends outside the topology is held until a global
 * checkpoint covers it. Tuples inside the topology need no holding: a failure anywhere rolls
 * every replica back to the last global checkpoint, and the sources' tuples since then are
 * replayed by their stream managers.
 */
import { pack, unpack } from "msgpackr";
import type { InstanceState, ReplicaId, Tuple } from "../api/stage.js";
import type { CheckpointSink } from "./channel.js";
import type { CheckpointOwner } from "./store/store.js";

/** A tuple as delivered to the stage: its source task, stream index and value. */
export interface Delivery {
  readonly src: number;
  readonly stream: number;
  readonly tuple: Tuple;
}

export interface GpcHost {
  readonly self: ReplicaId;
  readonly owner: CheckpointOwner;
  /** Callbacks, not promises: the simulator drives this class on its virtual clock. */
  readonly channel: CheckpointSink;
  /**
   * Tasks sending to this replica on forward and on back edges: all recorded alike; a replica
   * without forward inputs (a source) snapshots on its stream manager's command.
   */
  readonly forward: readonly number[];
  readonly back: readonly number[];
  /** The stage's state now (undefined: a stage without state). */
  snapshot(): Tuple | undefined;
  /** The stage records every change of its state (`record`): deltas instead of snapshots. */
  readonly incremental: boolean;
  /** An incremental stage's state it does not record: the last update of every delta. */
  unrecorded(): Tuple | undefined;
  /** Sends marker i to every task downstream. */
  emitMarker(i: number): void;
  /** Hands a tuple to the stage. */
  deliver(delivery: Delivery): void;
  /** Stops the installed stage acting on its own (its timers), pending a rollback. */
  quiesce(): void;
  /** Replaces the stage by a new one in the given state and starts it. */
  restart(state: InstanceState): void;
  saved(i: number): void;
  restored(r: number): void;
  setTimer(delayMs: number, fire: () => void): void;
  /** A checkpoint whose markers have not all come this long after its snapshot is abandoned. */
  readonly alignTimeoutMs: number;
  readonly log: {
    info(obj: object, msg?: string): void;
    warn(obj: object, msg?: string): void;
    error(obj: object, msg?: string): void;
  };
}

/** How often a replica deletes its checkpoints older than the last global one's chain. */
const PRUNE_EVERY_MS = 2000;
/** Most deltas on one base: a restore reads the whole chain. */
export const MAX_DELTAS = 100;

/** The stage's part of a checkpoint, encoded at the snapshot. */
type StatePart =
  | { readonly kind: "base"; readonly state: Uint8Array | undefined }
  | { readonly kind: "delta"; readonly prev: number; readonly updates: Uint8Array };

/** A checkpoint snapshotted here whose markers have not come on every input yet. */
interface Pending {
  readonly i: number;
  /**
   * The stage's snapshot or updates, encoded at once: they may share structures with the live
   * state, which goes on changing while the inputs are recorded.
   */
  readonly part: StatePart;
  /** Inputs whose marker has not come since the snapshot: what they send is recorded. */
  readonly recording: Set<number>;
  readonly channelLog: Delivery[];
  readonly startedAt: number;
}

/** A GPC checkpoint as stored: a base ("base" entry) or a delta on checkpoint `prev` ("delta"). */
interface Saved {
  /** A base: the stage's snapshot, encoded. */
  state?: Uint8Array;
  /** A delta: the checkpoint it applies to, and the updates recorded since, encoded. */
  prev?: number;
  updates?: Uint8Array;
  channel: [number, number, Tuple][];
}

/** The chain the replica's latest checkpoint belongs to. */
interface Chain {
  readonly base: number;
  readonly baseBytes: number;
  deltas: number;
  deltaBytes: number;
}

function channelOf(saved: Saved): Delivery[] {
  return saved.channel.map(([src, stream, tuple]) => ({ src, stream, tuple }));
}

export interface GpcStats {
  saved: number | null;
  global: number;
  /** Entries written whole and as deltas, and the bytes of the last of each. */
  bases: number;
  deltas: number;
  lastBaseBytes: number;
  lastDeltaBytes: number;
  /** Checkpoints whose markers all came (saved then), and how long the last one took. */
  alignments: number;
  lastAlignmentMs: number;
  held: number;
  abandoned: number;
  restores: number;
  lastRestore: { attempt: number; checkpoint: number; ms: number } | null;
}

export class GpcReplica {
  readonly stats: GpcStats = {
    saved: null,
    global: 0,
    bases: 0,
    deltas: 0,
    lastBaseBytes: 0,
    lastDeltaBytes: 0,
    alignments: 0,
    lastAlignmentMs: 0,
    held: 0,
    abandoned: 0,
    restores: 0,
    lastRestore: null,
  };
  /** Snapshotted checkpoints still recording inputs, oldest first. */
  private pending: Pending[] = [];
  /** The last checkpoint this replica snapshotted: outputs since are covered by a later one. */
  private epoch = 0;
  private externalHeld: { epoch: number; send: () => void }[] = [];
  /** A rollback in progress (attempt), and what arrives meanwhile. */
  private restoring: number | undefined;
  private early: Delivery[] = [];
  /** After a restore, until resume: outputs held (other replicas may not be restored yet). */
  private paused: (() => void)[] | undefined;
  private attempt = -1;
  /** Between a restore command and the new stage: the installed stage is the old run's. */
  private stale = false;
  private prunedAt = -Infinity;
  /** The highest checkpoint snapshotted here: older markers are late. */
  private finished = 0;
  /** Incremental: the updates recorded since the last snapshot, and the chain it belongs to. */
  private updates: Tuple[] = [];
  private chain: Chain | undefined;
  /** Incremental: per checkpoint of this run, its chain's base and the entry it applies to. */
  private readonly links = new Map<number, { base: number; prev: number | undefined }>();
  /** Entries of this run that are durable, and checkpoints to report once their chain is. */
  private readonly durable = new Set<number>();
  private unreported: number[] = [];

  constructor(
    private readonly host: GpcHost,
    private readonly now: () => number,
    /** A restarted replica waits for the rollback its crash causes before it runs. */
    awaitRestore: boolean,
  ) {
    if (awaitRestore) this.restoring = Infinity;
  }

  /** Whether the stage must not run yet (a restarted replica before its restore). */
  get waiting(): boolean {
    return this.restoring !== undefined;
  }

  /** A source's stream manager starts checkpoint i. */
  startCheckpoint(i: number): void {
    if (this.restoring !== undefined || this.host.forward.length > 0) return;
    this.marker(i, -1);
  }

  /** A delivered tuple (or marker, `marker` set). */
  onDelivery(delivery: Delivery, marker: number | undefined): void {
    if (this.restoring !== undefined) {
      if (marker === undefined) this.early.push(delivery);
      return;
    }
    if (marker !== undefined) return this.marker(marker, delivery.src);
    for (const p of this.pending) if (p.recording.has(delivery.src)) p.channelLog.push(delivery);
    this.host.deliver(delivery);
  }

  /** An update of the stage's state (an incremental stage): part of its next checkpoint. */
  record(update: Tuple): void {
    if (this.host.incremental && !this.stale) this.updates.push(update);
  }

  /** An output leaving the topology: held until a global checkpoint covers it. */
  external(send: () => void): void {
    if (this.stale) return;
    this.externalHeld.push({ epoch: this.epoch, send });
    this.stats.held = this.externalHeld.length;
  }

  /**
   * Any output: dropped while the old stage is still installed during a rollback (it is the
   * abandoned run's), held from the new stage's start to the resume.
   */
  output(send: () => void): void {
    if (this.stale) return;
    if (this.paused) this.paused.push(send);
    else send();
  }

  onGlobal(i: number): void {
    if (i <= this.stats.global) return;
    this.stats.global = i;
    let released = 0;
    while (released < this.externalHeld.length && this.externalHeld[released]!.epoch < i) {
      this.externalHeld[released++]!.send();
    }
    this.externalHeld.splice(0, released);
    this.stats.held = this.externalHeld.length;
    // Pruning lists the owner's entries, which some stores (NATS) do by reading the bucket:
    // older checkpoints go every PRUNE_EVERY_MS, not at every global one.
    if (this.now() - this.prunedAt < PRUNE_EVERY_MS) return;
    // An incremental replica keeps the chain of checkpoint i: from its base.
    const keepFrom = this.host.incremental ? this.links.get(i)?.base : i;
    if (keepFrom === undefined) return;
    this.prunedAt = this.now();
    for (const id of this.links.keys()) if (id < keepFrom) this.links.delete(id);
    for (const id of this.durable) if (id < keepFrom) this.durable.delete(id);
    this.host.channel.prune(this.host.owner, keepFrom, (error) => {
      if (error)
        this.host.log.warn({ event: "prune-failed", reason: error.message }, "prune failed");
    });
  }

  /** Rolls the replica back to global checkpoint g for attempt r. */
  onRestore(r: number, g: number): void {
    if (r <= this.attempt) return;
    // g is global: what left before its snapshot goes out, even if "global" has not come yet.
    this.onGlobal(g);
    this.attempt = r;
    this.restoring = r;
    // The old stage stays installed until the checkpoint is loaded: it must not act meanwhile.
    this.stale = true;
    this.host.quiesce();
    this.pending = [];
    this.finished = 0;
    // The next checkpoint is a base: a chain never reaches back into a rolled-back run.
    this.updates = [];
    this.chain = undefined;
    this.links.clear();
    this.durable.clear();
    this.unreported = [];
    // Everything else in flight belongs to the abandoned run: dropped.
    this.early = [];
    this.externalHeld = [];
    this.paused = [];
    this.stats.held = 0;
    const started = this.now();
    this.load(r, g, started);
  }

  onResume(r: number): void {
    if (r !== this.attempt || this.restoring !== undefined || !this.paused) return;
    const paused = this.paused;
    this.paused = undefined;
    for (const send of paused) send();
  }

  /** Loads global checkpoint g (retrying while the store is away) and restarts the stage in it. */
  private load(r: number, g: number, started: number, delay = 50): void {
    if (g === 0) return this.restored(r, g, undefined, started);
    this.host.channel.loadLatest(
      this.host.owner,
      (result) => {
        if (this.attempt !== r) return; // a newer attempt took over
        const checkpoint = result instanceof Error ? result : rebuildGpcCheckpoint(result, g);
        if (!(checkpoint instanceof Error)) return this.restored(r, g, checkpoint, started);
        if (result instanceof Error) {
          this.host.log.warn({ event: "restore-stalled", reason: result.message });
        } else {
          this.host.log.error(
            { event: "restore-missing", g, reason: checkpoint.message },
            "global checkpoint not found",
          );
        }
        this.host.setTimer(delay, () => {
          if (this.attempt === r) this.load(r, g, started, Math.min(delay * 2, 2000));
        });
      },
      g,
    );
  }

  private restored(
    r: number,
    g: number,
    checkpoint: RebuiltCheckpoint | undefined,
    started: number,
  ): void {
    this.epoch = g;
    this.stale = false;
    this.host.restart(checkpoint?.state ?? { snapshot: undefined, updates: [] });
    // What was in flight on back edges at the cut reaches the restored stage first.
    for (const delivery of checkpoint?.channel ?? []) this.host.deliver(delivery);
    this.restoring = undefined;
    const early = this.early;
    this.early = [];
    for (const delivery of early) this.onDelivery(delivery, undefined);
    const ms = this.now() - started;
    this.stats.restores++;
    this.stats.lastRestore = { attempt: r, checkpoint: g, ms };
    this.host.log.info({ event: "gpc-restored", attempt: r, checkpoint: g, ms }, "rolled back");
    this.host.restored(r);
  }

  /**
   * Marker i from input `src` (-1: a source's command). The first one of a checkpoint snapshots
   * the stage at once; every other input is then recorded until its own marker comes.
   */
  private marker(i: number, src: number): void {
    // FIFO links: a marker of an older checkpoint still awaited on this input never comes now
    // (it was lost with a failed replica), so that checkpoint can never be global: abandoned.
    for (const p of this.pending) {
      if (p.i < i && p.recording.has(src)) this.abandon(p);
    }
    const pending = this.pending.find((p) => p.i === i);
    if (pending) {
      pending.recording.delete(src);
      if (pending.recording.size === 0) this.complete(pending);
      return;
    }
    if (i <= this.finished) return; // a late marker of a checkpoint done or abandoned here
    this.snapshotNow(i, src);
  }

  /** Gives up checkpoint `p` here (never global then; saved all the same if deltas build on it). */
  private abandon(p: Pending): void {
    this.pending = this.pending.filter((other) => other !== p);
    this.stats.abandoned++;
    if (this.host.incremental) this.save(p.i, this.encode(p), this.attempt, false);
    this.host.log.warn({ event: "gpc-abandoned", checkpoint: p.i }, "checkpoint abandoned");
  }

  private snapshotNow(i: number, src: number): void {
    const recording = new Set([...this.host.forward, ...this.host.back]);
    recording.delete(src);
    const p: Pending = {
      i,
      part: this.takePart(i),
      recording,
      channelLog: [],
      startedAt: this.now(),
    };
    this.finished = i;
    this.epoch = i;
    // In order with the outputs: between a rollback's restore and its resume they are held,
    // and this snapshot counts them as sent.
    this.output(() => this.host.emitMarker(i));
    if (recording.size === 0) return this.complete(p);
    this.pending.push(p);
    this.host.setTimer(this.host.alignTimeoutMs, () => {
      if (this.pending.includes(p)) this.abandon(p);
    });
  }

  /** The stage's part of checkpoint i: the updates since the previous one, or a snapshot. */
  private takePart(i: number): StatePart {
    const updates = this.updates;
    this.updates = [];
    const chain = this.chain;
    if (
      this.host.incremental &&
      chain !== undefined &&
      chain.deltas < MAX_DELTAS &&
      chain.deltaBytes < chain.baseBytes
    ) {
      const unrecorded = this.host.unrecorded();
      if (unrecorded !== undefined) updates.push(unrecorded);
      const encoded = pack(updates);
      const prev = this.finished;
      chain.deltas++;
      chain.deltaBytes += encoded.length;
      this.links.set(i, { base: chain.base, prev });
      this.stats.deltas++;
      this.stats.lastDeltaBytes = encoded.length;
      return { kind: "delta", prev, updates: encoded };
    }
    const state = this.host.snapshot();
    const encoded = state === undefined ? undefined : pack(state);
    const bytes = encoded?.length ?? 0;
    if (this.host.incremental) {
      this.chain = { base: i, baseBytes: bytes, deltas: 0, deltaBytes: 0 };
      this.links.set(i, { base: i, prev: undefined });
    }
    this.stats.bases++;
    this.stats.lastBaseBytes = bytes;
    return { kind: "base", state: encoded };
  }

  private complete(p: Pending): void {
    this.pending = this.pending.filter((other) => other !== p);
    this.stats.alignments++;
    this.stats.lastAlignmentMs = this.now() - p.startedAt;
    this.save(p.i, this.encode(p), this.attempt, true);
  }

  private encode(p: Pending): { kind: "base" | "delta"; data: Uint8Array } {
    const channel = p.channelLog.map((d): [number, number, Tuple] => [d.src, d.stream, d.tuple]);
    const saved: Saved =
      p.part.kind === "base"
        ? { state: p.part.state, channel }
        : { prev: p.part.prev, updates: p.part.updates, channel };
    return { kind: p.part.kind, data: pack(saved) };
  }

  /**
   * Saves checkpoint i (retrying while the store is away) and, if `report`, reports it once
   * its chain is durable, unless rolled back meanwhile.
   */
  private save(
    i: number,
    entry: { kind: "base" | "delta"; data: Uint8Array },
    attempt: number,
    report: boolean,
  ): void {
    if (report) this.unreported.push(i);
    const ref = { owner: this.host.owner, id: i, kind: entry.kind };
    const put = (delayMs: number): void =>
      this.host.channel.put(ref, entry.data, (error) => {
        if (this.attempt !== attempt) return; // saved for a run that was rolled back
        if (!error) {
          this.durable.add(i);
          this.reportDurable();
          return;
        }
        this.host.log.warn({ event: "checkpoint-stalled", reason: error.message });
        this.host.setTimer(delayMs, () => {
          if (this.attempt === attempt) put(Math.min(delayMs * 2, 2000));
        });
      });
    put(50);
  }

  /** Reports the checkpoints whose every entry back to their base is durable. */
  private reportDurable(): void {
    const left: number[] = [];
    for (const i of this.unreported) {
      if (!this.chainDurable(i)) {
        left.push(i);
        continue;
      }
      if (this.stats.saved === null || i > this.stats.saved) this.stats.saved = i;
      this.host.saved(i);
    }
    this.unreported = left;
  }

  private chainDurable(i: number): boolean {
    for (let id: number | undefined = i; id !== undefined; id = this.links.get(id)?.prev) {
      if (!this.durable.has(id)) return false;
    }
    return true;
  }
}

/** A checkpoint as the stage restarts in it. */
interface RebuiltCheckpoint {
  readonly state: InstanceState;
  readonly channel: readonly Delivery[];
}

/**
 * Checkpoint g from the chain the store returned (its latest base up to g and the deltas
 * after it): g's own entry, and for a delta every entry back to the base through `prev`.
 * A chain that does not lead back to the base returned is an error, never a guess.
 */
export function rebuildGpcCheckpoint(
  chain: { base?: { id: number; data: Uint8Array }; deltas: { id: number; data: Uint8Array }[] },
  g: number,
): RebuiltCheckpoint | Error {
  const base = chain.base;
  if (!base) return new Error(`no base up to checkpoint ${g}`);
  const deltas = new Map(chain.deltas.map((d) => [d.id, d.data]));
  const path: Saved[] = [];
  let id = g;
  while (id !== base.id) {
    const data = deltas.get(id);
    if (data === undefined)
      return new Error(`checkpoint ${id} is not in the chain of base ${base.id}`);
    const saved = unpack(data) as Saved;
    if (saved.prev === undefined || saved.updates === undefined || saved.prev >= id) {
      return new Error(`checkpoint ${id} is not a delta`);
    }
    path.push(saved);
    id = saved.prev;
  }
  const baseSaved = unpack(base.data) as Saved;
  const target = path[0] ?? baseSaved;
  const updates = path.reverse().flatMap((saved) => unpack(saved.updates!) as Tuple[]);
  return {
    state: {
      snapshot: baseSaved.state === undefined ? undefined : unpack(baseSaved.state),
      updates,
    },
    channel: channelOf(target),
  };
}
