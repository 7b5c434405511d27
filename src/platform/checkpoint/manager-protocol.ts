/**
 * The byte handling of the LPC-CM path (wire/messages.ts, `ckpt-*`), shared by the instance's
 * ManagerChannel and the checkpoint manager: checkpoint bytes cut into parts of at most
 * CHECKPOINT_PART_BYTES (one frame each), put back together on the other side, and a load's
 * recovered chain as bytes.
 */
import { Packr, Unpackr } from "msgpackr";
import { z } from "zod";
import { WireError } from "../wire/errors.js";
import { CHECKPOINT_MAX_BYTES, CHECKPOINT_PART_BYTES } from "../wire/messages.js";
import type { RecoveredChain } from "./store/recovery.js";

/** `data` as parts (views, no copies); always at least one, possibly empty. */
export function splitParts(data: Uint8Array): Uint8Array[] {
  const parts: Uint8Array[] = [];
  for (let offset = 0; offset < data.length; offset += CHECKPOINT_PART_BYTES) {
    parts.push(data.subarray(offset, offset + CHECKPOINT_PART_BYTES));
  }
  return parts.length > 0 ? parts : [data];
}

/**
 * Collects the parts of `size` bytes whose first part has come. Parts are kept as they are
 * and copied once at the end, so a lying `size` costs nothing until the bytes actually come.
 */
export class PartAssembler {
  private readonly parts: Uint8Array[];
  private received: number;

  constructor(
    readonly size: number,
    first: Uint8Array,
  ) {
    if (size > CHECKPOINT_MAX_BYTES) {
      throw new WireError("FRAME_INVALID", `checkpoint of ${size} bytes is over the limit`);
    }
    this.parts = [first];
    this.received = first.length;
    this.check();
  }

  get complete(): boolean {
    return this.received === this.size;
  }

  /** Adds the next part; throws FRAME_INVALID if it goes beyond `size`. */
  add(part: Uint8Array): void {
    this.parts.push(part);
    this.received += part.length;
    this.check();
  }

  bytes(): Uint8Array {
    if (!this.complete) throw new Error(`only ${this.received} of ${this.size} bytes`);
    return this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
  }

  private check(): void {
    if (this.received > this.size) {
      throw new WireError(
        "FRAME_INVALID",
        `checkpoint parts bring ${this.received} bytes, ${this.size} announced`,
      );
    }
  }
}

const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
const entry = z.object({
  id: z.number().int().min(0),
  data: z.custom<Uint8Array>((v) => v instanceof Uint8Array, "expected bytes"),
});
const chainSchema = z.object({ base: entry.optional(), deltas: z.array(entry) });

export function encodeChain(chain: RecoveredChain): Uint8Array {
  const entryOf = (e: { id: number; data: Uint8Array }) => ({ id: e.id, data: e.data });
  const deltas = chain.deltas.map(entryOf);
  return packr.pack(chain.base ? { base: entryOf(chain.base), deltas } : { deltas });
}

/** Throws FRAME_INVALID on anything that is not a chain. */
export function decodeChain(bytes: Uint8Array): RecoveredChain {
  let value: unknown;
  try {
    value = unpackr.unpack(bytes);
  } catch (error) {
    throw new WireError("FRAME_INVALID", `undecodable checkpoint chain: ${String(error)}`);
  }
  const parsed = chainSchema.safeParse(value);
  if (!parsed.success) {
    throw new WireError("FRAME_INVALID", `invalid checkpoint chain: ${parsed.error.message}`);
  }
  const { base, deltas } = parsed.data;
  return base ? { base, deltas } : { deltas };
}
