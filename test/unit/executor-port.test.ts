/**
 * The executor's side of external I/O: a stage's port is created with the replica's
 * environment, opened once the replica has started, fed by `ctx.external.send`, paused while a
 * source is throttled (inputs that were already on their way are held, not lost) and closed
 * at stop. The port here is a recording ExternalPort: what a real port does with sockets is
 * gateway.test.ts's concern.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import type { Source, Stage, StageContext, Tuple } from "../../src/platform/api/stage.js";
import {
  grouping,
  TopologyBuilder,
  type ExternalPort,
  type PortEnvironment,
  type PortFactory,
} from "../../src/platform/api/topology.js";
import { Executor } from "../../src/platform/instance/executor.js";
import { pack } from "../../src/platform/plan/physical-plan.js";
import { sub } from "./helpers/topologies.js";

const log = pino({ level: "silent" });

class RecordingPort implements ExternalPort {
  readonly calls: string[] = [];
  readonly sent: Tuple[] = [];
  deliver: ((input: Tuple) => void) | undefined;
  constructor(
    readonly index: number,
    readonly env: PortEnvironment,
  ) {}
  open(deliver: (input: Tuple) => void): void {
    this.calls.push("open");
    this.deliver = deliver;
  }
  send(output: Tuple): void {
    this.sent.push(output);
  }
  pause(): void {
    this.calls.push("pause");
  }
  resume(): void {
    this.calls.push("resume");
  }
  close(): void {
    this.calls.push("close");
  }
}

function world() {
  const ports: RecordingPort[] = [];
  const factory: PortFactory = (index, env) => {
    const port = new RecordingPort(index, env);
    ports.push(port);
    return port;
  };
  const events: string[] = [];
  const source = (): Source => ({
    onStart: () => void events.push("start"),
    onExternal: (input: Tuple, ctx: StageContext) => {
      events.push(`external:${String(input)}`);
      ctx.external.send(`reply to ${String(input)}`);
    },
  });
  const plain = (): Stage => ({
    onStart: (ctx) => ctx.external.send("into the void"),
    onTuple: () => undefined,
  });
  const plan = pack(
    new TopologyBuilder("ported")
      .source("src", { parallelism: 2, outputs: ["s"], port: factory }, source)
      .stage("out", { parallelism: 1, inputs: [sub("src", "s", grouping.all())] }, plain)
      .build(),
    { containers: 2 },
  );
  const env = {
    host: "127.0.0.1",
    runDir: "/nonexistent",
    secret: Buffer.alloc(32),
    container: 1,
    containers: 2,
    log,
  };
  const executor = (stage: string, index: number) =>
    new Executor({
      plan,
      self: { stage, index },
      incarnation: 1,
      log,
      send: () => true,
      portEnvironment: env,
    });
  return { ports, events, executor };
}

describe("executor with an external port", () => {
  it("creates the port with the replica's environment and opens it after onStart", () => {
    const { ports, events, executor } = world();
    const replica = executor("src", 1);
    assert.equal(ports.length, 1);
    const port = ports[0]!;
    assert.equal(port.index, 1);
    assert.deepEqual(
      [port.env.stage, port.env.parallelism, port.env.container, port.env.containers],
      ["src", 2, 1, 2],
    );
    assert.deepEqual(port.calls, [], "not opened before the replica starts");
    replica.start();
    replica.start();
    assert.deepEqual(port.calls, ["open"]);
    assert.deepEqual(events, ["start"]);

    port.deliver!("a");
    assert.deepEqual(events, ["start", "external:a"]);
    assert.deepEqual(port.sent, ["reply to a"], "ctx.external.send goes to the port");
    assert.equal(replica.tuplesIn, 1);
    replica.stop();
    assert.deepEqual(port.calls, ["open", "close"]);
  });

  it("pauses the port of a throttled source and holds what was already on its way", () => {
    const { ports, events, executor } = world();
    const replica = executor("src", 0);
    replica.start();
    const port = ports[0]!;
    replica.setThrottle("stmgr", true);
    replica.setThrottle("link", true);
    assert.deepEqual(port.calls, ["open", "pause"]);
    port.deliver!("x");
    port.deliver!("y");
    assert.deepEqual(events, ["start"], "a throttled source's handlers are not invoked");
    replica.setThrottle("stmgr", false);
    assert.deepEqual(port.calls, ["open", "pause"], "still throttled by its own link");
    replica.setThrottle("link", false);
    assert.deepEqual(port.calls, ["open", "pause", "resume"]);
    assert.deepEqual(events, ["start", "external:x", "external:y"]);
  });

  it("a source throttled before it starts opens its port paused", () => {
    const { ports, executor } = world();
    const replica = executor("src", 0);
    replica.setThrottle("stmgr", true);
    replica.start();
    assert.deepEqual(ports[0]!.calls, ["pause", "open"]);
  });

  it("a stage without a port has a no-op external", () => {
    const { ports, executor } = world();
    const replica = executor("out", 0);
    assert.doesNotThrow(() => replica.start());
    assert.equal(ports.length, 0);
    replica.stop();
  });
});
