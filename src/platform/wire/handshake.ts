/**
 * Mutual challenge-response over HMAC-SHA256 with the cluster secret. The server proves it
 * knows the secret too, so an instance never sends tuples to an impostor.
 *
 *   server -> client  challenge {nonceS}
 *   client -> server  hello {role, id, nonceC, proof = HMAC(secret, "client", nonceS, nonceC, role, id)}
 *   server -> client  welcome {proof = HMAC(secret, "server", nonceC, nonceS)}
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

export const NONCE_BYTES = 32;

export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

export function clientProof(
  secret: Buffer,
  serverNonce: Uint8Array,
  clientNonce: Uint8Array,
  role: string,
  id: string,
): Buffer {
  return mac(secret, ["client", serverNonce, clientNonce, role, id]);
}

export function serverProof(
  secret: Buffer,
  clientNonce: Uint8Array,
  serverNonce: Uint8Array,
): Buffer {
  return mac(secret, ["server", clientNonce, serverNonce]);
}

export function proofsEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function mac(secret: Buffer, parts: (string | Uint8Array)[]): Buffer {
  const hmac = createHmac("sha256", secret);
  for (const part of parts) {
    // Length-prefix every part so that no two part lists hash alike.
    const bytes = typeof part === "string" ? Buffer.from(part, "utf8") : part;
    const length = Buffer.allocUnsafe(4);
    length.writeUInt32BE(bytes.length, 0);
    hmac.update(length).update(bytes);
  }
  return hmac.digest();
}
