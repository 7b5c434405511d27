/**
 * The platform on real processes: a 3-container cluster started by `tara start`, real TCP,
 * real SIGKILL. The sequence topology (test/fixtures) numbers tuples per emitter so that the
 * checkers can tell loss (gaps) from reordering (never allowed).
 */
import assert from "node:assert/strict";
import { createConnection } from "node:net";
import { afterEach, describe, it } from "node:test";
import { encodeFrame, FrameDecoder, decodeBody } from "../../src/platform/wire/frames.js";
import { EMIT, TupleWriter } from "../../src/platform/wire/tuples.js";
import { pack } from "msgpackr";
import type { LinkState } from "../fixtures/sequence-topology.js";
import { fixture, isAlive, TestCluster, waitFor, type Status } from "./harness.js";

function links(status: Status, index: number): Record<string, LinkState> {
  const checker = status.instances.find((i) => i.stage === "checker" && i.index === index)!;
  return (checker.status.links ?? {}) as Record<string, LinkState>;
}

function received(status: Status, index: number): number {
  return Object.values(links(status, index)).reduce((sum, l) => sum + l.received, 0);
}

function assertNoReordering(status: Status): void {
  for (const index of [0, 1, 2]) {
    for (const [emitter, link] of Object.entries(links(status, index))) {
      assert.equal(link.outOfOrder, 0, `checker:${index} saw emitter ${emitter} out of order`);
    }
  }
}

const clusters: TestCluster[] = [];
async function start(params: string[]): Promise<TestCluster> {
  const args = ["--topology", fixture("sequence-topology")];
  for (const p of params) args.push("--param", p);
  const cluster = await TestCluster.start(args);
  clusters.push(cluster);
  return cluster;
}
afterEach(async () => {
  await Promise.all(clusters.splice(0).map((c) => c.stop()));
});

