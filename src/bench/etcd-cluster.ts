/**
 * A real 3-member etcd 3 cluster on loopback, for `tara bench compare`, from Debian's
 * `etcd-server` package (`apt-get install -y etcd-server`; optional: the bench skips etcd
 * without it). Each member is an `etcd` child process with its own temp directory (data and
 * output; removed on stop), client and peer URLs on free loopback ports picked at run time; a
 * start that fails (a port taken meanwhile) is retried with fresh ones. Ready = every member's
 * /health says true (which needs a leader).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePorts } from "./zookeeper-ensemble.js";

const ETCD = process.env.ETCD ?? "etcd";
const MEMBERS = 3;
const READY_TIMEOUT_MS = 60_000;
const START_ATTEMPTS = 3;

export interface EtcdCluster {
  /** Client URLs, in member order ("http://127.0.0.1:p"). */
  readonly endpoints: string[];
  readonly members: { readonly name: string; readonly pid: number; readonly dir: string }[];
  /** The server's version, e.g. "3.4.23". */
  readonly version: string;
  /** Kills every member (SIGKILL), waits until each has exited, removes the directories. */
  stop(): Promise<void>;
}

/** Why etcd cannot be started here, or undefined when it can. */
export function etcdMissing(): string | undefined {
  const result = spawnSync(ETCD, ["--version"], { encoding: "utf8" });
  if (result.error !== undefined || result.status !== 0) {
    return "etcd-server not installed: skipped (`apt-get install -y etcd-server` for etcd 3)";
  }
  return undefined;
}

/** "3.4.23", from `etcd --version`'s "etcd Version: 3.4.23". */
function etcdVersion(): string {
  const out = spawnSync(ETCD, ["--version"], { encoding: "utf8" }).stdout;
  return /Version:\s*(\S+)/.exec(out)?.[1] ?? "unknown";
}

interface Member {
  readonly name: string;
  readonly dir: string;
  readonly clientUrl: string;
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

/** Members still running are killed if the bench exits early. */
const running = new Set<Member>();
process.on("exit", () => {
  for (const member of running) {
    member.child.kill("SIGKILL");
    rmSync(member.dir, { recursive: true, force: true });
  }
});

/** Starts a 3-member cluster and resolves once every member reports itself healthy. */
export async function startEtcdCluster(): Promise<EtcdCluster> {
  const missing = etcdMissing();
  if (missing !== undefined) throw new Error(missing);
  const version = etcdVersion();
  let lastError: unknown;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const members = await launch();
    try {
      await waitHealthy(members);
      return {
        endpoints: members.map((m) => m.clientUrl),
        members: members.map((m) => ({ name: m.name, pid: m.child.pid!, dir: m.dir })),
        version,
        stop: () => stopMembers(members),
      };
    } catch (error) {
      lastError = error;
      await stopMembers(members);
    }
  }
  throw lastError;
}

async function launch(): Promise<Member[]> {
  const ports = await freePorts(MEMBERS * 2);
  const peers = Array.from({ length: MEMBERS }, (_, i) => ({
    name: `etcd-${i + 1}`,
    clientUrl: `http://127.0.0.1:${ports[2 * i]!}`,
    peerUrl: `http://127.0.0.1:${ports[2 * i + 1]!}`,
  }));
  const initialCluster = peers.map((p) => `${p.name}=${p.peerUrl}`).join(",");
  const token = `tara-bench-${process.pid}-${Date.now()}`;
  const members: Member[] = [];
  for (const peer of peers) {
    const dir = mkdtempSync(join(tmpdir(), `tara-${peer.name}-`));
    const out = openSync(join(dir, "etcd.out"), "a");
    // Defaults otherwise: the WAL is fsynced before a write is acknowledged.
    const child = spawn(
      ETCD,
      [
        `--name=${peer.name}`,
        `--data-dir=${join(dir, "data")}`,
        `--listen-client-urls=${peer.clientUrl}`,
        `--advertise-client-urls=${peer.clientUrl}`,
        `--listen-peer-urls=${peer.peerUrl}`,
        `--initial-advertise-peer-urls=${peer.peerUrl}`,
        `--initial-cluster=${initialCluster}`,
        "--initial-cluster-state=new",
        `--initial-cluster-token=${token}`,
        "--log-level=warn",
      ],
      { stdio: ["ignore", out, out] },
    );
    closeSync(out);
    const exited = once(child, "exit").then(() => undefined);
    const member: Member = { name: peer.name, dir, clientUrl: peer.clientUrl, child, exited };
    running.add(member);
    members.push(member);
  }
  return members;
}

async function stopMembers(members: readonly Member[]): Promise<void> {
  await Promise.all(
    members.map(async (member) => {
      if (member.child.exitCode === null && member.child.signalCode === null) {
        member.child.kill("SIGKILL");
      }
      await member.exited;
      running.delete(member);
      rmSync(member.dir, { recursive: true, force: true });
    }),
  );
}

async function waitHealthy(members: readonly Member[]): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const pending = new Set(members);
  let last = "";
  while (pending.size > 0) {
    for (const member of [...pending]) {
      if (member.child.exitCode !== null || member.child.signalCode !== null) {
        throw new Error(`${member.name} exited before it was healthy:\n${tail(member)}`);
      }
      try {
        const response = await fetch(`${member.clientUrl}/health`, {
          signal: AbortSignal.timeout(2000),
        });
        last = await response.text();
        if (response.ok && (JSON.parse(last) as { health?: string }).health === "true") {
          pending.delete(member);
        }
      } catch (error) {
        last = (error as Error).message;
      }
    }
    if (pending.size === 0) return;
    if (Date.now() > deadline) {
      const member = [...pending][0]!;
      throw new Error(
        `${member.name} not healthy after ${READY_TIMEOUT_MS} ms (${last}):\n${tail(member)}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function tail(member: Member): string {
  const file = join(member.dir, "etcd.out");
  if (!existsSync(file)) return "";
  return readFileSync(file, "utf8").split("\n").slice(-30).join("\n");
}
