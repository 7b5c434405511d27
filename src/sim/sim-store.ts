/**
 * A checkpoint store on the simulator's virtual clock, with the real entry format (header and
 * CRC32C checks: format.ts) and the real recovery rules (recovery.ts), so what a replica
 * restores in the simulator is what the real store would give it.
 *
 * Its model of stable storage:
 * - fsync: a put becomes durable a seeded latency after it was issued; `done` comes then.
 *   Durable entries survive every crash.
 * - A crash of the writer while its put is in flight leaves the entry absent, torn (truncated
 *   or corrupted bytes, which recovery rejects), or whole (durable, never acknowledged), as
 *   seeded; an entry already stored validly under that name stays (a rewrite replaces it
 *   atomically, as the fs store's rename does).
 * - An outage: until it ends, every operation that completes fails (nothing is stored); the
 *   writers retry.
 *
 * Writers are named by the caller (the simulator uses a replica's task and incarnation); every
 * operation is tied to its writer, and `crashWriter` settles what the writer had in flight.
 */
import type { CheckpointSink } from "../platform/checkpoint/channel.js";
import {
  compareRefs,
  decodeEntry,
  encodeEntry,
  entryName,
  validateOwner,
} from "../platform/checkpoint/store/format.js";
import {
  loadLatestSync,
  prunable,
  type RecoveredChain,
  type RecoveryLog,
  type SyncCheckpointReader,
} from "../platform/checkpoint/store/recovery.js";
import {
  CheckpointMissing,
  describeOwner,
  type CheckpointOwner,
  type EntryRef,
} from "../platform/checkpoint/store/store.js";
import type { Random } from "./random.js";

export interface SimStoreModel {
  /** A put is durable after a latency drawn uniformly in [putMinMs, putMaxMs]. */
  putMinMs: number;
  putMaxMs: number;
  /** A load (list and read the chain) and a prune take a latency in [loadMinMs, loadMaxMs]. */
  loadMinMs: number;
  loadMaxMs: number;
  /** Probability that an operation takes `slowMs` longer (a congested disk or server). */
  slowChance: number;
  slowMs: number;
  /** Of the puts in flight when their writer crashes: the share left torn. */
  tornOnCrash: number;
  /** Of those: the share that reached the disk whole (the rest leave nothing). */
  wholeOnCrash: number;
}

export const defaultStoreModel: Readonly<SimStoreModel> = Object.freeze({
  putMinMs: 0.2,
  putMaxMs: 3,
  loadMinMs: 0.5,
  loadMaxMs: 5,
  slowChance: 0.01,
  slowMs: 40,
  tornOnCrash: 0.4,
  wholeOnCrash: 0.2,
});

export interface SimStoreOptions {
  readonly random: Random;
  /** Runs `action` `delayMs` of virtual time from now. */
  readonly schedule: (delayMs: number, action: () => void) => void;
  readonly now: () => number;
  readonly model?: Partial<SimStoreModel>;
  /** Where recovery reports rejected entries; default: silent. */
  readonly log?: RecoveryLog;
}

export interface SimStoreStats {
  puts: number;
  loads: number;
  prunes: number;
  /** Operations that failed in an outage. */
  failed: number;
  /** Puts in flight at their writer's crash, by what they left. */
  torn: number;
  whole: number;
  absent: number;
}

interface Stored {
  readonly ref: EntryRef;
  readonly bytes: Uint8Array;
}

interface InFlight {
  /** Settles it as its writer crashes (its callback never comes). */
  readonly onCrash: () => void;
  settled: boolean;
}

export class SimStore implements SyncCheckpointReader {
  readonly description = "sim";
  readonly model: Readonly<SimStoreModel>;
  readonly stats: SimStoreStats = {
    puts: 0,
    loads: 0,
    prunes: 0,
    failed: 0,
    torn: 0,
    whole: 0,
    absent: 0,
  };
  private readonly owners = new Map<string, Map<string, Stored>>();
  private readonly inFlight = new Map<string, Set<InFlight>>();
  private outageUntil = -Infinity;
  private readonly log: RecoveryLog;

  constructor(private readonly options: SimStoreOptions) {
    const model = { ...defaultStoreModel, ...options.model };
    if (
      !(model.putMinMs >= 0 && model.putMaxMs >= model.putMinMs) ||
      !(model.loadMinMs >= 0 && model.loadMaxMs >= model.loadMinMs) ||
      !(model.slowChance >= 0 && model.slowChance <= 1 && model.slowMs >= 0) ||
      !(model.tornOnCrash >= 0 && model.wholeOnCrash >= 0) ||
      !(model.tornOnCrash + model.wholeOnCrash <= 1)
    ) {
      throw new RangeError(`invalid store model ${JSON.stringify(model)}`);
    }
    this.model = Object.freeze(model);
    this.log = options.log ?? { warn: () => undefined };
  }

  /** Whether operations fail now. */
  get unavailable(): boolean {
    return this.options.now() < this.outageUntil;
  }

  /** Every operation that completes in the next `ms` fails. */
  outage(ms: number): void {
    this.outageUntil = Math.max(this.outageUntil, this.options.now() + ms);
  }

  /** Ends an outage now. */
  heal(): void {
    this.outageUntil = -Infinity;
  }

  /** The sink one writer uses: every callback comes from a scheduled action, never at once. */
  sink(writer: string): CheckpointSink {
    return {
      style: "callbacks",
      description: this.description,
      put: (ref, data, done) => this.put(writer, ref, data, done),
      loadLatest: (owner, done, upTo) => this.load(writer, owner, done, upTo),
      prune: (owner, keepFromId, done) => this.prune(writer, owner, keepFromId, done),
    };
  }

