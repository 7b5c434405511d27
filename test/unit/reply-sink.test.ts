import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Incoming, StageContext } from "../../src/platform/api/stage.js";
import { encodeReplies } from "../../src/tara/batch.js";
import type { ClientReply, Replies } from "../../src/tara/messages.js";
import { ReplySink } from "../../src/tara/stages/reply-sink.js";

/** Feeds executors' reply batches to a sink; returns what it passed on. */
function sinkOf() {
  const sent: ClientReply[] = [];
  const ctx = { external: { send: (reply: ClientReply) => sent.push(reply) } };
  const sink = new ReplySink();
  const feed = (e: number, s: number, replies: ClientReply[]) => {
    const tuple: Replies = { t: "replies", e, s, b: encodeReplies(replies) };
    sink.onTuple({ tuple } as unknown as Incoming, ctx as unknown as StageContext);
  };
  return { sent, feed };
}

const res = (text: string) => Buffer.from(text);

describe("reply sink", () => {
  it("passes a reply once per execution, drops other executors' copies and stale requests", () => {
    const { sent, feed } = sinkOf();
    feed(0, 1, [{ c: 7, r: 1, g: 0, res: res("a") }]);
    feed(1, 1, [{ c: 7, r: 1, g: 0, res: res("a") }]);
    feed(2, 2, [{ c: 7, r: 1, g: 0, res: res("a") }]); // a retry answered again: passed on
    feed(0, 3, [{ c: 7, r: 2, g: 0, res: res("b") }]);
    feed(1, 4, [{ c: 7, r: 1, g: 0, res: res("a") }]); // older than the last delivered: dropped
    assert.deepEqual(
      sent.map((r) => `${r.c}:${r.r}@${r.res.toString()}`),
      ["7:1@a", "7:1@a", "7:2@b"],
    );
  });

  it("passes every push (r = 0) once, even to a client that has had replies", () => {
    const { sent, feed } = sinkOf();
    feed(0, 1, [{ c: 7, r: 3, g: 1, res: res("reply") }]);
    feed(0, 2, [
      { c: 8, r: 1, g: 0, res: res("write") },
      { c: 7, r: 0, g: 1, res: res("push 1") },
    ]);
    feed(1, 2, [{ c: 7, r: 0, g: 1, res: res("push 1") }]); // another executor's copy
    feed(0, 3, [{ c: 7, r: 0, g: 1, res: res("push 2") }]);
    assert.deepEqual(
      sent.map((r) => Buffer.from(r.res).toString()),
      ["reply", "write", "push 1", "push 2"],
    );
  });
});