describe("platform on real processes", () => {
  it("delivers N tuples end to end, in order, on every link", async () => {
    const cluster = await start(["count=3000", "perTick=50"]);
    const status = await waitFor(
      "every checker to receive 3000 tuples from each emitter",
      async () => {
        const s = await cluster.status();
        const done = [0, 1, 2].every((c) =>
          [0, 1, 2].every((e) => links(s, c)[String(e)]?.received === 3000),
        );
        return done ? s : undefined;
      },
    );
    for (const c of [0, 1, 2]) {
      for (const e of [0, 1, 2]) {
        const link = links(status, c)[String(e)]!;
        assert.deepEqual(link, {
          incarnation: 1,
          received: 3000,
          last: 2999,
          gaps: 0,
          outOfOrder: 0,
        });
      }
    }
    assert.equal(await cluster.stop(), 0);
  });

  it("restarts a SIGKILLed instance with incarnation + 1 while the rest keeps running", async () => {
    const cluster = await start(["perTick=10"]);
    await waitFor("traffic", async () => received(await cluster.status(), 1) > 500);
    const before = await cluster.instance("checker", 1);
    assert.equal(before.incarnation, 1);
    const [killedPid] = await cluster.kill({ replica: "checker:1" });
    assert.equal(killedPid, before.pid);

    // While checker:1 is down and coming back, checkers 0 and 2 never stop receiving.
    const samples: number[][] = [];
    const back = await waitFor("checker:1 back with incarnation 2", async () => {
      const s = await cluster.status();
      samples.push([received(s, 0), received(s, 2)]);
      const c1 = s.instances.find((i) => i.stage === "checker" && i.index === 1)!;
      return c1.incarnation === 2 && c1.state === "running" && received(s, 1) > 0 ? c1 : undefined;
    });
    assert.notEqual(back.pid, killedPid);
    assert.equal(back.restarts, 1);
    assert.equal(isAlive(killedPid!), false);

    // Traffic through the restarted replica resumes from every emitter.
    const after = await waitFor("traffic to the new checker:1", async () => {
      const s = await cluster.status();
      const l = links(s, 1);
      return [0, 1, 2].every((e) => (l[String(e)]?.received ?? 0) > 100) ? s : undefined;
    });
    assertNoReordering(after);
    for (const index of [0, 2]) {
      for (const link of Object.values(links(after, index))) assert.equal(link.gaps, 0);
    }
    const first = samples[0]!;
    const last = samples[samples.length - 1]!;
    assert.ok(last[0]! > first[0]! && last[1]! > first[1]!, "checkers 0 and 2 kept receiving");
    for (const stage of ["emitter", "checker"]) {
      for (const index of [0, 2]) {
        assert.equal((await cluster.instance(stage, index)).incarnation, 1, `${stage}:${index}`);
      }
    }
    assert.equal(cluster.logLines("supervisor-1").filter((l) => l.event === "restarted").length, 1);
  });

  it("kills and restarts an instance whose event loop hangs", async () => {
    const cluster = await TestCluster.start([
      "--topology",
      fixture("sequence-topology"),
      "--param",
      "perTick=10",
      "--param",
      "hangAt=300",
      "--instance-timeout-ms",
      "1000",
    ]);
    clusters.push(cluster);
    const back = await waitFor("checker:1 back with incarnation 2", async () => {
      const s = await cluster.status();
      const c1 = s.instances.find((i) => i.stage === "checker" && i.index === 1)!;
      return c1.incarnation === 2 && c1.state === "running" && received(s, 1) > 100 ? s : undefined;
    });
    const kills = cluster.logLines("tmaster").filter((l) => l.event === "killed-hung");
    assert.deepEqual(
      kills.map((l) => l.instance),
      ["checker:1"],
    );
    assertNoReordering(back);
    for (const index of [0, 2]) {
      for (const link of Object.values(links(back, index))) assert.equal(link.gaps, 0);
    }
  });

  it("restarts a SIGKILLed stream manager and traffic resumes through it", async () => {
    const cluster = await start(["perTick=10"]);
    await waitFor("traffic", async () => received(await cluster.status(), 1) > 500);
    const stmgrBefore = (await cluster.status()).containers[1]!.stmgr!;
    process.kill(stmgrBefore.pid, "SIGKILL");
    await waitFor("a new stream manager in container 1", async () => {
      const c = (await cluster.status()).containers[1]!;
      return c.state === "up" && c.stmgr!.pid !== stmgrBefore.pid && c.stmgr!.restarts === 1;
    });
    const mark = received(await cluster.status(), 1);
    const resumed = await waitFor("traffic through container 1 again", async () => {
      const s = await cluster.status();
      return received(s, 1) > mark + 300 && s.instances.every((i) => i.state === "running")
        ? s
        : undefined;
    });
    assertNoReordering(resumed);
    // Instances outlive their stream manager: same processes, same incarnation.
    for (const i of resumed.instances) assert.equal(i.incarnation, 1, `${i.stage}:${i.index}`);
    assert.equal(isAlive(stmgrBefore.pid), false);
  });

  it("rejects links without the cluster secret; nothing they send reaches an instance", async () => {
    const cluster = await start(["perTick=10"]);
    await waitFor("traffic", async () => received(await cluster.status(), 0) > 100);
    const stmgr = (await cluster.status()).containers[0]!.stmgr!;
    // A well-formed batch: emitter:0 (task 0) to the three checkers (tasks 3, 4, 5).
    const writer = new TupleWriter(EMIT);
    writer.append(0, 0, [3, 4, 5], pack({ seq: 1e9, incarnation: 1 }));
    const bogus = writer.finish();

    const logBefore = cluster.logLines("stmgr-0").length;
    // 1. A tuple frame instead of a handshake.
    await rawSession(stmgr.port, () => [bogus]);
    // 2. A handshake with a wrong proof, then a registration and a tuple right behind it.
    await rawSession(stmgr.port, () => [
      encodeFrame({
        t: "hello",
        role: "instance",
        id: "emitter:0",
        nonce: Buffer.alloc(32, 1),
        proof: Buffer.alloc(32, 2),
      }),
      encodeFrame({ t: "register", task: 0, incarnation: 99, pid: 1 }),
      bogus,
    ]);
    const rejected = cluster
      .logLines("stmgr-0")
      .slice(logBefore)
      .filter((l) => l.event === "frame-rejected")
      .map((l) => l.code);
    assert.deepEqual(rejected, ["UNEXPECTED_FRAME", "AUTH_FAILED"]);

    // Legit tuples emitted after the rejections arrive; had the bogus seq 1e9 been delivered,
    // every later tuple of emitter 0 would count as out of order.
    const mark = received(await cluster.status(), 1);
    const s = await waitFor("more traffic", async () => {
      const st = await cluster.status();
      return received(st, 1) > mark + 300 ? st : undefined;
    });
    assertNoReordering(s);
    for (const index of [0, 1, 2]) assert.ok(links(s, index)["0"]!.last < 1e9);
    assert.equal((await cluster.status()).containers[0]!.stmgr!.pid, stmgr.pid, "stmgr stayed up");
  });

  it("SIGKILL of a whole container brings every process of it back", async () => {
    const cluster = await start(["perTick=10"]);
    await waitFor("traffic", async () => received(await cluster.status(), 2) > 100);
    const killed = await cluster.kill({ container: 2 });
    assert.equal(killed.length, 4, "supervisor, stream manager and two instances");
    const s = await waitFor("container 2 back", async () => {
      const st = await cluster.status();
      const back = st.instances
        .filter((i) => i.container === 2)
        .every((i) => i.state === "running" && i.incarnation === 2);
      return back && received(st, 2) > 0 ? st : undefined;
    });
    for (const pid of killed) assert.equal(isAlive(pid), false);
    assertNoReordering(s);
  });

  it("backpressure throttles a source that outruns its consumer: in-flight tuples stay bounded", async () => {
    const cluster = await TestCluster.start(["--topology", fixture("flood-topology")]);
    clusters.push(cluster);
    const flood = () => cluster.instance("flood", 0);
    const slow = () => cluster.instance("slow", 1);
    await waitFor("the source to be throttled", async () => (await flood()).throttled);
    const received = async () => Number((await slow()).status.received ?? 0);
    const start = await received();
    // Watch the in-flight count while the consumer works through 20,000 more tuples.
    let maxInFlight = 0;
    let maxStmgrRss = 0;
    await waitFor(
      "the consumer to make progress",
      async () => {
        const status = await cluster.status();
        const emitted = Number(status.instances.find((i) => i.stage === "flood")!.status.emitted);
        const got = Number(
          status.instances.find((i) => i.stage === "slow" && i.index === 1)!.status.received ?? 0,
        );
        maxInFlight = Math.max(maxInFlight, emitted - got);
        for (const c of status.containers) maxStmgrRss = Math.max(maxStmgrRss, c.rssBytes ?? 0);
        return got > start + 20_000;
      },
      60_000,
    );
    // 1 KiB tuples: a 4 MiB watermark per link and the socket buffers hold a few thousand;
    // an unthrottled source would be hundreds of thousands ahead by now.
    assert.ok(maxInFlight < 40_000, `in flight: ${maxInFlight}`);
    assert.ok(maxStmgrRss < 300 * 1024 * 1024, `stream manager RSS ${maxStmgrRss}`);
    const log = cluster.logLines("stmgr-1").map((l) => l.event);
    assert.ok(log.includes("backpressure-on"), "stream manager 1 turned backpressure on");
  });

  it("tara start then SIGTERM leaves no process behind", async () => {
    const cluster = await start(["perTick=10"]);
    const pids = await cluster.pids();
    assert.equal(pids.length, 1 + 3 + 3 + 6);
    assert.ok(pids.every(isAlive));
    assert.equal(await cluster.stop(), 0);
    await waitFor(
      "every cluster process to exit",
      () => pids.every((pid) => !isAlive(pid)),
      10_000,
    );
  });
});

/** Connects, reads the challenge, sends what `script` returns, waits for the server to close. */
function rawSession(port: number, script: () => Buffer[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(port, "127.0.0.1");
    const decoder = new FrameDecoder();
    let sent = false;
    socket.on("data", (chunk) => {
      for (const body of decoder.push(chunk)) {
        if (sent) continue;
        const challenge = decodeBody(body) as { t: string };
        if (challenge.t !== "challenge") return reject(new Error(`got ${challenge.t}`));
        sent = true;
        for (const frame of script()) socket.write(frame);
      }
    });
    socket.on("error", () => undefined);
    socket.on("close", () => resolve());
  });
}
