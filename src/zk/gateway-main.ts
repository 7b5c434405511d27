/** The gateway process of the ZooKeeper service (see ../tara/gateway/process.ts). */
import { runGateway } from "../tara/gateway/process.js";
import { ZkFrontEnd } from "./front-end.js";

await runGateway(({ log }) => new ZkFrontEnd({ log }));
