/**
 * Starts a real cluster with the real CLI (`tara start`) in a fresh data directory and talks
 * to its admin surface. Waiting is always for a condition, polled, with a deadline.
 */
import assert from "node:assert/strict";
import { execFile, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { ClusterFile } from "../../src/platform/runtime/launcher.js";
import type { ContainerStatus, InstanceStatus } from "../../src/platform/tmaster/plan-tracker.js";

const execFileAsync = promisify(execFile);
const root = fileURLToPath(new URL("../../../", import.meta.url));
export const taraBin = join(root, "bin", "tara.js");

/** Runs `tara <args>` to its end and asserts it succeeded; its output and its JSON lines. */
export function runTara(
  args: readonly string[],
  options: { cwd?: string; timeoutMs: number },
): { stdout: string; stderr: string; lines: Record<string, unknown>[] } {
  const run = spawnSync(process.execPath, [taraBin, ...args], {
    encoding: "utf8",
    timeout: options.timeoutMs,
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  });
  assert.equal(run.status, 0, run.stderr);
  const lines = run.stdout
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  return { stdout: run.stdout, stderr: run.stderr, lines };
}
export const fixture = (name: string) =>
  fileURLToPath(new URL(`../fixtures/${name}.js`, import.meta.url));

export interface Status {
  topology: string;
  containers: ContainerStatus[];
  instances: InstanceStatus[];
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 45_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${lastError ? `: ${lastError}` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Launchers still running; killed if the test process exits early (their children follow). */
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export class TestCluster {
  private constructor(
    readonly process: ChildProcess,
    readonly dataDir: string,
    readonly info: ClusterFile,
    readonly exited: Promise<number | null>,
  ) {}

  static async start(args: string[]): Promise<TestCluster> {
    const dataDir = mkdtempSync(join(tmpdir(), "tara-test-"));
    const child = spawn(
      process.execPath,
      [taraBin, "start", "--data-dir", dataDir, "--admin-port", "0", ...args],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    running.add(child);
    const exited = new Promise<number | null>((resolve) =>
      child.once("exit", (code) => {
        running.delete(child);
        resolve(code);
      }),
    );
    const clusterFile = join(dataDir, "cluster.json");
    const info = await waitFor("the cluster file", () =>
      existsSync(clusterFile)
        ? (JSON.parse(readFileSync(clusterFile, "utf8")) as ClusterFile)
        : undefined,
    );
    const cluster = new TestCluster(child, dataDir, info, exited);
    await waitFor("every instance running", async () =>
      (await cluster.status()).instances.every((i) => i.state === "running"),
    );
    return cluster;
  }

  async status(): Promise<Status> {
    const response = await fetch(`${this.info.adminUrl}/status`, {
      signal: AbortSignal.timeout(5000),
    });
    return (await response.json()) as Status;
  }

  async instance(stage: string, index: number): Promise<InstanceStatus> {
    const found = (await this.status()).instances.find(
      (i) => i.stage === stage && i.index === index,
    );
    if (!found) throw new Error(`no instance ${stage}:${index}`);
    return found;
  }

  async kill(target: { replica: string } | { container: number }): Promise<number[]> {
    const response = await fetch(`${this.info.adminUrl}/kill`, {
      method: "POST",
      headers: { authorization: `Bearer ${this.info.secret}` },
      signal: AbortSignal.timeout(5000),
      body: JSON.stringify(target),
    });
    const body = (await response.json()) as { killed: number[]; error?: string };
    if (!response.ok) throw new Error(body.error);
    return body.killed;
  }

  /** `tara move <replica> --to <container>`, run as a user would; its output. */
  async move(replica: string, to: number): Promise<string> {
    const { stdout } = await execFileAsync(
      process.execPath,
      [taraBin, "move", replica, "--to", String(to), "--data-dir", this.dataDir],
      { timeout: 10_000 },
    );
    return stdout;
  }

  /** Every pid the cluster reports: tmaster, supervisors, stream managers, instances. */
  async pids(): Promise<number[]> {
    const status = (await this.status()) as Status & { tmaster: { pid: number } };
    const pids = [status.tmaster.pid];
    for (const c of status.containers) {
      if (c.supervisorPid) pids.push(c.supervisorPid);
      if (c.stmgr) pids.push(c.stmgr.pid);
    }
    for (const i of status.instances) if (i.pid) pids.push(i.pid);
    return pids;
  }

  logLines(name: string): Record<string, unknown>[] {
    const path = join(this.dataDir, "logs", `${name}.log`);
    if (!existsSync(path)) return [];
    return readFileSync(path, "utf8")
      .split("\n")
      .filter((line) => line.length > 0)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  async stop(): Promise<number | null> {
    if (this.process.exitCode === null) this.process.kill("SIGTERM");
    return this.exited;
  }
}

/** Whether the process runs: a zombie (dead, not yet reaped by its new parent) does not. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces, so split after ")".
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}