  /** The writer died: what it had in flight settles as the model says, no callback comes. */
  crashWriter(writer: string): void {
    const ops = this.inFlight.get(writer);
    if (!ops) return;
    this.inFlight.delete(writer);
    for (const op of ops) {
      if (op.settled) continue;
      op.settled = true;
      op.onCrash();
    }
  }

  // ---- SyncCheckpointReader: what recovery reads -----------------------------------------

  list(owner: CheckpointOwner): EntryRef[] {
    validateOwner(owner);
    const entries = this.owners.get(describeOwner(owner));
    return entries ? [...entries.values()].map((e) => e.ref).sort(compareRefs) : [];
  }

  get(ref: EntryRef): Uint8Array {
    const stored = this.owners.get(describeOwner(ref.owner))?.get(entryName(ref));
    if (!stored) throw new CheckpointMissing(ref);
    return decodeEntry(ref, stored.bytes);
  }

  /** The stored bytes of an entry, valid or not (tests). */
  raw(ref: EntryRef): Uint8Array | undefined {
    return this.owners.get(describeOwner(ref.owner))?.get(entryName(ref))?.bytes;
  }

  // ---- operations ------------------------------------------------------------------------

  private put(writer: string, ref: EntryRef, data: Uint8Array, done: (error?: Error) => void) {
    // Encoded now: what the writer handed over, whatever it does with `data` later.
    const bytes = encodeEntry(ref, data);
    const random = this.options.random;
    this.start(writer, this.latency(this.model.putMinMs, this.model.putMaxMs), {
      complete: () => {
        if (this.failed(done)) return;
        this.stats.puts++;
        this.store(ref, bytes);
        done();
      },
      crash: () => {
        const roll = random.next();
        if (roll < this.model.tornOnCrash) {
          this.stats.torn++;
          if (!this.holdsValid(ref)) this.store(ref, this.tear(bytes));
        } else if (roll < this.model.tornOnCrash + this.model.wholeOnCrash) {
          this.stats.whole++;
          this.store(ref, bytes);
        } else {
          this.stats.absent++;
        }
      },
    });
  }

  private load(
    writer: string,
    owner: CheckpointOwner,
    done: (result: RecoveredChain | Error) => void,
    upTo: number | undefined,
  ): void {
    this.start(writer, this.latency(this.model.loadMinMs, this.model.loadMaxMs), {
      complete: () => {
        if (this.failed(done)) return;
        this.stats.loads++;
        let chain: RecoveredChain;
        try {
          chain = loadLatestSync(this, owner, this.log, upTo);
        } catch (error) {
          done(error as Error);
          return;
        }
        // Copies: a reader never shares bytes with the store (nor another reader).
        const copy = (e: { id: number; data: Uint8Array }) => ({ id: e.id, data: e.data.slice() });
        const deltas = chain.deltas.map(copy);
        done(chain.base ? { base: copy(chain.base), deltas } : { deltas });
      },
      crash: () => undefined,
    });
  }

  private prune(
    writer: string,
    owner: CheckpointOwner,
    keepFromId: number,
    done: (error?: Error) => void,
  ): void {
    const apply = () => {
      const entries = this.owners.get(describeOwner(owner));
      for (const ref of prunable(this.list(owner), keepFromId)) entries?.delete(entryName(ref));
    };
    this.start(writer, this.latency(this.model.loadMinMs, this.model.loadMaxMs), {
      complete: () => {
        if (this.failed(done)) return;
        this.stats.prunes++;
        apply();
        done();
      },
      // Deletes are idempotent and only of entries a durable base covers: either way is fine.
      crash: () => {
        if (this.options.random.chance(0.5)) apply();
      },
    });
  }

  private start(
    writer: string,
    delayMs: number,
    outcome: { complete: () => void; crash: () => void },
  ): void {
    let ops = this.inFlight.get(writer);
    if (!ops) this.inFlight.set(writer, (ops = new Set()));
    const op: InFlight = { onCrash: outcome.crash, settled: false };
    ops.add(op);
    this.options.schedule(delayMs, () => {
      if (op.settled) return;
      op.settled = true;
      const current = this.inFlight.get(writer);
      current?.delete(op);
      if (current?.size === 0) this.inFlight.delete(writer);
      outcome.complete();
    });
  }

  /** In an outage the operation fails: true once `done` has the error. */
  private failed(done: (error: Error) => void): boolean {
    if (!this.unavailable) return false;
    this.stats.failed++;
    done(new Error("checkpoint store unavailable (simulated outage)"));
    return true;
  }

  private latency(min: number, max: number): number {
    const random = this.options.random;
    const ms = random.between(min, max);
    return random.chance(this.model.slowChance) ? ms + this.model.slowMs : ms;
  }

  private store(ref: EntryRef, bytes: Uint8Array): void {
    const key = describeOwner(ref.owner);
    let entries = this.owners.get(key);
    if (!entries) this.owners.set(key, (entries = new Map()));
    entries.set(entryName(ref), { ref, bytes });
  }

  private holdsValid(ref: EntryRef): boolean {
    try {
      this.get(ref);
      return true;
    } catch {
      return false;
    }
  }

  /** What a write cut short leaves: a prefix of the entry, or the entry with one byte wrong. */
  private tear(bytes: Uint8Array): Uint8Array {
    const random = this.options.random;
    if (bytes.length === 0 || random.chance(0.5)) {
      return bytes.slice(0, random.int(0, Math.max(0, bytes.length - 1)));
    }
    const torn = bytes.slice();
    const at = random.int(0, torn.length - 1);
    torn[at] = torn[at]! ^ random.int(1, 255);
    return torn;
  }
}
