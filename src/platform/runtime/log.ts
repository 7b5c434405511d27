import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { pino, type Logger } from "pino";

export type { Logger };

/**
 * One JSON line per event. Platform processes log to `<logDir>/<name>.log` synchronously:
 * lifecycle events are rare, and a line written just before a SIGKILL must not be lost.
 */
export function createLogger(name: string, logDir: string | undefined, base: object = {}): Logger {
  const level = process.env.TARA_LOG_LEVEL ?? "info";
  if (!logDir) return pino({ level, base: { proc: name, pid: process.pid, ...base } });
  mkdirSync(logDir, { recursive: true });
  const destination = pino.destination({
    dest: join(logDir, `${name}.log`),
    sync: true,
    append: true,
  });
  return pino({ level, base: { proc: name, pid: process.pid, ...base } }, destination);
}
