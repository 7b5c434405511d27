/**
 * The topologies of `tara bench platform`, one module for both kinds of case (param `mode`).
 *
 * mode=throughput: a `blaster` source (1 replica, container 0) emits `batch` tuples of `size`
 * bytes per timer tick with emitDirect to `sink` replica `target`, re-arming its timer with no
 * delay; the platform holds its timer while it is throttled, so it blasts exactly as fast as the
 * stream managers drain. `sink` (2 replicas: replica i lives in container i mod 2) counts tuples
 * and bytes and reports {received, bytes, firstAtMs, lastAtMs} through setStatus.
 *
 * mode=latency: a `pinger` (1 replica, container 0) keeps one ping of `size` bytes in flight to
 * `ponger` replica `target`, which emits it straight back (direct grouping on both streams).
 * The pinger records round-trip times in an HDR histogram once `warmupMs` have passed since
 * the first pong, and reports {count, p50Ms, p99Ms, ...} through setStatus.
 *
 * Parameters: mode (throughput|latency), target (replica index, default 1), size (bytes,
 * default 100), batch (tuples per tick, default 1000), warmupMs (default 1000), gapMs (pause
 * between pings, default 0), timeoutMs (a ping lost that long is resent, default 1000).
 */
import { latencyHistogram, summarize } from "./latency.js";
import type { Incoming, Source, Stage, StageContext } from "../platform/api/stage.js";
import {
  grouping,
  TopologyBuilder,
  TopologyError,
  type Topology,
} from "../platform/api/topology.js";

/** Containers every bench cluster runs with; replica i of a stage lives in container i mod 2. */
export const BENCH_CONTAINERS = 2;

class Blaster implements Source {
  private emitted = 0;
  private readonly payload: Buffer;

  constructor(
    private readonly target: number,
    size: number,
    private readonly batch: number,
  ) {
    this.payload = Buffer.alloc(size, 0x5a);
  }

  onStart(ctx: StageContext): void {
    ctx.timers.set("tick", 0);
  }

  onTimer(_name: string, ctx: StageContext): void {
    for (let i = 0; i < this.batch; i++) ctx.emitDirect("data", this.target, this.payload);
    this.emitted += this.batch;
    ctx.setStatus({ emitted: this.emitted });
    ctx.timers.set("tick", 0);
  }
}

class Sink implements Stage {
  private received = 0;
  private bytes = 0;
  private firstAtMs = 0;

  onTuple({ tuple }: Incoming, ctx: StageContext): void {
    if (this.received === 0) this.firstAtMs = ctx.clock.now();
    this.received++;
    this.bytes += (tuple as Uint8Array).length;
    // Reading the clock per tuple would cost more than routing it: report every 256.
    if (this.received % 256 !== 0) return;
    const now = ctx.clock.now();
    ctx.setStatus({
      received: this.received,
      bytes: this.bytes,
      firstAtMs: this.firstAtMs,
      lastAtMs: now,
    });
  }
}

const REPORT_MS = 100;

class Pinger implements Stage {
  private readonly histogram = latencyHistogram();
  private readonly payload: Buffer;
  private seq = 0;
  private lost = 0;
  private firstPongAtMs: number | undefined;

  constructor(
    private readonly target: number,
    size: number,
    private readonly warmupMs: number,
    private readonly gapMs: number,
    private readonly timeoutMs: number,
  ) {
    if (size < 16) throw new TopologyError("latency bench: size must be at least 16 bytes");
    this.payload = Buffer.alloc(size, 0x5a);
  }

  onStart(ctx: StageContext): void {
    ctx.timers.set("ping", 0);
    ctx.timers.set("report", REPORT_MS);
  }

  onTimer(name: string, ctx: StageContext): void {
    switch (name) {
      case "ping":
        this.ping(ctx);
        return;
      case "timeout":
        this.lost++;
        this.ping(ctx);
        return;
      case "report":
        this.report(ctx);
        ctx.timers.set("report", REPORT_MS);
        return;
    }
  }

  onTuple({ tuple }: Incoming, ctx: StageContext): void {
    const pong = tuple as Buffer;
    if (pong.readDoubleLE(8) !== this.seq) return; // a pong that already timed out
    const now = ctx.clock.now();
    const rttMs = now - pong.readDoubleLE(0);
    ctx.timers.cancel("timeout");
    this.firstPongAtMs ??= now;
    if (now - this.firstPongAtMs >= this.warmupMs) {
      this.histogram.recordValue(Math.max(1, Math.round(rttMs * 1000)));
    }
    if (this.gapMs > 0) ctx.timers.set("ping", this.gapMs);
    else this.ping(ctx);
  }

  private ping(ctx: StageContext): void {
    this.seq++;
    this.payload.writeDoubleLE(ctx.clock.now(), 0);
    this.payload.writeDoubleLE(this.seq, 8);
    ctx.emitDirect("ping", this.target, this.payload);
    ctx.timers.set("timeout", this.timeoutMs);
  }

  private report(ctx: StageContext): void {
    ctx.setStatus({
      warm:
        this.firstPongAtMs !== undefined && ctx.clock.now() - this.firstPongAtMs >= this.warmupMs,
      lost: this.lost,
      ...summarize(this.histogram),
    });
  }
}

class Ponger implements Stage {
  onTuple({ tuple, source }: Incoming, ctx: StageContext): void {
    ctx.emitDirect("pong", source.index, tuple);
  }
}

function number(
  params: Readonly<Record<string, string>>,
  key: string,
  fallback: number,
  min: number,
): number {
  const text = params[key];
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) {
    throw new TopologyError(`bench topology: ${key} must be an integer >= ${min}, got ${text}`);
  }
  return value;
}

export function createTopology(params: Readonly<Record<string, string>>): Topology {
  const mode = params.mode ?? "throughput";
  const target = number(params, "target", 1, 0);
  const size = number(params, "size", 100, 1);
  if (target >= BENCH_CONTAINERS) {
    throw new TopologyError(`bench topology: target must be below ${BENCH_CONTAINERS}`);
  }
  const replicas = { parallelism: BENCH_CONTAINERS };
  if (mode === "throughput") {
    const batch = number(params, "batch", 1000, 1);
    return new TopologyBuilder("bench-throughput")
      .source(
        "blaster",
        { parallelism: 1, outputs: ["data"] },
        () => new Blaster(target, size, batch),
      )
      .stage(
        "sink",
        {
          ...replicas,
          inputs: [{ stage: "blaster", stream: "data", grouping: grouping.direct() }],
        },
        () => new Sink(),
      )
      .build();
  }
  if (mode === "latency") {
    const warmupMs = number(params, "warmupMs", 1000, 0);
    const gapMs = number(params, "gapMs", 0, 0);
    const timeoutMs = number(params, "timeoutMs", 1000, 1);
    return new TopologyBuilder("bench-latency")
      .stage(
        "pinger",
        {
          parallelism: 1,
          outputs: ["ping"],
          inputs: [{ stage: "ponger", stream: "pong", grouping: grouping.direct() }],
        },
        () => new Pinger(target, size, warmupMs, gapMs, timeoutMs),
      )
      .stage(
        "ponger",
        {
          ...replicas,
          outputs: ["pong"],
          inputs: [{ stage: "pinger", stream: "ping", grouping: grouping.direct() }],
        },
        () => new Ponger(),
      )
      .build();
  }
  throw new TopologyError(`bench topology: mode must be throughput or latency, got ${mode}`);
}
