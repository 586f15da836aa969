/**
 * The waiting page polls `GET /orders/:id` every 2 s per buyer, and each poll of a waiting order would ask its
 * workflow for the live stage (a query: a workflow task on a worker). This keeps that cost bounded:
 * - concurrent reads of one order share one query (single flight), and an answer is reused for `ttlMs`;
 * - at most `maxInFlight` queries run at once; beyond that a read goes without the live stage (it still has
 *   the status, payment and timeline from MySQL), so a crowd of waiting buyers cannot swamp the workers.
 */
export class LiveStatusCache<T> {
  private readonly answers = new Map<string, { value: T | undefined; at: number }>();
  private readonly pending = new Map<string, Promise<T | undefined>>();

  constructor(
    private readonly fetch: (key: string) => Promise<T | undefined>,
    private readonly options: { ttlMs: number; maxInFlight: number; maxEntries?: number; now?: () => number },
  ) {}

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
    if (this.pending.size >= this.options.maxInFlight) return undefined;
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
