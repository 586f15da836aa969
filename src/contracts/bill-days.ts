/**
 * Provider bill days: the time zone each provider cuts its bill days in, and the day of an instant. Free of zod:
 * the reconciliation workflow imports it (see ./order-workflow.ts for why workflow imports stay light).
 */

/**
 * The time zone each provider cuts its bill days in: Alipay and WeChat Pay (and the sandbox, modelled on them)
 * in China Standard Time (UTC+8, no DST); Stripe's balance-transaction day is the UTC day.
 */
const BILL_TIME_ZONES: Record<string, { zone: string; offsetMs: number }> = {
  sandbox: { zone: 'Asia/Shanghai', offsetMs: 8 * 3_600_000 },
  alipay: { zone: 'Asia/Shanghai', offsetMs: 8 * 3_600_000 },
  wechat: { zone: 'Asia/Shanghai', offsetMs: 8 * 3_600_000 },
  stripe: { zone: 'UTC', offsetMs: 0 },
};

/** The bill time zone of a provider (China time unless known otherwise). */
export function billTimeZone(provider = 'sandbox'): { zone: string; offsetMs: number } {
  return BILL_TIME_ZONES[provider] ?? BILL_TIME_ZONES.sandbox!;
}

/** `YYYY-MM-DD` of the provider's bill day containing the instant `ms`. */
export function billDateOf(ms: number, provider = 'sandbox'): string {
  return new Date(ms + billTimeZone(provider).offsetMs).toISOString().slice(0, 10);
}

/**
 * Whether a provider's bill day has ended at the instant `nowMs` (in the provider's own bill time zone). Only an
 * ended day can be reconciled: the bill of a day still going on lacks the rest of the day, so local payments recorded
 * after it was fetched would be reported missing at the provider, and the completed run would keep the day's later
 * lost callbacks from ever being repaired. False for a string that is not a day.
 */
export function billDayHasEnded(date: string, provider: string, nowMs: number): boolean {
  const range = billDayRange(date, provider);
  return range !== undefined && range.end.getTime() <= nowMs;
}

/** The instants [start, end) of a provider's bill day, or undefined when `date` is not a real `YYYY-MM-DD` day. */
export function billDayRange(date: string, provider = 'sandbox'): { start: Date; end: Date } | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
  if (!m) return undefined;
  const utc = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  if (new Date(utc).toISOString().slice(0, 10) !== date) return undefined; // 2024-02-30 rolls over: not a day
  const start = new Date(utc - billTimeZone(provider).offsetMs);
  return { start, end: new Date(start.getTime() + 24 * 3_600_000) };
}
