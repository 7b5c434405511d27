/**
 * The baseline of `tara bench platform`: plain Node-to-Node TCP on loopback, no platform.
 * Forked by the bench (node:child_process fork) in one of four roles, talking to it over IPC:
 *
 *   sink                      listens, counts length-prefixed records; answers {t:"sample"}
 *   blast <port> <size> <n>   connects and writes records of <size> bytes, <n> per write
 *   echo                      listens, writes every complete record straight back
 *   ping <port> <size> <warmupMs>
 *                             keeps one record in flight to an echo server and records the
 *                             round-trip times after a warm-up; answers {t:"result"}
 *
 * Each role announces {t:"ready", port?} and exits when the parent goes away.
 */
import { latencyHistogram, summarize, type LatencySummary } from "./latency.js";
import { createConnection, createServer, type Socket } from "node:net";
import { pathToFileURL } from "node:url";

const HOST = "127.0.0.1";
const HEADER_BYTES = 4;

export type RawRequest = { t: "sample" } | { t: "result" };
export type RawReply =
  | { t: "ready"; port?: number }
  | { t: "sample"; records: number; bytes: number; atMs: number; cpuUs: number }
  | (LatencySummary & { t: "result"; cpuUs: number });

function now(): number {
  return performance.timeOrigin + performance.now();
}

function cpuUs(): number {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
}

function send(message: RawReply): void {
  process.send?.(message);
}

/** A minimal length-prefix parser: calls `onRecord` for every complete record body. */
function recordParser(onRecord: (buffer: Buffer, start: number, length: number) => void) {
  let rest: Buffer | undefined;
  return (chunk: Buffer): void => {
    const buffer = rest ? Buffer.concat([rest, chunk]) : chunk;
    rest = undefined;
    let offset = 0;
    while (buffer.length - offset >= HEADER_BYTES) {
      const length = buffer.readUInt32BE(offset);
      if (buffer.length - offset - HEADER_BYTES < length) break;
      onRecord(buffer, offset + HEADER_BYTES, length);
      offset += HEADER_BYTES + length;
    }
    if (offset < buffer.length) rest = Buffer.from(buffer.subarray(offset));
  };
}

function listen(onSocket: (socket: Socket) => void): void {
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    onSocket(socket);
  });
  server.listen(0, HOST, () => {
    const address = server.address();
    send({ t: "ready", port: typeof address === "object" && address ? address.port : 0 });
  });
}

function sink(): void {
  let records = 0;
  let bytes = 0;
  listen((socket) => {
    socket.on(
      "data",
      recordParser((_buffer, _start, length) => {
        records++;
        bytes += length;
      }),
    );
  });
  process.on("message", (message: RawRequest) => {
    if (message.t === "sample") send({ t: "sample", records, bytes, atMs: now(), cpuUs: cpuUs() });
  });
}

function blast(port: number, size: number, perWrite: number): void {
  const payload = Buffer.alloc(size, 0x5a);
  const socket = createConnection(port, HOST);
  socket.setNoDelay(true);
  const pump = (): void => {
    // Yield to the event loop now and then so that IPC and signals get through.
    for (let writes = 0; writes < 64; writes++) {
      const batch = Buffer.allocUnsafe((HEADER_BYTES + size) * perWrite);
      for (let i = 0, offset = 0; i < perWrite; i++) {
        batch.writeUInt32BE(size, offset);
        payload.copy(batch, offset + HEADER_BYTES);
        offset += HEADER_BYTES + size;
      }
      if (!socket.write(batch)) {
        socket.once("drain", pump);
        return;
      }
    }
    setImmediate(pump);
  };
  socket.once("connect", () => {
    send({ t: "ready" });
    pump();
  });
  socket.on("error", () => process.exit(1));
  process.on("message", (message: RawRequest) => {
    if (message.t === "sample")
      send({ t: "sample", records: 0, bytes: 0, atMs: now(), cpuUs: cpuUs() });
  });
}

function echo(): void {
  listen((socket) => {
    socket.on(
      "data",
      recordParser((buffer, start, length) => {
        const record = Buffer.allocUnsafe(HEADER_BYTES + length);
        record.writeUInt32BE(length, 0);
        buffer.copy(record, HEADER_BYTES, start, start + length);
        socket.write(record);
      }),
    );
  });
}

function ping(port: number, size: number, warmupMs: number): void {
  const histogram = latencyHistogram();
  const record = Buffer.alloc(HEADER_BYTES + size, 0x5a);
  record.writeUInt32BE(size, 0);
  let seq = 0;
  let firstPongAtMs: number | undefined;
  const socket = createConnection(port, HOST);
  socket.setNoDelay(true);
  const sendPing = (): void => {
    seq++;
    const out = Buffer.from(record);
    out.writeDoubleLE(now(), HEADER_BYTES);
    out.writeDoubleLE(seq, HEADER_BYTES + 8);
    socket.write(out);
  };
  socket.on(
    "data",
    recordParser((buffer, start) => {
      if (buffer.readDoubleLE(start + 8) !== seq) return;
      const at = now();
      const rttMs = at - buffer.readDoubleLE(start);
      firstPongAtMs ??= at;
      if (at - firstPongAtMs >= warmupMs) {
        histogram.recordValue(Math.max(1, Math.round(rttMs * 1000)));
      }
      sendPing();
    }),
  );
  socket.once("connect", () => {
    send({ t: "ready" });
    sendPing();
  });
  socket.on("error", () => process.exit(1));
  process.on("message", (message: RawRequest) => {
    if (message.t !== "result") return;
    send({ t: "result", ...summarize(histogram), cpuUs: cpuUs() });
  });
}

// Run a role only when started as a script, not when imported for its types.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.on("disconnect", () => process.exit(0));
  const [role, ...args] = process.argv.slice(2);
  const n = args.map(Number);
  switch (role) {
    case "sink":
      sink();
      break;
    case "blast":
      blast(n[0]!, n[1]!, n[2]!);
      break;
    case "echo":
      echo();
      break;
    case "ping":
      ping(n[0]!, n[1]!, n[2]!);
      break;
    default:
      console.error(`raw-tcp: unknown role ${role}`);
      process.exit(2);
  }
}
