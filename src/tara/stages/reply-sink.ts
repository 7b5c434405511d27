/**
 * Reply sink: every executor sends the replies of every batch it executes; the sink passes
 * each client's reply on to the client's gateway once. Copies of the same execution (the same
 * request at the same sequence number) are dropped; a retried request answered again at a later
 * sequence number (from the executors' client table) is passed on again, since the client may
 * have lost the first one.
 */
import type { Incoming, Stage, StageContext } from "../../platform/api/stage.js";
import type { Replies } from "../messages.js";

/** Clients remembered; the oldest are forgotten first (a forgotten one may see a duplicate, which its gateway drops). */
const CLIENTS_MAX = 1_000_000;

export class ReplySink implements Stage {
  /** Per client: the last request delivered and the sequence number that executed it. */
  private readonly delivered = new Map<number, { r: number; s: number }>();
  forwarded = 0;

  onTuple({ tuple }: Incoming, ctx: StageContext): void {
    const { s, replies } = tuple as Replies;
    for (const reply of replies) {
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
