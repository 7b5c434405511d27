/**
 * Seeded randomness for property tests. Every run picks a fresh seed (or takes TEST_SEED from
 * the environment to replay one) and a failure names the seed that produced it.
 */
import { randomInt } from "node:crypto";

export type Random = () => number;

/** mulberry32: a small, fast 32-bit PRNG; returns floats in [0, 1). */
export function mulberry32(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [min, max] (both inclusive). */
export function int(random: Random, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}

export function pick<T>(random: Random, items: readonly T[]): T {
  if (items.length === 0) throw new Error("pick from an empty list");
  return items[Math.floor(random() * items.length)]!;
}

export function randomBytes(random: Random, length: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) bytes[i] = Math.floor(random() * 256);
  return bytes;
}

/** TEST_SEED if set (to replay a failure), else a fresh seed. */
export function testSeed(): number {
  const fromEnv = process.env.TEST_SEED;
  if (fromEnv !== undefined && fromEnv !== "") {
    const seed = Number(fromEnv);
    if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) {
      throw new Error(`TEST_SEED must be an integer in [0, 2^32), got ${fromEnv}`);
    }
    return seed;
  }
  return randomInt(2 ** 32);
}

/**
 * Runs a property with a seeded PRNG; a failure is rethrown with the seed (and how to replay it)
 * prepended to its message.
 */
export function withSeed(name: string, property: (random: Random, seed: number) => void): void {
  const seed = testSeed();
  try {
    property(mulberry32(seed), seed);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    const wrapped = new Error(
      `${name} failed with seed ${seed} (replay: TEST_SEED=${seed}): ${detail}`,
      {
        cause: error,
      },
    );
    throw wrapped;
  }
}
