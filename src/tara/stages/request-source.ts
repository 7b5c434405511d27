/**
 * Request source: takes clients' requests from its gateway port and hands them to every
 * proposer, batched per turn. Soft state only: a request lost in a crash is retried by its
 * client.
 */
import type { Source, StageContext } from "../../platform/api/stage.js";
import type { TaraConfig } from "../config.js";
import { streams, type ClientRequest, type RequestBatch } from "../messages.js";

export class RequestSource implements Source {
  private pending: ClientRequest[] = [];
  private pendingBytes = 0;

  constructor(private readonly config: TaraConfig) {}

  onExternal(input: unknown, ctx: StageContext): void {
    const request = input as ClientRequest;
    this.pending.push(request);
    this.pendingBytes += request.op.length;
    if (
      this.pending.length >= this.config.batchMax ||
      this.pendingBytes >= this.config.batchBytes
    ) {
      this.flush(ctx);
    } else if (this.pending.length === 1) ctx.timers.set("flush", this.config.batchDelayMs);
  }

  onTimer(_name: string, ctx: StageContext): void {
    this.flush(ctx);
  }

  private flush(ctx: StageContext): void {
    if (this.pending.length === 0) return;
    ctx.timers.cancel("flush");
    const batch: RequestBatch = { t: "requests", reqs: this.pending };
    this.pending = [];
    this.pendingBytes = 0;
    ctx.emit(streams.requests, batch);
  }
}
