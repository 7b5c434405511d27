/**
 * Checkpoint manager of one container (LPC-CM, as Heron's ckptmgr): the only process of the
 * container that touches the checkpoint store for its LPC-CM stages. Its stream manager
 * connects to it and relays the replicas' checkpoint requests; it writes, loads and prunes
 * (service.ts) and answers along the same path. Only this container's stream manager may
 * connect; anything else, or any bad frame, closes that connection with a logged reason.
 */
import { announceReady, exitWithParent } from "../runtime/child.js";
import { openStore } from "../checkpoint/store/open-store.js";
import { logDirOf, readProcessConfig, storeUrlOf } from "../runtime/config.js";
import { createLogger } from "../runtime/log.js";
import { listen } from "../transport/tcp.js";
import type { Connection } from "../wire/connection.js";
import { WireError } from "../wire/errors.js";
import {
  ckptLoadSchema,
  ckptPartSchema,
  ckptPruneSchema,
  ckptPutSchema,
  messageParser,
  type CkptRequest,
} from "../wire/messages.js";
import { CheckpointService } from "./service.js";

const config = readProcessConfig();
const { cluster } = config;
const container = config.container!;
const log = createLogger(`ckptmgr-${container}`, logDirOf(cluster), { container });
const secret = Buffer.from(cluster.secret, "hex");

const store = await openStore(storeUrlOf(cluster)).catch((error: Error) => {
  // The supervisor restarts us (with backoff); meanwhile the stream manager answers errors.
  log.fatal({ event: "store-unavailable", reason: error.message }, "cannot open the store");
  process.exit(1);
});
const service = new CheckpointService(store, log);
/** The stream manager's connection; a new one (its restart) replaces it. */
let current: Connection<CkptRequest> | undefined;

const { server, port } = await listen<CkptRequest>(
  { host: cluster.host, port: 0 },
  {
    secret,
    log,
    parse: messageParser([], [ckptPutSchema, ckptPartSchema, ckptLoadSchema, ckptPruneSchema]),
  },
  (connection) => {
    connection.start({
      onReady: (peer) => {
        if (peer.role === "stmgr" && peer.id === String(container)) return accept(connection);
        log.warn(
          { event: "link-refused", role: peer.role, id: peer.id, remote: connection.remote },
          "only this container's stream manager may connect",
        );
        connection.close(`${peer.role} ${peer.id} may not connect to a checkpoint manager`);
      },
      onMessage: () => connection.close("message before the peer was known"),
    });
  },
);

function accept(connection: Connection<CkptRequest>): void {
  current?.close("replaced by a new stream manager connection");
  current = connection;
  const session = service.session((message) => connection.send(message));
  log.info({ event: "stmgr-connected", remote: connection.remote }, "stream manager connected");
  connection.start({
    onMessage: (message) => {
      try {
        session.handle(message);
      } catch (error) {
        const code = error instanceof WireError ? error.code : "INTERNAL";
        const reason = (error as Error).message;
        log.warn({ event: "frame-rejected", code, reason }, "bad checkpoint request");
        connection.close(`${code}: ${reason}`);
      }
    },
    onClose: (reason) => {
      session.close();
      if (current === connection) current = undefined;
      log.info({ event: "stmgr-disconnected", reason }, "stream manager disconnected");
    },
  });
}

log.info({ event: "started", port, store: store.description }, "checkpoint manager started");
announceReady({ port });
exitWithParent(async () => {
  server.close();
  current?.close("shutting down");
  // Writes in progress finish before the store closes under them.
  await service.idle();
  await store.close();
  log.info({ event: "stopped", ...service.stats }, "checkpoint manager stopped");
});
