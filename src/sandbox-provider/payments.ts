/**
 * The sandbox's in-memory ledger of payments and refunds and their state rules (modelled on
 * Alipay/WeChat: idempotent create and refund, lazy expiry, close only while unpaid).
 */
import { randomInt } from 'node:crypto';
import {
  type CreatePaymentRequest,
  type QueryPaymentResponse,
  type RefundRequest,
  type RefundResponse,
  type SandboxPaymentStatus,
  SandboxErrorCode,
} from '../contracts/sandbox';
import { SandboxApiError, SandboxLocalErrorCode, tradeNotExist } from './errors';
import { chinaDateStamp } from './china-time';

/** Which late payments the provider still takes (fault settings `acceptPaymentAfterClose` / `...AfterExpiry`). */
export interface LatePayments {
  afterClose: boolean;
  afterExpiry: boolean;
}

/** One payment as the sandbox stores it. */
export interface Payment {
  outTradeNo: string;
  tradeNo: string;
  amount: number;
  currency: string;
  merchantId: string;
  notifyUrl: string;
  subject?: string;
  createdAt: Date;
  expiresAt: Date;
  status: SandboxPaymentStatus;
  /** What the buyer paid; differs from amount only when a test tampers with it. */
  paidAmount: number | null;
  paidAt: Date | null;
  /** The status the payment had when it was paid (what a lagging query still answers). */
  statusBeforePaid?: SandboxPaymentStatus;
  refundedAmount: number;
}

/** One refund; `response` is replayed verbatim for a retried outRefundNo. */
export interface Refund {
  outRefundNo: string;
  outTradeNo: string;
  amount: number;
  refundedAt: Date;
  response: RefundResponse;
}

/** Payments and refunds in memory, keyed by the merchant's ids. */
export class PaymentLedger {
  private readonly payments = new Map<string, Payment>();
  private readonly refunds = new Map<string, Refund>();
  private readonly providerIds = new Set<string>();

  constructor(private readonly now: () => Date) {}

  /** Creates a payment, or returns the existing one when the same order is created again. */
  create(request: CreatePaymentRequest): Payment {
    const existing = this.find(request.outTradeNo);
    if (existing) return this.sameOrderOrConflict(existing, request);
    const now = this.now();
    const expiresAt = new Date(request.expiresAt);
    if (expiresAt.getTime() <= now.getTime()) {
      throw new SandboxApiError(
        400,
        SandboxErrorCode.VALIDATION_FAILED,
        `expiresAt ${request.expiresAt} is not in the future`,
      );
    }
    const payment: Payment = {
      outTradeNo: request.outTradeNo,
      tradeNo: this.newProviderId('SBX', now),
      amount: request.amount,
      currency: request.currency,
      merchantId: request.merchantId,
      notifyUrl: request.notifyUrl,
      subject: request.subject,
      createdAt: now,
      expiresAt,
      status: 'WAIT_BUYER_PAY',
      paidAmount: null,
      paidAt: null,
      refundedAmount: 0,
    };
    this.payments.set(payment.outTradeNo, payment);
    return payment;
  }

  /** The payment, with lazy expiry applied; undefined when unknown. */
  find(outTradeNo: string): Payment | undefined {
    const payment = this.payments.get(outTradeNo);
    // Like real providers, nothing runs at expiry time: whoever looks next sees it closed.
    if (payment?.status === 'WAIT_BUYER_PAY' && payment.expiresAt.getTime() <= this.now().getTime()) {
      payment.status = 'CLOSED';
    }
    return payment;
  }

  /**
   * Whether the buyer can still pay: an open payment can; a closed one only while `late` allows it, and
   * past the provider-side expiry only with `afterExpiry` (nothing settles after expiresAt otherwise).
   */
  isPayable(payment: Payment, late: LatePayments): boolean {
    if (payment.status === 'WAIT_BUYER_PAY') return true;
    if (payment.status !== 'CLOSED') return false;
    if (late.afterExpiry) return true;
    return late.afterClose && this.now().getTime() < payment.expiresAt.getTime();
  }

  /** Closes an unpaid payment; closing a closed one is a no-op; a paid one is refused with ORDER_PAID. */
  close(outTradeNo: string): Payment {
    const payment = this.require(outTradeNo);
    if (payment.status === 'SUCCESS' || payment.status === 'REFUNDED') {
      throw new SandboxApiError(
        409,
        SandboxErrorCode.ORDER_PAID,
        `Payment ${outTradeNo} is already paid; refund it instead of closing`,
      );
    }
    payment.status = 'CLOSED';
    return payment;
  }

  /** The buyer pays `amount` (default: the order amount); a closed payment is payable only as `late` allows. */
  pay(outTradeNo: string, amount: number | undefined, late: LatePayments): Payment {
    const payment = this.require(outTradeNo);
    if (payment.status === 'SUCCESS' || payment.status === 'REFUNDED') {
      throw new SandboxApiError(409, SandboxLocalErrorCode.TRADE_ALREADY_PAID, `Payment ${outTradeNo} is already paid`);
    }
    if (!this.isPayable(payment, late)) {
      throw new SandboxApiError(
        409,
        SandboxErrorCode.TRADE_CLOSED,
        `Payment ${outTradeNo} is closed or expired and can no longer be paid`,
      );
    }
    payment.statusBeforePaid = payment.status;
    payment.status = 'SUCCESS';
    payment.paidAmount = amount ?? payment.amount;
    payment.paidAt = this.now();
    return payment;
  }

