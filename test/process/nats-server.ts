/**
 * A real nats-server with JetStream for the tests (Debian's package; CI installs it), on a free
 * loopback port with its store in a temp directory.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A real nats-server with JetStream on a free loopback port, its store in a temp directory. */
export class NatsServer {
  private process: ChildProcess | undefined;

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly configFile: string,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async start(): Promise<NatsServer> {
    const version = spawnSync("nats-server", ["--version"], { encoding: "utf8" });
    if (version.error) {
      throw new Error(
        "nats-server is not installed (needed by the NATS checkpoint store tests): install it, " +
          "e.g. `apt-get install nats-server` (.ci/run does)",
      );
    }
    const dir = mkdtempSync(join(tmpdir(), "tara-nats-"));
    const port = await freePort();
    const configFile = join(dir, "nats.conf");
    writeFileSync(configFile, natsConfig(version.stdout, port, join(dir, "jetstream")));
    const server = new NatsServer(dir, port, configFile);
    await server.restart();
    return server;
  }

  /** Starts (again) on the same port and store directory; resolves once it serves. */
  async restart(): Promise<void> {
    const child = spawn("nats-server", ["-c", this.configFile], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.process = child;
    running.add(child);
    child.once("exit", () => running.delete(child));
    let log = "";
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`nats-server not ready in 20 s:\n${log}`)),
        20_000,
      );
      child.stderr!.on("data", (chunk: Buffer) => {
        log += chunk.toString();
        if (log.includes("Server is ready")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`nats-server exited (code ${code}) before it was ready:\n${log}`));
      });
    });
    await ready;
  }

  signal(signal: NodeJS.Signals): void {
    this.process?.kill(signal);
  }

  /** Kills the server (SIGKILL: a crash, not a clean shutdown) and waits until it is gone. */
  async stop(): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGKILL");
    await exited;
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * nats-server 2.10 and later can fsync every write before acknowledging it; 2.9.x has no such
 * option (it writes each acknowledged message to the block file, and fsyncs every 2 minutes).
 */
function natsConfig(versionOutput: string, port: number, storeDir: string): string {
  const [major = 0, minor = 0] = (/v?(\d+)\.(\d+)/.exec(versionOutput) ?? []).slice(1).map(Number);
  const syncAlways = major > 2 || (major === 2 && minor >= 10);
  return [
    `listen: 127.0.0.1:${port}`,
    "jetstream {",
    `  store_dir: ${JSON.stringify(storeDir)}`,
    ...(syncAlways ? ["  sync_interval: always"] : []),
    "}",
    "",
  ].join("\n");
}

async function freePort(): Promise<number> {
  const probe = createServer();
  probe.listen(0, "127.0.0.1");
  await once(probe, "listening");
  const address = probe.address();
  probe.close();
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/** Servers still running are killed if the test process exits early. */
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});
