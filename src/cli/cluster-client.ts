/** How the CLI finds and talks to a running cluster: its cluster file in the data directory. */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { CLUSTER_FILE, type ClusterFile } from "../platform/runtime/launcher.js";

export function readClusterFile(dataDir: string): ClusterFile {
  const path = join(resolve(dataDir), CLUSTER_FILE);
  try {
    return JSON.parse(readFileSync(path, "utf8")) as ClusterFile;
  } catch {
    throw new Error(`no running cluster found (${path} is missing): start one with "tara start"`);
  }
}

export async function adminRequest(
  cluster: ClusterFile,
  method: "GET" | "POST",
  path: string,
  body?: unknown,
): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(cluster.adminUrl + path, {
      method,
      headers: { authorization: `Bearer ${cluster.secret}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new Error(
      `cannot reach the topology manager at ${cluster.adminUrl}: ${(error as Error).message}`,
    );
  }
  const result = (await response.json()) as { error?: string };
  if (!response.ok) throw new Error(result.error ?? `HTTP ${response.status}`);
  return result;
}