  /** Refunds part or all of a paid payment; a retried outRefundNo returns the first answer and refunds nothing more. */
  refund(request: RefundRequest): RefundResponse {
    const earlier = this.refunds.get(request.outRefundNo);
    if (earlier) return this.sameRefundOrConflict(earlier, request);
    const payment = this.require(request.outTradeNo);
    if (payment.paidAmount === null) {
      throw new SandboxApiError(
        409,
        SandboxErrorCode.TRADE_NOT_PAID,
        `Payment ${request.outTradeNo} is ${payment.status}; only paid payments can be refunded`,
      );
    }
    const refundable = payment.paidAmount - payment.refundedAmount;
    if (request.amount > refundable) {
      throw new SandboxApiError(
        409,
        SandboxErrorCode.REFUND_AMOUNT_EXCEEDED,
        `Refund of ${request.amount} exceeds the ${refundable} still refundable on ${request.outTradeNo}`,
      );
    }
    return this.recordRefund(payment, request);
  }

  /** Payments whose payment completed in [start, end). */
  paidBetween(start: Date, end: Date): Payment[] {
    return [...this.payments.values()].filter((p) => p.paidAt !== null && within(p.paidAt, start, end));
  }

  /** Refunds made in [start, end), each with its payment. */
  refundedBetween(start: Date, end: Date): Array<{ refund: Refund; payment: Payment }> {
    return [...this.refunds.values()]
      .filter((r) => within(r.refundedAt, start, end))
      .map((refund) => ({ refund, payment: this.payments.get(refund.outTradeNo)! }));
  }

  private require(outTradeNo: string): Payment {
    const payment = this.find(outTradeNo);
    if (!payment) throw tradeNotExist(outTradeNo);
    return payment;
  }

  private sameOrderOrConflict(existing: Payment, request: CreatePaymentRequest): Payment {
    const same =
      existing.amount === request.amount &&
      existing.currency === request.currency &&
      existing.merchantId === request.merchantId;
    if (same) return existing;
    throw new SandboxApiError(
      409,
      SandboxErrorCode.OUT_TRADE_NO_USED,
      `outTradeNo ${request.outTradeNo} is already used by a payment with a different amount, currency or merchant`,
    );
  }

  private sameRefundOrConflict(earlier: Refund, request: RefundRequest): RefundResponse {
    if (earlier.outTradeNo === request.outTradeNo && earlier.amount === request.amount) return earlier.response;
    throw new SandboxApiError(
      409,
      SandboxErrorCode.REFUND_NO_CONFLICT,
      `outRefundNo ${request.outRefundNo} was already used for ${earlier.amount} on ${earlier.outTradeNo}; reuse a number only to retry the same refund`,
    );
  }

  private recordRefund(payment: Payment, request: RefundRequest): RefundResponse {
    const refundedAt = this.now();
    const response: RefundResponse = {
      outRefundNo: request.outRefundNo,
      outTradeNo: request.outTradeNo,
      refundNo: this.newProviderId('SBXR', refundedAt),
      amount: request.amount,
      status: 'SUCCESS',
      refundedAt: refundedAt.toISOString(),
    };
    this.refunds.set(request.outRefundNo, {
      outRefundNo: request.outRefundNo,
      outTradeNo: request.outTradeNo,
      amount: request.amount,
      refundedAt,
      response,
    });
    payment.refundedAmount += request.amount;
    if (payment.refundedAmount === payment.paidAmount) payment.status = 'REFUNDED';
    return response;
  }

  /** `<prefix><yyyymmdd in China time><12 random digits>`, unique within this sandbox. */
  private newProviderId(prefix: string, at: Date): string {
    for (;;) {
      const id = `${prefix}${chinaDateStamp(at)}${String(randomInt(0, 1e12)).padStart(12, '0')}`;
      if (!this.providerIds.has(id)) {
        this.providerIds.add(id);
        return id;
      }
    }
  }
}

/**
 * The `GET /v1/payments/:outTradeNo` view of a payment; with a query lag (`queryLagMs`), a payment paid less than that
 * long before `now` is answered as it was before it was paid.
 */
export function toQueryResponse(payment: Payment, lag?: { ms: number; now: Date }): QueryPaymentResponse {
  if (lag && lag.ms > 0 && payment.paidAt && lag.now.getTime() - payment.paidAt.getTime() < lag.ms)
    return {
      ...toQueryResponse(payment),
      status: payment.statusBeforePaid ?? 'WAIT_BUYER_PAY',
      paidAmount: null,
      paidAt: null,
      refundedAmount: 0,
    };
  return {
    outTradeNo: payment.outTradeNo,
    tradeNo: payment.tradeNo,
    status: payment.status,
    amount: payment.amount,
    paidAmount: payment.paidAmount,
    currency: payment.currency,
    merchantId: payment.merchantId,
    paidAt: payment.paidAt?.toISOString() ?? null,
    refundedAmount: payment.refundedAmount,
    expiresAt: payment.expiresAt.toISOString(),
  };
}

function within(at: Date, start: Date, end: Date): boolean {
  return at.getTime() >= start.getTime() && at.getTime() < end.getTime();
}
