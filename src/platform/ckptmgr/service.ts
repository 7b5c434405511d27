/**
 * What the checkpoint manager does with the requests its stream manager relays: writes,
 * loads and prunes on the store, answering each (`ckpt-ok` / `ckpt-error`, wire/messages.ts).
 * Requests of one owner run one at a time in the order they arrived (a load sees every put
 * before it, a prune never overtakes the base it keeps); different owners run concurrently.
 * The service outlives links: a request in progress when its link drops still completes, and
 * the replica's retry, on the next link, queues behind it.
 */
import {
  describeOwner,
  describeRef,
  type CheckpointOwner,
  type CheckpointStore,
} from "../checkpoint/store/store.js";
import { CheckpointChainBroken, loadLatest, pruneBefore } from "../checkpoint/store/recovery.js";
import { encodeChain, PartAssembler, splitParts } from "../checkpoint/manager-protocol.js";
import { WireError } from "../wire/errors.js";
import type { CkptPut, CkptReply, CkptRequest } from "../wire/messages.js";

export interface ServiceLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface ServiceStats {
  puts: number;
  putBytes: number;
  loads: number;
  prunes: number;
  failures: number;
}

/** Longest failure reason sent back (the wire schema's bound). */
const REASON_MAX = 2000;

export class CheckpointService {
  readonly stats: ServiceStats = { puts: 0, putBytes: 0, loads: 0, prunes: 0, failures: 0 };
  /** Per owner, the end of its queue of operations. */
  private readonly queues = new Map<string, Promise<void>>();
  private readonly seen = new Set<string>();

  constructor(
    private readonly store: CheckpointStore,
    private readonly log: ServiceLog,
  ) {}

  /** One link's view: its partial uploads, and where its answers go. */
  session(reply: (message: CkptReply) => void): CheckpointSession {
    return new CheckpointSession(this, reply);
  }

  /** Resolves when every queued operation has finished (for tests and shutdown). */
  async idle(): Promise<void> {
    while (this.queues.size > 0) await Promise.all(this.queues.values());
  }

  /** Runs `operation` after the owner's earlier ones; answers the request with its outcome. */
  run(
    owner: CheckpointOwner,
    what: string,
    operation: () => Promise<Uint8Array | undefined>,
    answer: (outcome: Uint8Array | Error) => void,
  ): void {
    const key = describeOwner(owner);
    if (!this.seen.has(key)) {
      this.seen.add(key);
      this.log.info({ event: "owner-served", owner: key }, "first request for an owner");
    }
    const previous = this.queues.get(key) ?? Promise.resolve();
    const done = previous.then(async () => {
      let outcome: Uint8Array | Error;
      try {
        outcome = (await operation()) ?? new Uint8Array(0);
      } catch (error) {
        this.stats.failures++;
        const reason = error instanceof Error ? error.message : String(error);
        this.log.warn({ event: "request-failed", request: what, reason }, "checkpoint failed");
        outcome = error instanceof Error ? error : new Error(reason);
      }
      try {
        answer(outcome);
      } catch (error) {
        // Never let one answer break the owner's queue (every later one chains on it).
        this.log.warn({ event: "answer-failed", request: what, reason: String(error) });
      }
    });
    this.queues.set(key, done);
    void done.then(() => {
      if (this.queues.get(key) === done) this.queues.delete(key);
    });
  }

  put(message: CkptPut, data: Uint8Array, answer: (outcome: Uint8Array | Error) => void): void {
    const ref = message.ref;
    this.run(
      ref.owner,
      `put ${describeRef(ref)}`,
      async () => {
        await this.store.put(ref, data);
        this.stats.puts++;
        this.stats.putBytes += data.length;
        return undefined;
      },
      answer,
    );
  }

  load(
    owner: CheckpointOwner,
    upTo: number | undefined,
    answer: (outcome: Uint8Array | Error) => void,
  ): void {
    this.run(
      owner,
      `load ${describeOwner(owner)}`,
      async () => {
        const chain = await loadLatest(this.store, owner, this.log, upTo);
        this.stats.loads++;
        return encodeChain(chain);
      },
      answer,
    );
  }

  prune(
    owner: CheckpointOwner,
    keepFromId: number,
    answer: (outcome: Uint8Array | Error) => void,
  ): void {
    this.run(
      owner,
      `prune ${describeOwner(owner)} below #${keepFromId}`,
      async () => {
        await pruneBefore(this.store, owner, keepFromId);
        this.stats.prunes++;
        return undefined;
      },
      answer,
    );
  }
}

export class CheckpointSession {
  /** Puts whose first part came and whose other parts are still coming, by request id. */
  private readonly uploads = new Map<number, { message: CkptPut; data: PartAssembler }>();
  private closed = false;

  constructor(
    private readonly service: CheckpointService,
    private readonly reply: (message: CkptReply) => void,
  ) {}

  /** Throws WireError when the link breaks the protocol (the caller closes it). */
  handle(message: CkptRequest): void {
    if (this.closed) return;
    switch (message.t) {
      case "ckpt-put": {
        if (this.uploads.has(message.req)) {
          throw new WireError("FRAME_INVALID", `request ${message.req} is already uploading`);
        }
        const data = new PartAssembler(message.size, message.data);
        if (data.complete) this.service.put(message, data.bytes(), this.answer(message.req));
        else this.uploads.set(message.req, { message, data });
        return;
      }
      case "ckpt-part": {
        const upload = this.uploads.get(message.req);
        if (!upload) {
          throw new WireError("FRAME_INVALID", `checkpoint part of no upload (${message.req})`);
        }
        upload.data.add(message.data);
        if (!upload.data.complete) return;
        this.uploads.delete(message.req);
        this.service.put(upload.message, upload.data.bytes(), this.answer(message.req));
        return;
      }
      case "ckpt-load":
        return this.service.load(message.owner, message.upTo, this.answer(message.req));
      case "ckpt-prune":
        return this.service.prune(message.owner, message.keepFromId, this.answer(message.req));
    }
  }

  /** The link is gone: partial uploads are dropped (their replicas retry whole). */
  close(): void {
    this.closed = true;
    this.uploads.clear();
  }

  private answer(req: number): (outcome: Uint8Array | Error) => void {
    return (outcome) => {
      if (this.closed) return;
      if (outcome instanceof Error) {
        const reason = outcome.message.slice(0, REASON_MAX);
        const chainBroken = outcome instanceof CheckpointChainBroken;
        this.reply({ t: "ckpt-error", req, reason, ...(chainBroken ? { chainBroken } : {}) });
        return;
      }
      const [first, ...rest] = splitParts(outcome);
      this.reply({ t: "ckpt-ok", req, size: outcome.length, data: first! });
      for (const data of rest) this.reply({ t: "ckpt-part", req, data });
    };
  }
}
