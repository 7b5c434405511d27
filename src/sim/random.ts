/**
 * Seeded randomness for the simulator: every choice a simulation makes (network delays,
 * losses, the scenario's faults and workload) is drawn from one of these, so a run is a pure
 * function of its seed.
 *
 * The generator is mulberry32, the same sequence as the unit tests' helper
 * (test/unit/helpers/random.ts): small, fast, and good enough for choosing test schedules.
 */
export class Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [lo, hi], both inclusive. */
  int(lo: number, hi: number): number {
    if (!(hi >= lo)) throw new RangeError(`int(${lo}, ${hi}): empty range`);
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** A float in [lo, hi). */
  between(lo: number, hi: number): number {
    return lo + this.next() * (hi - lo);
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("pick from an empty list");
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** True with probability p (never for p <= 0, always for p >= 1). */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** Shuffles `items` in place (Fisher-Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const tmp = items[i]!;
      items[i] = items[j]!;
      items[j] = tmp;
    }
    return items;
  }

  /**
   * An independent generator seeded from this one's next draw: a component that takes its own
   * stream (e.g. one simulated client) does not shift the choices of the others.
   */
  fork(): Random {
    return new Random(Math.floor(this.next() * 4294967296));
  }
}
