/**
 * Parent/child plumbing shared by the launcher and the supervisors. Children are forked with
 * an IPC channel: they announce readiness on it, and they exit when it closes, so no process
 * outlives its parent (not even after a SIGKILL of the parent).
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { PROCESS_ENV, type ProcessConfig } from "./config.js";

export type ProcessKind = "tmaster" | "supervisor" | "stmgr" | "ckptmgr" | "instance" | "gateway";

/** Entry points of the platform's own processes; a gateway's module is the topology's. */
const entryPoints: Record<Exclude<ProcessKind, "gateway">, URL> = {
  tmaster: new URL("../tmaster/main.js", import.meta.url),
  supervisor: new URL("../supervisor/main.js", import.meta.url),
  stmgr: new URL("../stmgr/main.js", import.meta.url),
  ckptmgr: new URL("../ckptmgr/main.js", import.meta.url),
  instance: new URL("../instance/main.js", import.meta.url),
};

/**
 * Messages a child sends its parent over IPC: that it is ready; from a stream manager, the
 * tasks plan `version` places in its container (with the highest incarnation each had).
 */
export type ChildMessage =
  ReadyMessage | { t: "host"; version: number; tasks: { task: number; incarnation: number }[] };
export type ReadyMessage = { t: "ready"; port?: number; adminPort?: number };
/**
 * Messages a parent sends a child over IPC: to instances, where their stream manager now
 * listens; to a stream manager, where its container's checkpoint manager does, and which
 * tasks the supervisor runs, having acted on plan `version`.
 */
export type ParentMessage =
  | { t: "stmgr-port"; port: number }
  | { t: "ckptmgr-port"; port: number }
  | { t: "hosting"; version: number; tasks: number[] };

/** Forks a platform process; `module` (a file: href) is required for, and only for, a gateway. */
export function forkChild(kind: ProcessKind, config: ProcessConfig, module?: string): ChildProcess {
  const entry = kind === "gateway" ? module : entryPoints[kind].href;
  if (entry === undefined) throw new Error("a gateway process needs its module");
  return fork(fileURLToPath(entry), [kind], {
    env: { ...process.env, [PROCESS_ENV]: JSON.stringify(config) },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    serialization: "json",
  });
}

/** Resolves with the child's ready message, rejects if it exits first. */
export function whenReady(child: ChildProcess): Promise<ReadyMessage> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: ChildMessage) => {
      if (message?.t !== "ready") return;
      child.off("exit", onExit);
      child.off("message", onMessage);
      resolve(message);
    };
    const onExit = (code: number | null, signal: string | null) => {
      child.off("message", onMessage);
      reject(new Error(`child exited before ready (code ${code}, signal ${signal})`));
    };
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

/** In a child: announce readiness to the parent. */
export function announceReady(message: Omit<ReadyMessage, "t">): void {
  process.send?.({ t: "ready", ...message });
}

/** In a child: run `stop` and exit when the parent goes away or asks us to stop. */
export function exitWithParent(stop: () => void | Promise<void>): void {
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    try {
      await stop();
    } finally {
      process.exit(0);
    }
  };
  process.on("disconnect", shutdown);
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
}

/** Sends SIGTERM, then SIGKILL after `graceMs`; resolves when the child has exited. */
export function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/** A process that dies this soon after its start is in a crash loop: back off. */
const CRASH_LOOP_MS = 1000;
const BACKOFF_MAX_MS = 5000;

export interface SupervisionOptions {
  readonly log: Logger;
  /** Once true, a child that exits is not restarted. */
  readonly stopping: () => boolean;
  /** Called with every (re)started child. */
  readonly onStarted?: (child: ChildProcess) => void;
}

/**
 * Keeps a child process running: restarts it the moment it dies, or after a delay doubling
 * from 100 ms to 5 s while it keeps dying within a second of its start.
 */
export function supervise(
  name: string,
  start: () => ChildProcess,
  options: SupervisionOptions,
): void {
  let fastDeaths = 0;
  const launch = () => {
    if (options.stopping()) return;
    const startedAt = Date.now();
    const child = start();
    options.onStarted?.(child);
    child.once("exit", (code, signal) => {
      if (options.stopping()) return;
      fastDeaths = Date.now() - startedAt < CRASH_LOOP_MS ? fastDeaths + 1 : 0;
      const delay = fastDeaths <= 1 ? 0 : Math.min(BACKOFF_MAX_MS, 100 * 2 ** (fastDeaths - 2));
      options.log.warn(
        { event: "died", process: name, pid: child.pid, code, signal, restartInMs: delay },
        "process died",
      );
      setTimeout(launch, delay);
    });
  };
  launch();
}
