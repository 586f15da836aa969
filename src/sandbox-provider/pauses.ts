/** Sleeps that `wakeAll()` ends early, so an injected API latency never holds up shutting down. */
export class Pauses {
  private readonly pending = new Set<() => void>();

  /** Resolves after `ms`, or as soon as wakeAll() is called. */
  sleep(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.pending.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.pending.add(wake);
    });
  }

  /** Ends every pending sleep now. */
  wakeAll(): void {
    for (const wake of [...this.pending]) wake();
  }
}
