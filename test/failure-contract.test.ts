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
  isFailureType,
  orderRefusal,
} from '../src/contracts/failures';
import { orderFailedError, orderRefusalError } from '../src/client/errors';

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
      const status: number = spec.api.status;
      expect(status === 503 || (status >= 400 && status < 500)).toBe(true);
    }
  }
});

test("an order's setup failure tells the buyer why only for the buyer-facing types; any other answers 409 ORDER_FAILED", () => {
  expect(orderRefusal(FailureType.OUT_OF_STOCK)).toEqual({ status: 409, code: 'OUT_OF_STOCK', details: ['sku'] });
  expect(orderRefusal(FailureType.ZERO_AMOUNT)).toMatchObject({ status: 422, code: 'ZERO_AMOUNT' });
  for (const type of [
    FailureType.PROVIDER_REJECTED,
    FailureType.ORDER_CLOSED,
    FailureType.ORDER_NOT_FOUND,
    FailureType.PAYMENT_CREATION_FAILED,
    'SOMETHING_ELSE',
    undefined,
  ]) {
    expect(orderRefusal(type)).toBeUndefined();
  }
  // What POST /orders answers for those (orderFailedError): the order failed for good and no retry with its
  // Idempotency-Key can place it, so neither a 503 nor a Retry-After.
  expect(FAILURES.PAYMENT_CREATION_FAILED.api).toEqual({ status: 409, code: 'ORDER_FAILED' });
});

test("a failed order's answer keeps the provider's refusal and shows no other failure's text (SQL, driver, addresses)", () => {
  const refused = orderFailedError(
    FailureType.PROVIDER_REJECTED,
    'create payment: outTradeNo ord_1 is already used by a payment with a different amount, currency or merchant',
    'ord_1',
  );
  expect(refused).toMatchObject({
    statusCode: 409,
    code: 'ORDER_FAILED',
    details: { reason: FailureType.PROVIDER_REJECTED, orderId: 'ord_1' },
  });
  expect(refused.message).toMatch(/already used by a payment with a different amount/);
  const raw: [type: string, message: string][] = [
    [FailureType.PAYMENT_CREATION_FAILED, 'connect ECONNREFUSED 10.0.0.7:4000'],
    ['Error', "insert into `payments` ... - Duplicate entry 'ord_1' for key 'PRIMARY'"],
    ['KnexTimeoutError', 'Knex: Timeout acquiring a connection. The pool is probably full.'],
    [FailureType.TCC_CONFLICT, "confirm after cancel for sku-1 in order ord_1 (ER_LOCK_DEADLOCK at 'db-1')"],
  ];
  for (const [type, message] of raw) {
    const answer = orderFailedError(type, message);
    expect(answer.message).not.toMatch(/ECONNREFUSED|10\.0\.0\.7|Duplicate|insert into|Knex|pool|ER_LOCK|db-1/);
    // An undeclared type (an error's class name) is not a reason the contract knows.
    expect(answer.details).toEqual({ reason: isFailureType(type) ? type : FailureType.PAYMENT_CREATION_FAILED });
  }
});

test('a Try refused after its Cancel is a refusal of the order, 409 RESERVATION_RELEASED, the same on every path', () => {
  // The one answer for the API's own Try (admission), the workflow's setup and a retry (orderRefusalError); a 503 would
  // invite a retry that can never reserve again.
  expect(orderRefusal(FailureType.TCC_TRY_AFTER_CANCEL)).toMatchObject({
    status: 409,
    code: 'RESERVATION_RELEASED',
  });
  const fromAdmission = orderRefusalError(
    FailureType.TCC_TRY_AFTER_CANCEL,
    'stock x of order ord_1 was already released',
    {
      participant: 'stock',
      resource: 'x',
    },
  );
  const fromSetup = orderRefusalError(FailureType.TCC_TRY_AFTER_CANCEL, 'coupon C of order ord_1 was already released');
  for (const e of [fromAdmission, fromSetup])
    expect({ status: e?.statusCode, code: e?.code, details: e?.details }).toEqual({
      status: 409,
      code: 'RESERVATION_RELEASED',
      details: {},
    });
  expect(fromAdmission?.message).toBe(fromSetup?.message);
  expect(fromAdmission?.message).not.toMatch(/ord_1/);
});

test('a refusal passes on its declared details only, never an order id', () => {
  const e = orderRefusalError(FailureType.COUPON_UNAVAILABLE, 'coupon C is not available', {
    couponCode: 'C',
    orderId: 'ord_1',
  });
  expect({ status: e?.statusCode, code: e?.code, message: e?.message, details: e?.details }).toEqual({
    status: 409,
    code: 'COUPON_UNAVAILABLE',
    message: 'coupon C is not available',
    details: { couponCode: 'C' },
  });
  expect(orderRefusalError(FailureType.PROVIDER_REJECTED, 'no')).toBeUndefined();
});

test('the lists built from the contract hold declared types only', () => {
  for (const type of RECONCILIATION_NON_RETRYABLE) expect(isFailureType(type)).toBe(true);
  expect(isFailureType('constructor')).toBe(false);
});
