/**
 * Reply sink: every executor sends the replies of every batch it executes; the sink passes
 * each client's reply on to the client's gateway once. Copies of the same execution (the same
 * request at the same sequence number) are dropped; a retried request answered again at a later
 * sequence number (from the executors' client table) is passed on again, since the client may
 * have lost the first one. Pushes (r = 0: messages to clients that asked nothing) pass once per
 * sequence number.
 */
import type { Incoming, Stage, StageContext } from "../../platform/api/stage.js";
import { decodeReplies } from "../batch.js";
import type { Replies } from "../messages.js";

/** Clients remembered; the oldest are forgotten first (a forgotten one may see a duplicate, which its gateway drops). */
const CLIENTS_MAX = 1_000_000;
/** Sequence numbers remembered as handled: every executor sends the same replies for each. */
const SEQUENCES_MAX = 100_000;

export class ReplySink implements Stage {
  /** Per client: the last request delivered and the sequence number that executed it. */
  private readonly delivered = new Map<number, { r: number; s: number }>();
  private readonly handled = new Set<number>();
  forwarded = 0;

  onTuple({ tuple }: Incoming, ctx: StageContext): void {
    const { s, b } = tuple as Replies;
    // Executors are deterministic: the first copy of a sequence number's replies is the one.
    if (this.handled.has(s)) return;
    this.handled.add(s);
    if (this.handled.size > SEQUENCES_MAX) this.handled.delete(this.handled.values().next().value!);
    for (const reply of decodeReplies(b)) {
      if (reply.r === 0) {
        // A push answers no request: only its sequence number makes it a copy (above).
        this.forwarded++;
        ctx.external.send(reply);
        continue;
      }
      const last = this.delivered.get(reply.c);
      if (last && (reply.r < last.r || (reply.r === last.r && s <= last.s))) continue;
      this.delivered.delete(reply.c);
      this.delivered.set(reply.c, { r: reply.r, s });
      if (this.delivered.size > CLIENTS_MAX) {
        this.delivered.delete(this.delivered.keys().next().value!);
      }
      this.forwarded++;
      ctx.external.send(reply);
    }
  }
}
