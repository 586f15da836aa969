import { z } from 'zod';

/** ISO 4217 currency code, upper case. */
export const Currency = z.string().regex(/^[A-Z]{3}$/, 'currency must be a 3-letter ISO code such as CNY');
export type Currency = z.infer<typeof Currency>;

/** An amount in integer minor units (fen, cents); never a float. */
export const MinorUnits = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
export type MinorUnits = z.infer<typeof MinorUnits>;

/** Currencies whose minor unit is the major unit (no x100). */
const ZERO_DECIMAL = new Set(['JPY', 'KRW', 'VND', 'CLP', 'ISK', 'UGX', 'XAF', 'XOF']);

/** Number of decimal places of a currency's major unit. */
export function currencyExponent(currency: string): number {
  return ZERO_DECIMAL.has(currency) ? 0 : 2;
}

/** Formats minor units as a major-unit decimal string, exactly (`1234` CNY -> `12.34`). */
export function toMajorString(minor: number, currency: string): string {
  if (!Number.isSafeInteger(minor)) throw new Error(`${minor} is not an integer amount of minor units`);
  const exp = currencyExponent(currency);
  const negative = minor < 0;
  const digits = Math.abs(minor)
    .toString()
    .padStart(exp + 1, '0');
  const whole = exp === 0 ? digits : digits.slice(0, -exp);
  const frac = exp === 0 ? '' : `.${digits.slice(-exp)}`;
  return `${negative ? '-' : ''}${whole}${frac}`;
}

/** Parses a major-unit decimal string into minor units without floating point (`12.34` -> 1234). */
export function fromMajorString(text: string, currency: string): number {
  const exp = currencyExponent(currency);
  const match = /^(-)?(\d+)(?:\.(\d+))?$/.exec(text.trim());
  if (!match) throw new Error(`${JSON.stringify(text)} is not a decimal amount`);
  const frac = match[3] ?? '';
  if (frac.length > exp) throw new Error(`${JSON.stringify(text)} has more than ${exp} decimal places for ${currency}`);
  const minor = Number(`${match[2]}${frac.padEnd(exp, '0')}`);
  if (!Number.isSafeInteger(minor)) throw new Error(`${JSON.stringify(text)} is too large`);
  return match[1] && minor !== 0 ? -minor : minor;
}

/** Human display such as `CNY 12.34`. */
export function formatMoney(minor: number, currency: string): string {
  return `${currency} ${toMajorString(minor, currency)}`;
}
