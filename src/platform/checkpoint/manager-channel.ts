/**
 * LPC-CM from the replica's side: every checkpoint operation is a request on the replica's
 * link to its stream manager, which relays it to the container's checkpoint manager; the
 * answer comes back the same way (wire/messages.ts, `ckpt-*`). Nothing here retries: a request
 * fails (rejects) when there is no link, when the link goes down before the answer, when the
 * manager reports an error, or after `timeoutMs`, and the caller (InstanceLog, group
 * checkpoints, recovery) retries with backoff as it does against an unreachable store.
 */
import type { CkptReply, CkptRequest } from "../wire/messages.js";
import type { CheckpointChannel } from "./channel.js";
import { decodeChain, PartAssembler, splitParts } from "./manager-protocol.js";
import { CheckpointChainBroken, type RecoveredChain } from "./store/recovery.js";
import { describeOwner, describeRef, type CheckpointOwner, type EntryRef } from "./store/store.js";

export interface ManagerChannelOptions {
  /** A request without an answer this long fails (default 10 s). */
  readonly timeoutMs?: number;
}

interface Outstanding {
  readonly what: string;
  /** A load's owner: a broken chain is reported as such (the replica then starts without). */
  readonly owner: CheckpointOwner | undefined;
  readonly resolve: (result: Uint8Array) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
  /** The result's bytes, once its `ckpt-ok` announced more than it carried. */
  result: PartAssembler | undefined;
}

export const DEFAULT_MANAGER_TIMEOUT_MS = 10_000;

export class ManagerChannel implements CheckpointChannel {
  readonly description = "stream manager → checkpoint manager";
  private readonly timeoutMs: number;
  private readonly outstanding = new Map<number, Outstanding>();
  private nextReq = 0;

  /**
   * @param send queues a message on the current link to the stream manager; false if there
   *   is none. Every message of one request is sent in one call sequence, on one link.
   */
  constructor(
    private readonly send: (message: CkptRequest) => boolean,
    options: ManagerChannelOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_MANAGER_TIMEOUT_MS;
  }

  /** Requests waiting for their answer. */
  get pending(): number {
    return this.outstanding.size;
  }

  async put(ref: EntryRef, data: Uint8Array): Promise<void> {
    const [first, ...rest] = splitParts(data);
    await this.request(`put ${describeRef(ref)}`, (req) => [
      { t: "ckpt-put", req, ref, size: data.length, data: first! },
      ...rest.map((part) => ({ t: "ckpt-part" as const, req, data: part })),
    ]);
  }

  /** `upTo`: only entries up to this id (GPC loads its last global checkpoint). */
  async loadLatest(owner: CheckpointOwner, upTo?: number): Promise<RecoveredChain> {
    const bytes = await this.request(
      `load ${describeOwner(owner)}`,
      (req) => [
        upTo === undefined ? { t: "ckpt-load", req, owner } : { t: "ckpt-load", req, owner, upTo },
      ],
      owner,
    );
    return decodeChain(bytes);
  }

  async prune(owner: CheckpointOwner, keepFromId: number): Promise<void> {
    await this.request(`prune ${describeOwner(owner)} below #${keepFromId}`, (req) => [
      { t: "ckpt-prune", req, owner, keepFromId },
    ]);
  }

  /** An answer from the stream manager link; one for no outstanding request is ignored. */
  onReply(message: CkptReply): void {
    const request = this.outstanding.get(message.req);
    if (!request) return; // timed out, or its link went down: already rejected
    try {
      switch (message.t) {
        case "ckpt-ok":
          request.result = new PartAssembler(message.size, message.data);
          break;
        case "ckpt-part":
          if (!request.result) throw new Error("a result part before the result");
          request.result.add(message.data);
          break;
        case "ckpt-error":
          return this.settle(
            message.req,
            message.chainBroken && request.owner
              ? new CheckpointChainBroken(request.owner, [message.reason])
              : new Error(`${request.what} failed: ${message.reason}`),
          );
      }
      if (request.result.complete) this.settle(message.req, request.result.bytes());
    } catch (error) {
      this.settle(message.req, new Error(`bad answer to ${request.what}: ${String(error)}`));
    }
  }

  /** The link to the stream manager is gone: whatever was asked on it gets no answer. */
  linkDown(reason: string): void {
    for (const req of [...this.outstanding.keys()]) {
      this.settle(req, new Error(`lost the stream manager before an answer (${reason})`));
    }
  }

  private request(
    what: string,
    messages: (req: number) => CkptRequest[],
    owner?: CheckpointOwner,
  ): Promise<Uint8Array> {
    const req = this.nextReq++;
    return new Promise<Uint8Array>((resolve, reject) => {
      for (const message of messages(req)) {
        if (!this.send(message)) {
          reject(new Error(`cannot ${what}: not connected to the stream manager`));
          return;
        }
      }
      const timer = setTimeout(
        () => this.settle(req, new Error(`${what}: no answer in ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      this.outstanding.set(req, { what, owner, resolve, reject, timer, result: undefined });
    });
  }

  private settle(req: number, outcome: Uint8Array | Error): void {
    const request = this.outstanding.get(req);
    if (!request) return;
    this.outstanding.delete(req);
    clearTimeout(request.timer);
    if (outcome instanceof Error) request.reject(outcome);
    else request.resolve(outcome);
  }
}
