/**
 * describeStatus: every status and stage has a buyer message, a support message and a next step in English and
 * Chinese; money-safety promises where money could be in flight; the right next step and time.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KNOWN_STAGES, USER_MESSAGES, describeStatus } from '../src/contracts/messages';
import { OrderStatus } from '../src/contracts/order';

const CJK = /[\u3400-\u9fff]/;
const NOW = Date.parse('2026-11-27T08:00:00.000Z');
const iso = (ms: number) => new Date(ms).toISOString();

const STATUSES = OrderStatus.options;
const STAGES: (string | undefined)[] = [undefined, ...KNOWN_STAGES, 'SOME_FUTURE_STAGE'];

describe('describeStatus', () => {
  test('the stage list covers the stages the workflow reports, including review and cooling-off', () => {
    expect(KNOWN_STAGES).toEqual(
      expect.arrayContaining([
        'AWAITING_PAYMENT',
        'CONFIRMING',
        'WATCHING_LATE_PAYMENT',
        'AWAITING_REVIEW',
        'COOLING_OFF',
        'DONE',
      ]),
    );
  });

  test.each(STATUSES)(
    'every stage of an order in %s has non-empty English and Chinese user, support and next texts',
    (status) => {
      for (const stage of STAGES) {
        const m = describeStatus({
          status,
          stage,
          deadline: iso(NOW + 60_000),
          nextCheckAt: iso(NOW + 5_000),
          queryAttempts: 2,
          now: NOW,
        });
        for (const part of [m.user, m.support, m.next]) {
          expect(part.en.trim().length).toBeGreaterThan(10);
          expect(part.zh.trim().length).toBeGreaterThan(4);
          expect(part.zh).toMatch(CJK);
          expect(part.en).not.toMatch(CJK);
        }
        expect(m.code).toMatch(/^[A-Z_]+$/);
        expect(['RESERVING', 'AWAITING_PAYMENT', 'CONFIRMING', 'DONE']).toContain(m.phase);
        if (m.expectedBy !== undefined) expect(new Date(m.expectedBy).toISOString()).toBe(m.expectedBy);
      }
    },
  );

  test.each(['EXPIRED', 'CANCELLED'] as const)(
    'an order in %s promises an automatic refund in both languages, also while watching for late payments',
    (status) => {
      for (const stage of [undefined, 'DONE', 'WATCHING_LATE_PAYMENT']) {
        const m = describeStatus({ status, stage, now: NOW });
        expect(m.user.en).toMatch(/refunded automatically/);
        expect(m.user.zh).toMatch(/自动原路退回/);
        expect(m.support.en).toMatch(/refund/i);
      }
    },
  );

  test('a closed order still watching for late payments tells support so', () => {
    const m = describeStatus({ status: 'EXPIRED', stage: 'WATCHING_LATE_PAYMENT', now: NOW });
    expect(m.code).toBe('EXPIRED_WATCHING');
    expect(m.support.en).toMatch(/watching for a late payment/);
    expect(describeStatus({ status: 'EXPIRED', stage: 'DONE', now: NOW }).code).toBe('EXPIRED');
  });

  test('a payment being confirmed says so and expects the result within a minute', () => {
    const m = describeStatus({
      status: 'AWAITING_PAYMENT',
      stage: 'CONFIRMING',
      deadline: iso(NOW + 600_000),
      now: NOW,
    });
    expect(m.code).toBe('CONFIRMING_PAYMENT');
    expect(m.phase).toBe('CONFIRMING');
    expect(m.user.en).toBe(
      'Payment received by the provider, confirming your order; this usually takes under a minute.',
    );
    expect(m.user.zh).toBe('已收到支付机构的付款通知，正在确认订单，通常不超过一分钟。');
    expect(m.expectedBy).toBe(iso(NOW + 60_000));
  });

  test('an order awaiting payment expects the deadline and tells support the deadline, next query and query count', () => {
    const deadline = iso(NOW + 15 * 60_000);
    const nextCheckAt = iso(NOW + 30_000);
    const m = describeStatus({
      status: 'AWAITING_PAYMENT',
      stage: 'AWAITING_PAYMENT',
      deadline,
      nextCheckAt,
      queryAttempts: 3,
      now: NOW,
    });
    expect(m.code).toBe('WAITING_FOR_PAYMENT');
    expect(m.phase).toBe('AWAITING_PAYMENT');
    expect(m.expectedBy).toBe(deadline);
    expect(m.support.en).toContain(`deadline ${deadline} (in 15 min)`);
    expect(m.support.en).toContain(`next provider query ${nextCheckAt} (in 30s)`);
    expect(m.support.en).toContain('3 provider queries so far');
    expect(m.support.zh).toContain(`付款截止 ${deadline}（15 分钟后）`);
    expect(m.support.zh).toContain('已主动查询 3 次');
  });

  test('the buyer reads the same texts while the provider is being queried, so the page does not flicker, but support sees the query', () => {
    const base = { status: 'AWAITING_PAYMENT', deadline: iso(NOW + 60_000), now: NOW } as const;
    const waiting = describeStatus({ ...base, stage: 'AWAITING_PAYMENT' });
    const querying = describeStatus({ ...base, stage: 'QUERYING_PROVIDER' });
    expect(querying.code).toBe('CHECKING_WITH_PROVIDER');
    expect([querying.user, querying.next, querying.expectedBy]).toEqual([
      waiting.user,
      waiting.next,
      waiting.expectedBy,
    ]);
    expect(querying.support.en).toMatch(/active query to the provider is running/);
    expect(waiting.support.en).not.toMatch(/active query to the provider is running/);
  });

  test('an order still awaiting payment after its deadline is described as closing, with the refund promise', () => {
    const m = describeStatus({
      status: 'AWAITING_PAYMENT',
      stage: 'AWAITING_PAYMENT',
      deadline: iso(NOW - 1_000),
      now: NOW,
    });
    expect(m.code).toBe('DEADLINE_REACHED');
    expect(m.next.en).toMatch(/refunded automatically/);
    expect(m.expectedBy).toBe(iso(NOW + 60_000));
  });

  test('stages before the payment exists show the reserving phase', () => {
    for (const stage of ['CREATING_ORDER', 'RESERVING', 'CREATING_PAYMENT']) {
      const m = describeStatus({ status: 'AWAITING_PAYMENT', stage, now: NOW });
      expect([m.code, m.phase]).toEqual(['SETTING_UP', 'RESERVING']);
    }
  });

  test('a failed refund in review promises the money back, never a confirmation, and names the only decision', () => {
    const m = describeStatus({ status: 'NEEDS_REVIEW', statusReason: 'REFUND_FAILED', now: NOW });
    expect([m.code, m.phase]).toEqual(['REFUND_FAILED', 'CONFIRMING']);
    for (const text of [m.user.en, m.next.en]) {
      expect(text).toMatch(/refund/i);
      expect(text).not.toMatch(/confirm/i);
    }
    expect(m.support.en).toMatch(/approve is refused/);
    expect(m.support.en).toMatch(/refundAmount 0/);
  });

  test('review, cooling-off and refunding stages get their own messages', () => {
    expect(
      describeStatus({ status: 'NEEDS_REVIEW', stage: 'AWAITING_REVIEW', statusReason: 'PAYMENT_MISMATCH', now: NOW })
        .code,
    ).toBe('PAYMENT_MISMATCH');
    expect(
      describeStatus({ status: 'NEEDS_REVIEW', stage: 'AWAITING_REVIEW', statusReason: 'TCC_CONFLICT', now: NOW })
        .support.en,
    ).toContain('TCC_CONFLICT');
    expect(describeStatus({ status: 'NEEDS_REVIEW', stage: 'CONFIRMING', now: NOW }).code).toBe(
      'REVIEW_APPROVED_CONFIRMING',
    );
    const cooling = describeStatus({
      status: 'PAID',
      stage: 'COOLING_OFF',
      coolingOffUntil: iso(NOW + 1_800_000),
      now: NOW,
    });
    expect(cooling.code).toBe('PAID_COOLING_OFF');
    expect(cooling.expectedBy).toBe(iso(NOW + 1_800_000));
    expect(cooling.user.zh).toMatch(/冷静期/);
    expect(describeStatus({ status: 'PAID', stage: 'REFUNDING', now: NOW }).code).toBe('REFUNDING');
    expect(describeStatus({ status: 'EXPIRED', stage: 'REFUNDING', now: NOW }).code).toBe('REFUNDING');
  });

  test('a failed order says no money was taken and names out-of-stock when that was the reason', () => {
    const out = describeStatus({ status: 'FAILED', statusReason: 'OUT_OF_STOCK', now: NOW });
    expect(out.code).toBe('FAILED_OUT_OF_STOCK');
    expect(out.user.en).toMatch(/out of stock.*No money was taken/);
    expect(describeStatus({ status: 'FAILED', statusReason: 'PAYMENT_CREATION_FAILED', now: NOW }).user.zh).toMatch(
      /未扣任何款项/,
    );
  });

  test('unknown statuses and stages, prototype names and bad dates are described generically instead of throwing', () => {
    const m = describeStatus({
      status: 'SHIPPED_TO_MARS',
      stage: 'constructor',
      deadline: 'not a date',
      nextCheckAt: '',
      now: 'garbage',
    });
    expect(m.code).toBe('UNKNOWN');
    expect(m.phase).toBe('AWAITING_PAYMENT');
    expect(m.support.en).toContain('status SHIPPED_TO_MARS; stage constructor.');
    expect(describeStatus({ status: 'SHIPPED_TO_MARS', stage: 'COOLING_OFF', now: NOW }).phase).toBe('DONE');
    expect(describeStatus({ status: 'PAID', stage: 'SOME_FUTURE_STAGE', now: NOW }).code).toBe('PAID');
  });

  test('USER_MESSAGES keeps one English message per status for earlier callers', () => {
    expect(Object.keys(USER_MESSAGES).sort()).toEqual([...STATUSES].sort());
    expect(USER_MESSAGES.PAID).toBe('Payment received and your order is confirmed.');
    expect(USER_MESSAGES.EXPIRED).toMatch(/refunded automatically/);
  });

  test('the module imports nothing at run time but the failure contract (deterministic too), so workflow code can use it', () => {
    const source = readFileSync(join(__dirname, '..', 'src', 'contracts', 'messages.ts'), 'utf8');
    const imports = source.match(/^import .*$/gm) ?? [];
    expect(imports.length).toBeGreaterThan(0);
    for (const line of imports) expect(line).toMatch(/^import type |^import \{ FailureType \} from '\.\/failures';$/);
    expect(source).not.toMatch(/\brequire\(|\bprocess\.|Date\.now\(|new Date\(\)/);
  });
});
