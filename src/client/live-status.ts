/**
 * The waiting page polls `GET /orders/:id` every 2 s per buyer, and each poll of a waiting order would ask its
 * workflow for the live stage (a query: a workflow task on a worker, and a replay when the workflow is not cached).
 * This keeps that cost bounded, whatever the number of buyers waiting:
 * - concurrent reads of one order share one query (single flight), and an answer is reused for `ttlMs`;
 * - at most `maxInFlight` queries run at once, and at most `maxPerSecond` start in any second; beyond either, a read
 *   gets the last answer it has for that order even if older than `ttlMs` (marked by nothing: the stage moves slowly),
 *   or no live stage at all (the page still has the status, payment and timeline from MySQL). A crowd of waiting
 *   buyers therefore costs the workers a fixed number of queries per second, not one per poll.
 */
export class LiveStatusCache<T> {
  private readonly answers = new Map<string, { value: T | undefined; at: number }>();
  private readonly pending = new Map<string, Promise<T | undefined>>();

  constructor(
    private readonly fetch: (key: string) => Promise<T | undefined>,
    private readonly options: {
      ttlMs: number;
      maxInFlight: number;
      maxPerSecond?: number;
      maxEntries?: number;
      now?: () => number;
    },
  ) {}

  /**
   * Queries started in the current one-second window (a fixed window: cheap, and bursts of 2x at a boundary are fine).
   */
  private window = { second: -1, started: 0 };

  private budgetLeft(now: number): boolean {
    const max = this.options.maxPerSecond;
    if (max === undefined) return true;
    const second = Math.floor(now / 1000);
    if (second !== this.window.second) this.window = { second, started: 0 };
    return this.window.started < max;
  }

  /** Queries run right now. */
  get inFlight(): number {
    return this.pending.size;
  }

  async get(key: string): Promise<T | undefined> {
    const now = this.options.now?.() ?? Date.now();
    const cached = this.answers.get(key);
    if (cached && now - cached.at < this.options.ttlMs) return cached.value;
    const running = this.pending.get(key);
    if (running) return running;
    if (this.pending.size >= this.options.maxInFlight || !this.budgetLeft(now)) return cached?.value;
    this.window.started++;
    const query = this.fetch(key)
      .catch(() => undefined)
      .then((value) => {
        this.remember(key, value);
        return value;
      })
      .finally(() => this.pending.delete(key));
    this.pending.set(key, query);
    return query;
  }

  private remember(key: string, value: T | undefined): void {
    this.answers.delete(key);
    this.answers.set(key, { value, at: this.options.now?.() ?? Date.now() });
    // Oldest first in a Map's order: drop from the front past the bound.
    const max = this.options.maxEntries ?? 10_000;
    for (const k of this.answers.keys()) {
      if (this.answers.size <= max) break;
      this.answers.delete(k);
    }
  }
}
