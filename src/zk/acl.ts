/**
 * ZooKeeper ACLs as 3.8's server checks them (PrepRequestProcessor.fixupACL,
 * ZooKeeperServer.checkACL, the digest and ip authentication providers, getACL's masking):
 * ../shared/ZOOKEEPER.md section 9 step 4 and section 10.
 */
import { createHash } from "node:crypto";
import { Perm, type Acl, type Id } from "./types.js";

/** The identity `digest` auth adds for "user:password": "user:base64(sha1(user:password))". */
export function digestIdentity(userPassword: string): string {
  const colon = userPassword.indexOf(":");
  const user = colon < 0 ? userPassword : userPassword.slice(0, colon);
  return `${user}:${createHash("sha1").update(userPassword, "utf8").digest("base64")}`;
}

/** Identity schemes whose providers count as authenticated, so that `auth` ACLs expand to them. */
const AUTHENTICATED_SCHEMES: ReadonlySet<string> = new Set(["digest"]);

/**
 * fixupACL: the ACL list create and setACL store, or undefined for InvalidACL. Duplicates go
 * first (before `auth` expansion, as in ZooKeeper), then each entry is checked: world:anyone,
 * `auth` (one entry per authenticated identity of the caller, none is invalid), or a valid
 * digest/ip id.
 */
export function normalizeAcl(
  acl: readonly Acl[],
  identities: readonly Id[],
): readonly Acl[] | undefined {
  const unique: Acl[] = [];
  for (const a of acl) {
    if (!unique.some((u) => sameAcl(u, a))) unique.push(a);
  }
  if (unique.length === 0) return undefined;
  const only = unique.length === 1 ? unique[0] : undefined;
  if (only !== undefined && isWorldAnyone(only) && only.perms >= 0 && only.perms <= Perm.all) {
    return worldAcl(only.perms);
  }
  const result: Acl[] = [];
  for (const a of unique) {
    const { scheme, id } = a.id;
    if (isWorldAnyone(a)) {
      result.push(a);
    } else if (scheme === "auth") {
      let expanded = false;
      for (const identity of identities) {
        if (!AUTHENTICATED_SCHEMES.has(identity.scheme)) continue;
        result.push({ perms: a.perms, id: identity });
        expanded = true;
      }
      if (!expanded) return undefined;
    } else if ((scheme === "digest" && validDigestId(id)) || (scheme === "ip" && validIpId(id))) {
      result.push(a);
    } else {
      return undefined;
    }
  }
  return result;
}

/**
 * checkACL: whether `identities` hold one of the bits of `perm` on a node with this ACL. An empty
 * ACL allows everything and a `super` identity bypasses ACLs, as in ZooKeeper.
 */
export function permitted(acl: readonly Acl[], perm: number, identities: readonly Id[]): boolean {
  if (acl.length === 0) return true;
  for (const identity of identities) if (identity.scheme === "super") return true;
  for (const a of acl) {
    if ((a.perms & perm) === 0) continue;
    const { scheme, id } = a.id;
    if (scheme === "world") {
      if (id === "anyone") return true;
    } else if (scheme === "digest") {
      for (const identity of identities) {
        if (identity.scheme === "digest" && identity.id === id) return true;
      }
    } else if (scheme === "ip") {
      for (const identity of identities) {
        if (identity.scheme === "ip" && ipMatches(identity.id, id)) return true;
      }
    }
  }
  return false;
}

/** getACL for a caller without ADMIN: digest ids lose their hash ("user:hash" -> "user:x"). */
export function maskDigests(acl: readonly Acl[]): readonly Acl[] {
  return acl.map((a) =>
    a.id.scheme === "digest"
      ? { perms: a.perms, id: { scheme: "digest", id: a.id.id.replace(/:.*/g, ":x") } }
      : a,
  );
}

/**
 * Shared world:anyone lists, one per perms value: most nodes have one, and sharing saves memory
 * and lets snapshots index ACLs by identity.
 */
const WORLD_ACLS = new Map<number, readonly Acl[]>();

function worldAcl(perms: number): readonly Acl[] {
  let acl = WORLD_ACLS.get(perms);
  if (acl === undefined) {
    acl = Object.freeze([
      Object.freeze({ perms, id: Object.freeze({ scheme: "world", id: "anyone" }) }),
    ]);
    WORLD_ACLS.set(perms, acl);
  }
  return acl;
}

function isWorldAnyone(a: Acl): boolean {
  return a.id.scheme === "world" && a.id.id === "anyone";
}

function sameAcl(a: Acl, b: Acl): boolean {
  return a.perms === b.perms && a.id.scheme === b.id.scheme && a.id.id === b.id.id;
}

/** DigestAuthenticationProvider.isValid: Java's `id.split(":").length == 2`. */
function validDigestId(id: string): boolean {
  const parts = id.split(":");
  // Java's split drops trailing empty strings.
  while (parts.length > 0 && parts[parts.length - 1] === "") parts.pop();
  return parts.length === 2;
}

/** Integer.parseInt as the ip provider uses it, or undefined where Java would throw. */
function parseJavaInt(text: string): number | undefined {
  return /^[+-]?[0-9]+$/.test(text) ? Number(text) : undefined;
}

/** An IPv4 address as 4 bytes (the ip provider has no IPv6 support), or undefined. */
function ipv4Bytes(address: string): number[] | undefined {
  const parts = address.split(".");
  if (parts.length !== 4) return undefined;
  const bytes: number[] = [];
  for (const part of parts) {
    const value = parseJavaInt(part);
    if (value === undefined || value < 0 || value > 255) return undefined;
    bytes.push(value);
  }
  return bytes;
}

/** An ip ACL id: "address" or "address/bits", as bytes and a prefix length. */
function parseIpId(id: string): { bytes: number[]; bits: number } | undefined {
  const slash = id.indexOf("/");
  const bytes = ipv4Bytes(slash < 0 ? id : id.slice(0, slash));
  if (bytes === undefined) return undefined;
  if (slash < 0) return { bytes, bits: 32 };
  const bits = parseJavaInt(id.slice(slash + 1));
  if (bits === undefined || bits < 0 || bits > 32) return undefined;
  return { bytes, bits };
}

function validIpId(id: string): boolean {
  return parseIpId(id) !== undefined;
}

/** IPAuthenticationProvider.matches: the client address lies in the ACL's address/CIDR. */
function ipMatches(clientAddress: string, aclId: string): boolean {
  const acl = parseIpId(aclId);
  const client = ipv4Bytes(clientAddress);
  if (acl === undefined || client === undefined) return false;
  for (let i = 0; i < 4; i++) {
    const bits = Math.min(8, Math.max(0, acl.bits - 8 * i));
    const mask = (0xff << (8 - bits)) & 0xff;
    if (((acl.bytes[i] ?? 0) & mask) !== ((client[i] ?? 0) & mask)) return false;
  }
  return true;
}
