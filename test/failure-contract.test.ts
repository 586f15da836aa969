/**
 * The failure contract (src/contracts/failures.ts) is the only place a failure type is spelled: no other source file
 * holds one as a string literal, so a renamed or new type cannot drift between the workflows, activities and the API.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import {
  FAILURES,
  FailureType,
  RECONCILIATION_NON_RETRYABLE,
  REPLAYED_FAILURE_CODES,
  isFailureType,
  orderSetupAnswer,
} from '../src/contracts/failures';

const ROOT = join(__dirname, '..');

/** Literals that are not ours: another vocabulary that happens to share a name, or a file another branch owns. */
const ALLOWED: Record<string, string[]> = {
  // WeChat Pay's own error code for closing an already closed trade.
  'src/providers/wechat.ts': ['ORDER_CLOSED'],
};

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

test('no source file (src and the development tools) but the contract spells a failure type as a string literal', () => {
  const stray: string[] = [];
  for (const file of [...sourceFiles(join(ROOT, 'src')), ...sourceFiles(join(ROOT, 'tools'))]) {
    const name = relative(ROOT, file);
    if (name === join('src', 'contracts', 'failures.ts')) continue;
    const text = readFileSync(file, 'utf8');
    for (const type of Object.keys(FAILURES)) {
      if (ALLOWED[name]?.includes(type)) continue;
      const literal = new RegExp(`(['"\`])${type}\\1`);
      text.split('\n').forEach((line, i) => {
        if (literal.test(line)) stray.push(`${name}:${i + 1}: ${type}`);
      });
    }
  }
  expect(stray).toEqual([]);
});

test('every failure type is named after itself, and the API answers each answered one with a 4xx or 503', () => {
  for (const [type, spec] of Object.entries(FAILURES)) {
    expect(FailureType[type as FailureType]).toBe(type);
    expect(spec.meaning.length).toBeGreaterThan(10);
    if ('api' in spec) {
      expect(spec.api.code).toMatch(/^[A-Z_]+$/);
      expect(spec.api.status === 503 || (spec.api.status >= 400 && spec.api.status < 500)).toBe(true);
    }
  }
});

test("an order's setup failure tells the buyer why only for the buyer-facing types; any other answers 503 PAYMENT_UNAVAILABLE", () => {
  expect(orderSetupAnswer(FailureType.OUT_OF_STOCK)).toEqual({ status: 409, code: 'OUT_OF_STOCK', details: ['sku'] });
  expect(orderSetupAnswer(FailureType.ZERO_AMOUNT)).toMatchObject({ status: 422, code: 'ZERO_AMOUNT' });
  for (const type of [
    FailureType.PROVIDER_REJECTED,
    FailureType.ORDER_CLOSED,
    FailureType.TCC_TRY_AFTER_CANCEL,
    FailureType.ORDER_NOT_FOUND,
    'SOMETHING_ELSE',
    undefined,
  ]) {
    expect(orderSetupAnswer(type)).toEqual({ status: 503, code: 'PAYMENT_UNAVAILABLE' });
  }
});

test('the lists built from the contract hold declared types only', () => {
  for (const type of [...RECONCILIATION_NON_RETRYABLE, ...REPLAYED_FAILURE_CODES])
    expect(isFailureType(type)).toBe(true);
  expect(isFailureType('constructor')).toBe(false);
});
