// Progress of a bench run on stderr: a bar when stderr is a terminal, plain lines otherwise
// (logs and CI output stay readable: one line per tick, and ticks are per measured point).
import cliProgress from "cli-progress";

export interface Progress {
  /** Advances by `delta` (default 1) and shows `status` (e.g. "lpc-cs, 64 clients: 5,102 req/s"). */
  tick(delta?: number, status?: string): void;
  /** Prints a line without breaking the bar (above it on a terminal). */
  log(line: string): void;
  /** Removes the bar (idempotent); later logs are plain lines. */
  stop(): void;
}

function elapsed(began: number): string {
  return `${((performance.now() - began) / 1000).toFixed(1)}s`;
}

export function createProgress(label: string, total: number): Progress {
  const began = performance.now();
  let done = 0;
  let status = "";
  const plain = (line: string) => process.stderr.write(`[${label} ${elapsed(began)}] ${line}\n`);
  if (!process.stderr.isTTY) {
    return {
      tick(delta = 1, text) {
        done += delta;
        if (text !== undefined) status = text;
        plain(`${done}/${total}${status ? ` ${status}` : ""}`);
      },
      log: plain,
      stop() {},
    };
  }
  const multi = new cliProgress.MultiBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {value}/{total} | {duration_formatted} | {status}`,
      hideCursor: true,
      clearOnComplete: false,
      // Redraw every second even without ticks, so the elapsed time moves during long points.
      fps: 1,
      autopadding: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const bar = multi.create(total, 0, { status: "starting" });
  let stopped = false;
  return {
    tick(delta = 1, text) {
      if (stopped) return;
      bar.increment(delta, text === undefined ? {} : { status: text });
    },
    log(line) {
      if (stopped) plain(line);
      else {
        multi.log(`[${elapsed(began)}] ${line}\n`);
        // Logged lines are only written at the next redraw: draw now, or stop() may drop them.
        multi.update();
      }
    },
    stop() {
      if (stopped) return;
      stopped = true;
      multi.stop();
    },
  };
}
