/** The gateway process of the native client protocol (see process.ts). */
import { NativeFrontEnd } from "./native-front-end.js";
import { runGateway } from "./process.js";

await runGateway(() => new NativeFrontEnd());
