/**
 * Stable checkpoints: a group checkpoint at sequence number s is stable once f+1 executors
 * report it with the same digest. With 2f+1 executors, at least one live executor then holds
 * it despite f crashes, so everything up to s can be forgotten by everyone else.
 */
export class StableCheckpoints {
  stable = 0;
  /** Digests seen per sequence number: by digest, the executors that reported it. */
  private readonly reports = new Map<number, Map<string, Set<number>>>();
  /** Each executor's latest report. */
  private readonly latest = new Map<number, number>();

  constructor(private readonly quorum: number) {}

  /**
   * Records one report; returns the new stable sequence number if this report made a newer
   * checkpoint stable, else undefined. Calls `onMismatch` when executors disagree (a
   * nondeterministic state machine).
   */
  report(
    executor: number,
    s: number,
    digest: string,
    onMismatch: (s: number) => void,
  ): number | undefined {
    const previous = this.latest.get(executor) ?? 0;
    this.latest.set(executor, s);
    if (s < previous) {
      // A restarted executor (its checkpoints were in memory) no longer holds what it
      // reported before: it must not help make those stable (found by a simulator seed).
      for (const [seen, byDigest] of this.reports) {
        if (seen > s) for (const holders of byDigest.values()) holders.delete(executor);
      }
    }
    if (s <= this.stable) return undefined;
    let byDigest = this.reports.get(s);
    if (!byDigest) this.reports.set(s, (byDigest = new Map()));
    let holders = byDigest.get(digest);
    if (!holders) {
      byDigest.set(digest, (holders = new Set()));
      if (byDigest.size > 1) onMismatch(s);
    }
    holders.add(executor);
    if (holders.size < this.quorum) return undefined;
    this.stable = s;
    for (const seen of this.reports.keys()) if (seen <= s) this.reports.delete(seen);
    return s;
  }
}
