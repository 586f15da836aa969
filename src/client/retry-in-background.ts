/**
 * A set-up step the API retries in the background until it succeeds, so that a dependency that is down when the
 * process starts (Temporal, mostly) never keeps the API from serving what does not need it: callbacks are stored
 * and acknowledged by MySQL alone, and the inbox hands them to Temporal once it answers.
 */

/** Waits between attempts: 10 s, doubling, at most 5 minutes. */
export const BACKGROUND_RETRY_MS = [10_000, 20_000, 40_000, 80_000, 160_000, 300_000];

/**
 * Runs `attempt` now, and again after each failure (`onFailure` told each time, with the wait before the next) until
 * it succeeds or `stop` is called. `done` settles when it has succeeded or stopped; it never rejects.
 */
export function retryInBackground(options: {
  attempt: () => Promise<void>;
  onFailure: (err: unknown, attempt: number, retryInMs: number) => void;
  retryMs?: number[];
}): { stop(): void; done: Promise<void> } {
  const delays = options.retryMs ?? BACKGROUND_RETRY_MS;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const done = (async () => {
    for (let attempt = 0; !stopped; attempt++) {
      const retryInMs = delays[Math.min(attempt, delays.length - 1)]!;
      try {
        await options.attempt();
        return;
      } catch (err) {
        options.onFailure(err, attempt + 1, retryInMs);
      }
      if (stopped) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, retryInMs);
        timer.unref();
      });
    }
  })();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      wake?.();
    },
    done,
  };
}
