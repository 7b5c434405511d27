// Facts about the machine a bench ran on, recorded with every result: on a shared 2-core VM
// the load and the hypervisor's steal time explain much of the run-to-run spread.
import { readFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";

export interface CpuTimes {
  /** All jiffies of the "cpu" line of /proc/stat. */
  total: number;
  steal: number;
  idle: number;
}

export interface MachineFacts {
  nproc: number;
  cpuModel: string;
  node: string;
  platform: string;
  /** 1, 5 and 15 minute load averages. */
  loadAverage: number[];
  totalMemoryMiB: number;
  /** Share of CPU time stolen by the hypervisor since boot (null where /proc/stat is absent). */
  stealSinceBoot: number | null;
}

/** The aggregate "cpu" line of /proc/stat, or null off Linux. */
export function readCpuTimes(): CpuTimes | null {
  let text: string;
  try {
    text = readFileSync("/proc/stat", "utf8");
  } catch {
    return null;
  }
  const line = text.split("\n").find((l) => l.startsWith("cpu "));
  if (!line) return null;
  // user nice system idle iowait irq softirq steal guest guest_nice (guest is within user).
  const fields = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (fields.length < 8 || fields.some((n) => !Number.isFinite(n))) return null;
  return {
    total: fields.reduce((a, b) => a + b, 0),
    idle: (fields[3] ?? 0) + (fields[4] ?? 0),
    steal: fields[7] ?? 0,
  };
}

/** Steal and busy shares between two readings (null if either is missing or no time passed). */
export function cpuShares(
  before: CpuTimes | null,
  after: CpuTimes | null,
): { steal: number; busy: number } | null {
  if (!before || !after || after.total <= before.total) return null;
  const total = after.total - before.total;
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return {
    steal: round((after.steal - before.steal) / total),
    busy: round(1 - (after.idle - before.idle) / total),
  };
}

export function machineFacts(): MachineFacts {
  const times = readCpuTimes();
  return {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? "unknown",
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
    totalMemoryMiB: Math.round(totalmem() / 2 ** 20),
    stealSinceBoot:
      times && times.total > 0 ? Math.round((times.steal / times.total) * 1000) / 1000 : null,
  };
}
