/**
 * Where a container's gateway listens, as it publishes it in the run directory
 * (`<runDir>/gateway-<c>.json`): clients connect to `clientPort`, stage ports to
 * `internalPort`. A restarted gateway binds the ports it published, so addresses stay valid for
 * the whole run; the file is replaced durably (old or new content after a crash, never a mix).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { writeFileDurable } from "./durable-file.js";

const port = z.number().int().min(1).max(65535);
export const gatewayAddressesSchema = z.object({
  host: z.string().min(1).max(255),
  clientPort: port,
  internalPort: port,
});
export type GatewayAddresses = z.infer<typeof gatewayAddressesSchema>;

export function gatewayFileOf(runDir: string, container: number): string {
  return join(runDir, `gateway-${container}.json`);
}

/** The published addresses of container `container`'s gateway; undefined if none (yet). */
export function readGatewayFile(runDir: string, container: number): GatewayAddresses | undefined {
  let text: string;
  try {
    text = readFileSync(gatewayFileOf(runDir, container), "utf8");
  } catch {
    return undefined;
  }
  try {
    const parsed = gatewayAddressesSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export function writeGatewayFile(
  runDir: string,
  container: number,
  addresses: GatewayAddresses,
): void {
  writeFileDurable(gatewayFileOf(runDir, container), JSON.stringify(addresses));
}

/** "host:port" of a client address; IPv6 hosts are bracketed. */
export function clientAddress(addresses: GatewayAddresses): string {
  const host = addresses.host.includes(":") ? `[${addresses.host}]` : addresses.host;
  return `${host}:${addresses.clientPort}`;
}
