/**
 * Calendar helpers in China Standard Time (UTC+08:00, no daylight saving), the zone Alipay and WeChat
 * use for bill days and displayed times.
 */

const CHINA_OFFSET_MS = 8 * 3_600_000;

const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

/** The UTC fields of this shifted date are the China wall-clock fields of `date`. */
function chinaWallClock(date: Date): Date {
  return new Date(date.getTime() + CHINA_OFFSET_MS);
}

/** `YYYY-MM-DD HH:mm:ss` in China time, the bills' time format. */
export function formatChinaDateTime(date: Date): string {
  const c = chinaWallClock(date);
  return `${formatChinaDate(date)} ${pad(c.getUTCHours())}:${pad(c.getUTCMinutes())}:${pad(c.getUTCSeconds())}`;
}

/** `YYYY-MM-DD` of the China calendar day containing `date`. */
export function formatChinaDate(date: Date): string {
  const c = chinaWallClock(date);
  return `${c.getUTCFullYear()}-${pad(c.getUTCMonth() + 1)}-${pad(c.getUTCDate())}`;
}

/** `YYYY年MM月DD日 HH:mm:ss` in China time, as in the `#` header and footer lines of Alipay bills. */
export function formatChinaDateTimeLong(date: Date): string {
  const [day, time] = formatChinaDateTime(date).split(' ') as [string, string];
  const [y, m, d] = day.split('-') as [string, string, string];
  return `${y}年${m}月${d}日 ${time}`;
}

/** `YYYYMMDD` of the China calendar day, used inside provider ids. */
export function chinaDateStamp(date: Date): string {
  return formatChinaDate(date).replaceAll('-', '');
}

/** The half-open instant range [start, end) of a China calendar day `YYYY-MM-DD`; undefined if not a real date. */
export function chinaDayRange(day: string): { start: Date; end: Date } | undefined {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day);
  if (!match) return undefined;
  const [year, month, date] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const utcMidnight = Date.UTC(year, month - 1, date);
  // Date.UTC rolls 2024-02-30 over to March; a rolled-over date is not the day that was asked for.
  const check = new Date(utcMidnight);
  if (check.getUTCFullYear() !== year || check.getUTCMonth() !== month - 1 || check.getUTCDate() !== date)
    return undefined;
  const start = new Date(utcMidnight - CHINA_OFFSET_MS);
  return { start, end: new Date(start.getTime() + 24 * 3_600_000) };
}
