/**
 * The demo topology `tara start --topology demo` runs: two sources count upwards, three
 * squarers (shuffle) square the numbers, three summers (fields grouping on the number) add
 * them up. Parameters: rate (tuples per second per source, default 1000).
 */
import type { Source, Stage, StageContext } from "../api/stage.js";
import { grouping, TopologyBuilder, type Topology } from "../api/topology.js";

interface NumberTuple {
  source: number;
  n: number;
}

const TICK_MS = 10;

class Counter implements Source {
  private n = 0;
  constructor(private readonly perTick: number) {}

  onStart(ctx: StageContext): void {
    ctx.timers.set("tick", TICK_MS);
  }

  onTimer(_name: string, ctx: StageContext): void {
    for (let i = 0; i < this.perTick; i++) {
      ctx.emit("numbers", { source: ctx.self.index, n: this.n++ } satisfies NumberTuple);
    }
    ctx.setStatus({ emitted: this.n });
    ctx.timers.set("tick", TICK_MS);
  }
}

class Squarer implements Stage {
  onTuple({ tuple }: { tuple: unknown }, ctx: StageContext): void {
    const { source, n } = tuple as NumberTuple;
    ctx.emit("squares", { source, n, square: n * n });
  }
}

class Summer implements Stage {
  private count = 0;
  private sum = 0;
  onTuple({ tuple }: { tuple: unknown }, ctx: StageContext): void {
    this.count++;
    this.sum += (tuple as { square: number }).square % 1_000_003;
    ctx.setStatus({ count: this.count, sum: this.sum });
  }
}

export function createTopology(params: Readonly<Record<string, string>>): Topology {
  const rate = Number(params.rate ?? 1000);
  const perTick = Math.max(1, Math.round((rate * TICK_MS) / 1000));
  return new TopologyBuilder("demo")
    .source("counter", { parallelism: 2, outputs: ["numbers"] }, () => new Counter(perTick))
    .stage(
      "squarer",
      {
        parallelism: 3,
        outputs: ["squares"],
        inputs: [{ stage: "counter", stream: "numbers", grouping: grouping.shuffle() }],
      },
      () => new Squarer(),
    )
    .stage(
      "summer",
      {
        parallelism: 3,
        inputs: [{ stage: "squarer", stream: "squares", grouping: grouping.fields("n") }],
      },
      () => new Summer(),
    )
    .build();
}
