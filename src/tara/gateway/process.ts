/**
 * Process shell of a container's gateway, run by the container's supervisor like the stream
 * manager. A TARA topology names a module with `TopologyBuilder.gateway(...)` that calls
 * `runGateway` with its front end (./main.ts: the native protocol's).
 *
 * It binds its client port (the cluster's base gateway port + container, or any free port if
 * the base is 0) and an internal port for the stage ports, and publishes both in
 * `<runDir>/gateway-<c>.json` before announcing readiness. A restarted gateway binds the ports
 * of that file again, so the addresses clients were given stay valid for the whole run.
 */
import type { Logger } from "pino";
import { announceReady, exitWithParent } from "../../platform/runtime/child.js";
import {
  logDirOf,
  readProcessConfig,
  runDirOf,
  type ClusterConfig,
} from "../../platform/runtime/config.js";
import {
  readGatewayFile,
  writeGatewayFile,
  type GatewayAddresses,
} from "../../platform/runtime/gateway-file.js";
import { createLogger } from "../../platform/runtime/log.js";
import { Gateway, type FrontEnd } from "./gateway.js";

/** How long a restarted gateway keeps trying to bind its published ports. */
const REBIND_DEADLINE_MS = 10_000;
const REBIND_RETRY_MS = 100;

/** What a front end learns of the process it runs in. */
export interface GatewayProcess {
  readonly container: number;
  readonly cluster: ClusterConfig;
  readonly log: Logger;
}

/** Runs this process as container `config.container`'s gateway until its parent stops it. */
export async function runGateway(createFrontEnd: (process: GatewayProcess) => FrontEnd) {
  const config = readProcessConfig();
  const { cluster } = config;
  const container = config.container!;
  const runDir = runDirOf(cluster);
  const log = createLogger(`gateway-${container}`, logDirOf(cluster), { container });
  const published = readGatewayFile(runDir, container);

  process.on("uncaughtException", (error) => {
    log.fatal({ event: "crashed", err: error }, "gateway crashed: exiting");
    process.exit(1);
  });

  /**
   * Binds the published ports (or the configured ones on a first start). The client port is
   * retried for a while (clients know it) and then given up on: the process exits and its
   * supervisor tries again. A taken internal port is replaced at once by a fresh one: ports
   * re-read the file whenever they reconnect.
   */
  async function bind(): Promise<Gateway> {
    const base = cluster.gatewayPort;
    const clientPort = published?.clientPort ?? (base === 0 ? 0 : base + container);
    let internalPort = published?.internalPort ?? 0;
    const deadline = Date.now() + REBIND_DEADLINE_MS;
    for (;;) {
      try {
        return await Gateway.start(
          {
            index: container,
            host: cluster.host,
            clientPort,
            internalPort,
            secret: Buffer.from(cluster.secret, "hex"),
            log,
          },
          createFrontEnd({ container, cluster, log }),
        );
      } catch (error) {
        const port = portInUse(error);
        if (port === undefined) throw error;
        if (internalPort !== 0 && port === internalPort) {
          log.warn({ event: "internal-port-moved", port }, "internal port taken: using another");
          internalPort = 0;
          continue;
        }
        if (Date.now() > deadline) throw error;
        log.warn({ event: "port-in-use", port }, "the client port is taken: retrying");
        await new Promise((resolve) => setTimeout(resolve, REBIND_RETRY_MS));
      }
    }
  }

  const gateway = await bind();
  const addresses: GatewayAddresses = {
    host: cluster.host,
    clientPort: gateway.clientPort,
    internalPort: gateway.internalPort,
  };
  if (
    !published ||
    published.host !== addresses.host ||
    published.clientPort !== addresses.clientPort ||
    published.internalPort !== addresses.internalPort
  ) {
    writeGatewayFile(runDir, container, addresses);
  }
  log.info(
    { event: "started", ...addresses, restarted: published !== undefined },
    "gateway started",
  );

  const statsTimer = setInterval(() => {
    log.debug({ event: "stats", ...gateway.stats });
  }, 10_000);
  statsTimer.unref();

  announceReady({ port: gateway.clientPort });
  exitWithParent(async () => {
    clearInterval(statsTimer);
    await gateway.close();
    log.info({ event: "stopped" }, "gateway stopped");
  });
}

/** The port an EADDRINUSE error is about, if that is what it is. */
function portInUse(error: unknown): number | undefined {
  const e = error as NodeJS.ErrnoException & { port?: number };
  return e?.code === "EADDRINUSE" ? e.port : undefined;
}
