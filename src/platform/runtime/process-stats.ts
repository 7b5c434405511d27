import type { ProcessStats } from "../wire/messages.js";

export function processStats(): ProcessStats {
  const cpu = process.cpuUsage();
  return { rssBytes: process.memoryUsage.rss(), cpuUserUs: cpu.user, cpuSystemUs: cpu.system };
}
