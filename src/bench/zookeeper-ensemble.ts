/**
 * A real 3-server ZooKeeper 3.8 ensemble on loopback, for the differential tests and `tara bench
 * compare`, from Debian's `zookeeper` package (CI installs it with `apt-get install -y zookeeper`).
 *
 * Each server is a `java` child process running QuorumPeerMain with its own temp directory
 * (data, myid, zoo.cfg, log4j config and logs; removed on stop). The classpath is the one the
 * package's zkEnv.sh uses (`/usr/share/java/zookeeper.jar`, whose manifest Class-Path names
 * every dependency jar in /usr/share/java) plus the slf4j-log4j12 binding and log4j 1.2, so the
 * server logs to a file in its directory. Ports (client, quorum, election) are free ports picked
 * at run time; a start that fails (a port taken meanwhile, say) is retried with fresh ones.
 * Ready = every server answers the `srvr` four-letter word with Mode leader or follower.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync } from "node:fs";
import { rmSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const JAVA = process.env.JAVA ?? "java";
const JAVA_DIR = process.env.ZOOKEEPER_JAVA_DIR ?? "/usr/share/java";
/** zookeeper.jar's manifest brings its dependencies; the last two only make it log to a file. */
const JARS = ["zookeeper.jar", "zookeeper-jute.jar", "slf4j-log4j12.jar", "log4j-1.2.jar"];
const MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain";
const SERVERS = 3;
const READY_TIMEOUT_MS = 90_000;
const START_ATTEMPTS = 3;

export interface Ensemble {
  /** "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3". */
  readonly connectString: string;
  /** In server id order (myid 1, 2, 3); `pid` is the server's JVM. */
  readonly servers: { readonly port: number; readonly dir: string; readonly pid: number }[];
  /** The JVM options every server runs with. */
  readonly jvmOptions: readonly string[];
  /** Kills every server (SIGKILL), waits until each has exited, removes the directories. */
  stop(): Promise<void>;
}

/** Whether `java` runs (JAVA overrides the command). */
export function javaAvailable(): boolean {
  const result = spawnSync(JAVA, ["-version"], { stdio: "ignore" });
  return result.error === undefined && result.status === 0;
}

/** Why a ZooKeeper server cannot be started here, or undefined when it can. */
export function zookeeperMissing(): string | undefined {
  const install = "install Debian's ZooKeeper 3.8 with `apt-get install -y zookeeper` (CI does)";
  if (!javaAvailable()) {
    return `\`${JAVA} -version\` does not run: the real-ZooKeeper tests need Java; ${install}`;
  }
  const missing = JARS.filter((jar) => !existsSync(join(JAVA_DIR, jar)));
  if (missing.length > 0) {
    return `missing ${missing.map((jar) => join(JAVA_DIR, jar)).join(", ")}: ${install}`;
  }
  return undefined;
}

export interface EnsembleOptions {
  /**
   * Let the JVMs compile hot code with C2, as a production server does (for benchmarks). By
   * default they stop at C1 (`-XX:TieredStopAtLevel=1`), which starts faster: right for tests.
   */
  fullJit?: boolean;
}

/** Starts a 3-server ensemble and resolves once every server is a leader or a follower. */
export async function startEnsemble(options: EnsembleOptions = {}): Promise<Ensemble> {
  const missing = zookeeperMissing();
  if (missing !== undefined) throw new Error(missing);
  const jvmOptions = [
    "-Xmx256m",
    "-XX:+UseSerialGC",
    ...(options.fullJit ? [] : ["-XX:TieredStopAtLevel=1"]),
  ];
  let lastError: unknown;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const servers = await launch(jvmOptions);
    try {
      await waitReady(servers);
      return {
        connectString: servers.map((s) => `127.0.0.1:${s.clientPort}`).join(","),
        servers: servers.map((s) => ({ port: s.clientPort, dir: s.dir, pid: s.child.pid! })),
        jvmOptions,
        stop: () => stopServers(servers),
      };
    } catch (error) {
      lastError = error;
      await stopServers(servers);
    }
  }
  throw lastError;
}

