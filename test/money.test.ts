/** Money in integer minor units and durations: exact formatting and parsing, round trips, rejections. */
import fc from 'fast-check';
import { formatDuration, parseDuration } from '../src/shared/duration';
import { currencyExponent, formatMoney, fromMajorString, toMajorString } from '../src/shared/money';

const safeInteger = fc.integer({ min: -Number.MAX_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER });

describe('money', () => {
  test.each(['CNY', 'USD', 'JPY', 'KRW'])(
    'minor units survive a round trip through the major-unit string exactly in %s',
    (currency) => {
      fc.assert(
        fc.property(safeInteger, (minor) => {
          expect(fromMajorString(toMajorString(minor, currency), currency)).toBe(minor);
        }),
        { numRuns: 1_000 },
      );
    },
  );

  test('a canonical major-unit string survives a round trip through minor units exactly', () => {
    const cnyString = fc
      .tuple(fc.boolean(), fc.bigInt({ min: 0n, max: 90_071_992_547_409n }), fc.integer({ min: 0, max: 99 }))
      .filter(
        ([negative, whole, cents]) =>
          (!negative || whole > 0n || cents > 0) && whole * 100n + BigInt(cents) <= BigInt(Number.MAX_SAFE_INTEGER),
      )
      .map(([negative, whole, cents]) => `${negative ? '-' : ''}${whole}.${String(cents).padStart(2, '0')}`);
    fc.assert(
      fc.property(cnyString, (text) => {
        expect(toMajorString(fromMajorString(text, 'CNY'), 'CNY')).toBe(text);
      }),
    );
  });

  test('the edges of the safe range round trip', () => {
    expect(toMajorString(Number.MAX_SAFE_INTEGER, 'CNY')).toBe('90071992547409.91');
    expect(fromMajorString('90071992547409.91', 'CNY')).toBe(Number.MAX_SAFE_INTEGER);
    expect(toMajorString(-Number.MAX_SAFE_INTEGER, 'JPY')).toBe('-9007199254740991');
    expect(fromMajorString('-9007199254740991', 'JPY')).toBe(-Number.MAX_SAFE_INTEGER);
  });

  test('minor units format with the currency exponent', () => {
    expect(currencyExponent('CNY')).toBe(2);
    expect(currencyExponent('JPY')).toBe(0);
    expect(toMajorString(1234, 'CNY')).toBe('12.34');
    expect(toMajorString(5, 'CNY')).toBe('0.05');
    expect(toMajorString(50, 'CNY')).toBe('0.50');
    expect(toMajorString(0, 'CNY')).toBe('0.00');
    expect(toMajorString(100, 'USD')).toBe('1.00');
    expect(toMajorString(1234, 'JPY')).toBe('1234');
    expect(toMajorString(0, 'JPY')).toBe('0');
  });

  test('negative amounts format with a leading minus', () => {
    expect(toMajorString(-1234, 'CNY')).toBe('-12.34');
    expect(toMajorString(-5, 'CNY')).toBe('-0.05');
    expect(toMajorString(-100, 'CNY')).toBe('-1.00');
    expect(toMajorString(-7, 'JPY')).toBe('-7');
    expect(formatMoney(-250, 'CNY')).toBe('CNY -2.50');
    expect(fromMajorString('-12.34', 'CNY')).toBe(-1234);
    expect(fromMajorString('-7', 'JPY')).toBe(-7);
  });

  test('formatMoney prefixes the currency code', () => {
    expect(formatMoney(1250, 'CNY')).toBe('CNY 12.50');
    expect(formatMoney(1250, 'JPY')).toBe('JPY 1250');
  });

  test('fewer decimals than the exponent are padded, surrounding blanks are ignored', () => {
    expect(fromMajorString('12.3', 'CNY')).toBe(1230);
    expect(fromMajorString('12', 'CNY')).toBe(1200);
    expect(fromMajorString('0.05', 'CNY')).toBe(5);
    expect(fromMajorString('  7.5 ', 'USD')).toBe(750);
    expect(fromMajorString('007.50', 'CNY')).toBe(750);
  });

  test('too many decimal places for the currency are rejected', () => {
    expect(() => fromMajorString('12.345', 'CNY')).toThrow(/more than 2 decimal places for CNY/);
    expect(() => fromMajorString('0.001', 'USD')).toThrow(/more than 2 decimal places/);
    expect(() => fromMajorString('12.5', 'JPY')).toThrow(/more than 0 decimal places for JPY/);
    expect(() => fromMajorString('12.0', 'JPY')).toThrow(/decimal places/);
  });

  test.each(['', 'abc', '12,34', '1e3', '.5', '5.', '+5', '--5', '1 000', 'NaN', 'Infinity', '12.3.4'])(
    '%j is not a decimal amount',
    (text) => {
      expect(() => fromMajorString(text, 'CNY')).toThrow(/is not a decimal amount/);
    },
  );

  test('amounts beyond the safe integer range are rejected', () => {
    expect(() => fromMajorString('90071992547409.92', 'CNY')).toThrow(/too large/);
    expect(() => fromMajorString('9007199254740993', 'JPY')).toThrow(/too large/);
    expect(() => fromMajorString('1' + '0'.repeat(30), 'CNY')).toThrow(/too large/);
  });
});

describe('durations', () => {
  test.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['15m', 900_000],
    ['2h', 7_200_000],
    ['250', 250],
    ['0', 0],
    ['1.5s', 1_500],
    ['0.5m', 30_000],
    [' 15m ', 900_000],
    ['15 m', 900_000],
  ])('%j parses to %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  test.each(['', 'soon', '15d', '-5s', '1e3', '15mins', 'm', '1.s', '15M', '1h30m'])(
    '%j is rejected with a message that shows the accepted form',
    (text) => {
      expect(() => parseDuration(text)).toThrow(/is not a duration; use a number followed by ms, s, m or h/);
    },
  );

  test.each([
    [90_000, '90s'],
    [900_000, '15m'],
    [3_600_000, '1h'],
    [5_400_000, '90m'],
    [250, '250ms'],
    [1_500, '1500ms'],
    [0, '0ms'],
  ])('%d ms formats as %j', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  test('formatting then parsing any whole number of milliseconds gives it back', () => {
    fc.assert(
      fc.property(fc.nat({ max: Number.MAX_SAFE_INTEGER }), (ms) => {
        expect(parseDuration(formatDuration(ms))).toBe(ms);
      }),
      { numRuns: 1_000 },
    );
  });

  test('formatDuration picks the largest unit that divides exactly', () => {
    const unitMs = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000 }),
        fc.constantFrom<keyof typeof unitMs>('ms', 's', 'm', 'h'),
        (n, unit) => {
          const text = formatDuration(n * unitMs[unit]);
          const [, value, chosen] = /^(\d+)(ms|s|m|h)$/.exec(text)!;
          expect(Number(value) * unitMs[chosen as keyof typeof unitMs]).toBe(n * unitMs[unit]);
          expect(unitMs[chosen as keyof typeof unitMs]).toBeGreaterThanOrEqual(unitMs[unit]);
          const larger = Object.values(unitMs).filter((u) => u > unitMs[chosen as keyof typeof unitMs]);
          for (const u of larger) expect((n * unitMs[unit]) % u).not.toBe(0);
        },
      ),
    );
  });
});
