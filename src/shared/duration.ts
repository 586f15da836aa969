/** Parses a duration string such as `500ms`, `30s`, `15m`, `2h` (or a bare number of ms) into milliseconds. */
export function parseDuration(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!match)
    throw new Error(
      `${JSON.stringify(text)} is not a duration; use a number followed by ms, s, m or h (e.g. 30s, 15m)`,
    );
  const value = Number(match[1]);
  const unit = match[2] ?? 'ms';
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit as 'ms' | 's' | 'm' | 'h'];
  return Math.round(value * factor);
}

/** Formats milliseconds as the shortest exact duration string (`90s`, `15m`, `250ms`). */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0 && ms > 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