interface ZkServerProcess {
  readonly id: number;
  readonly dir: string;
  readonly clientPort: number;
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

/** Servers still running are killed if the test process exits early. */
const running = new Set<ZkServerProcess>();
process.on("exit", () => {
  for (const server of running) {
    server.child.kill("SIGKILL");
    rmSync(server.dir, { recursive: true, force: true });
  }
});

async function launch(jvmOptions: readonly string[]): Promise<ZkServerProcess[]> {
  const ports = await freePorts(SERVERS * 3);
  const peers = Array.from({ length: SERVERS }, (_, i) => ({
    id: i + 1,
    clientPort: ports[3 * i]!,
    quorumPort: ports[3 * i + 1]!,
    electionPort: ports[3 * i + 2]!,
  }));
  const servers: ZkServerProcess[] = [];
  for (const peer of peers) {
    const dir = mkdtempSync(join(tmpdir(), `tara-zk${peer.id}-`));
    const dataDir = join(dir, "data");
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, "myid"), `${peer.id}\n`);
    const cfg = join(dir, "zoo.cfg");
    writeFileSync(
      cfg,
      [
        "tickTime=2000",
        "initLimit=5",
        "syncLimit=2",
        `dataDir=${dataDir}`,
        `clientPort=${peer.clientPort}`,
        "clientPortAddress=127.0.0.1",
        "4lw.commands.whitelist=*",
        "admin.enableServer=false",
        ...peers.map((p) => `server.${p.id}=127.0.0.1:${p.quorumPort}:${p.electionPort}`),
        "",
      ].join("\n"),
    );
    const confDir = join(dir, "conf");
    mkdirSync(confDir);
    const log4j = join(confDir, "log4j.properties");
    writeFileSync(
      log4j,
      [
        "log4j.rootLogger=INFO, FILE",
        "log4j.appender.FILE=org.apache.log4j.FileAppender",
        `log4j.appender.FILE.File=${join(dir, "zookeeper.log")}`,
        "log4j.appender.FILE.layout=org.apache.log4j.PatternLayout",
        "log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n",
        "",
      ].join("\n"),
    );
    const classpath = [confDir, ...JARS.map((jar) => join(JAVA_DIR, jar))].join(":");
    const out = openSync(join(dir, "zookeeper.out"), "a");
    const child = spawn(
      JAVA,
      [
        ...jvmOptions,
        "-Djava.net.preferIPv4Stack=true",
        "-Dzookeeper.extendedTypesEnabled=true",
        "-Dzookeeper.admin.enableServer=false",
        `-Dzookeeper.log.dir=${dir}`,
        `-Dlog4j.configuration=file:${log4j}`,
        "-cp",
        classpath,
        MAIN,
        cfg,
      ],
      { stdio: ["ignore", out, out] },
    );
    closeSync(out);
    const exited = once(child, "exit").then(() => undefined);
    const server: ZkServerProcess = {
      id: peer.id,
      dir,
      clientPort: peer.clientPort,
      child,
      exited,
    };
    running.add(server);
    servers.push(server);
  }
  return servers;
}

async function stopServers(servers: readonly ZkServerProcess[]): Promise<void> {
  await Promise.all(
    servers.map(async (server) => {
      if (server.child.exitCode === null && server.child.signalCode === null) {
        server.child.kill("SIGKILL");
      }
      await server.exited;
      running.delete(server);
      rmSync(server.dir, { recursive: true, force: true });
    }),
  );
}

/** Polls `srvr` on every server until each reports leader or follower, with a deadline. */
async function waitReady(servers: readonly ZkServerProcess[]): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const pending = new Set(servers);
  const last = new Map<ZkServerProcess, string>();
  while (pending.size > 0) {
    for (const server of [...pending]) {
      if (server.child.exitCode !== null || server.child.signalCode !== null) {
        throw new Error(
          `ZooKeeper server ${server.id} exited (${server.child.exitCode ?? server.child.signalCode}) ` +
            `before it was ready:\n${tail(server)}`,
        );
      }
      const answer = await fourLetterWord(server.clientPort, "srvr", 2000).catch(
        (error: Error) => error.message,
      );
      last.set(server, answer);
      if (/^Mode: (leader|follower)$/m.test(answer)) pending.delete(server);
    }
    if (pending.size === 0) return;
    if (Date.now() > deadline) {
      const server = [...pending][0]!;
      throw new Error(
        `ZooKeeper server ${server.id} not serving after ${READY_TIMEOUT_MS} ms ` +
          `(srvr: ${JSON.stringify(last.get(server))}):\n${tail(server)}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The last lines of a server's output and log, for error messages. */
function tail(server: ZkServerProcess): string {
  const lines: string[] = [];
  for (const name of ["zookeeper.out", "zookeeper.log"]) {
    const file = join(server.dir, name);
    if (!existsSync(file)) continue;
    lines.push(`--- ${file}`, ...readFileSync(file, "utf8").split("\n").slice(-30));
  }
  return lines.join("\n");
}

/** Sends a four-letter word and resolves with everything the server writes before closing. */
export function fourLetterWord(port: number, word: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port });
    const chunks: Buffer[] = [];
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`${word}: no answer`)));
    socket.once("connect", () => socket.end(word));
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.once("error", reject);
    socket.once("close", () => resolve(Buffer.concat(chunks).toString("utf8")));
  });
}

/** Distinct free loopback ports: all held open at once, then released. */
export async function freePorts(count: number): Promise<number[]> {
  const probes: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const probe = createServer();
      probes.push(probe);
      probe.listen(0, "127.0.0.1");
      await once(probe, "listening");
    }
    return probes.map((probe) => {
      const address = probe.address();
      if (address === null || typeof address === "string") throw new Error("no port");
      return address.port;
    });
  } finally {
    await Promise.all(probes.map((probe) => new Promise((resolve) => probe.close(resolve))));
  }
}
