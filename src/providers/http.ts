/** Small helpers the real-provider adapters share: HTTP with a timeout, China time, form bodies, amounts. */
import iconv from 'iconv-lite';
import { fromMajorString } from '../shared/money';
import { ProviderUnavailableError } from './sandbox';

export { ProviderUnavailableError };

/** A provider's HTTP answer, body as text (signatures are checked over the exact bytes). */
export interface HttpAnswer {
  status: number;
  headers: Headers;
  body: Buffer;
  text: string;
}

/** fetch with a timeout; a network failure or a 5xx is a ProviderUnavailableError (retried by the activity). */
export async function httpCall(url: string, init: RequestInit, what: string, timeoutMs: number): Promise<HttpAnswer> {
  let response: Response;
  try {
    response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    throw new ProviderUnavailableError(`${what} failed: ${(err as Error).message}`);
  }
  const body = Buffer.from(await response.arrayBuffer());
  const text = body.toString('utf8');
  if (response.status >= 500)
    throw new ProviderUnavailableError(`${what} answered ${response.status}: ${text.slice(0, 200)}`);
  return { status: response.status, headers: response.headers, body, text };
}

const CHINA_OFFSET_MS = 8 * 3_600_000;
const pad = (n: number) => String(n).padStart(2, '0');

/** `YYYY-MM-DD HH:mm:ss` in China Standard Time (UTC+8, no DST): Alipay's timestamp and time_expire format. */
export function chinaDateTime(date: Date): string {
  const c = new Date(date.getTime() + CHINA_OFFSET_MS);
  return `${c.getUTCFullYear()}-${pad(c.getUTCMonth() + 1)}-${pad(c.getUTCDate())} ${pad(c.getUTCHours())}:${pad(c.getUTCMinutes())}:${pad(c.getUTCSeconds())}`;
}

/** RFC 3339 with a +08:00 offset, second precision: WeChat Pay's time format. */
export function chinaRfc3339(date: Date): string {
  return `${chinaDateTime(date).replace(' ', 'T')}+08:00`;
}

/** Parses `YYYY-MM-DD HH:mm:ss` given in China time to an ISO instant; undefined when it is not such a time. */
export function parseChinaDateTime(text: string): string | undefined {
  // Alipay writes some times with a fraction (gmt_refund: `2015-04-28 10:00:00.123`).
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?$/.exec(text.trim());
  if (!m) return undefined;
  const millis = Number((m[7] ?? '').padEnd(3, '0'));
  const ms =
    Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]), millis) -
    CHINA_OFFSET_MS;
  return Number.isNaN(ms) ? undefined : new Date(ms).toISOString();
}

/** A yuan amount as providers write it: digits with at most two decimals, no sign, no exponent. */
export const YUAN = /^(0|[1-9]\d{0,15})(\.\d{1,2})?$/;

/** Exact yuan -> fen; undefined when the text is not a well-formed yuan amount. */
export function yuanToFen(text: string): number | undefined {
  if (!YUAN.test(text)) return undefined;
  return fromMajorString(text, 'CNY');
}

/**
 * Parses an `application/x-www-form-urlencoded` body byte-wise, decoding the percent-escaped bytes in `charset`
 * (Alipay notifies in the app's charset: UTF-8 or GBK). Returns undefined for a repeated key or bad escape.
 */
export function parseForm(raw: Buffer, charset = 'utf-8'): Map<string, string> | undefined {
  const out = new Map<string, string>();
  const decode = (part: string): string | undefined => {
    const bytes: number[] = [];
    for (let i = 0; i < part.length; i++) {
      const ch = part.charCodeAt(i);
      if (ch === 0x2b) bytes.push(0x20);
      else if (ch === 0x25) {
        const hex = part.slice(i + 1, i + 3);
        if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
        bytes.push(parseInt(hex, 16));
        i += 2;
      } else bytes.push(ch); // latin1 text: one char per raw byte
    }
    return iconv.decode(Buffer.from(bytes), charset);
  };
  const text = raw.toString('latin1');
  if (text.trim() === '') return out;
  for (const pair of text.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const key = decode(eq < 0 ? pair : pair.slice(0, eq));
    const value = decode(eq < 0 ? '' : pair.slice(eq + 1));
    if (key === undefined || value === undefined || out.has(key)) return undefined;
    out.set(key, value);
  }
  return out;
}

/** The charset a form body declares in its own `charset` field (Alipay's convention), default UTF-8. */
export function formCharset(raw: Buffer): string {
  const m = /(?:^|&)charset=([A-Za-z0-9_-]{1,20})(?:&|$)/.exec(raw.toString('latin1'));
  const name = m?.[1]?.toLowerCase() ?? 'utf-8';
  return iconv.encodingExists(name) ? name : 'utf-8';
}

/** First value of a header as Node gives it (lower-case names; repeated headers come as arrays). */
export function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}
