/**
 * Stripe adapter on the official `stripe` SDK: PaymentIntents for create/query/close (cancel), refunds with an
 * Idempotency-Key (and a lookup by our refund number first, because Stripe keeps idempotency keys only 24 h),
 * webhook verification with `webhooks.constructEvent` (300 s tolerance), balance transactions as the bill.
 *
 * Mapping orders to PaymentIntents: each intent carries `metadata.out_trade_no` (our order id), which is how a
 * webhook names its order. Stripe cannot look an intent up by metadata consistently (search is eventually
 * consistent), so query/close/refund find the intent id by, in order: the `findPaymentIntentId` hook (the
 * payments table: trade_no = intent id, when createProviders is given the database), this process's own
 * memory of intents it created, then Stripe's search API.
 *
 * PaymentIntents have no provider-side expiry: the deadline is enforced by our close (a cancelled intent can
 * never be paid); `metadata.expires_at` records it for people reading the Dashboard.
 */
import Stripe from 'stripe';
import { z } from 'zod';
import { currencyExponent } from '../shared/money';
import { OrderId } from '../contracts/order';
import type { StripeConfig } from './config';
import { ProviderUnavailableError } from './http';
import {
  type BillRow,
  type BillSource,
  type CloseResult,
  type CreatePaymentInput,
  type PaymentNotification,
  type PaymentProvider,
  type ProviderNotice,
  type ProviderPaymentState,
  type RefundInput,
  ProviderBusinessError,
} from './types';
import { accept, refuse } from './verdict';

/** Stripe's webhook timestamp tolerance (its default). */
export const STRIPE_TOLERANCE_SECONDS = 300;

/** Currencies Stripe takes in whole units (no x100). */
const STRIPE_ZERO_DECIMAL = new Set([
  'BIF',
  'CLP',
  'DJF',
  'GNF',
  'JPY',
  'KMF',
  'KRW',
  'MGA',
  'PYG',
  'RWF',
  'UGX',
  'VND',
  'VUV',
  'XAF',
  'XOF',
  'XPF',
]);
/** Currencies Stripe takes with three decimals (the last digit must be 0). */
const STRIPE_THREE_DECIMAL = new Set(['BHD', 'JOD', 'KWD', 'OMR', 'TND']);

/** Decimal places of Stripe's `amount` for a currency. ISK, HUF and TWD are two-decimal at the API by Stripe's rule. */
export function stripeExponent(currency: string): number {
  const c = currency.toUpperCase();
  return STRIPE_ZERO_DECIMAL.has(c) ? 0 : STRIPE_THREE_DECIMAL.has(c) ? 3 : 2;
}

/** Our minor units -> Stripe's amount, exactly; throws when the amount cannot be expressed (e.g. 0.5 of a unit). */
export function toStripeAmount(minor: number, currency: string): number {
  const shift = stripeExponent(currency) - currencyExponent(currency.toUpperCase());
  if (shift >= 0) return minor * 10 ** shift;
  const unit = 10 ** -shift;
  if (minor % unit !== 0)
    throw new ProviderBusinessError(
      'AMOUNT_NOT_REPRESENTABLE',
      `${minor} minor units of ${currency} is not a whole amount at Stripe`,
    );
  return minor / unit;
}

/** Stripe's amount -> our minor units, exactly; undefined when it has a fraction of our minor unit. */
export function fromStripeAmount(amount: number, currency: string): number | undefined {
  if (!Number.isSafeInteger(amount) || amount < 0) return undefined;
  const shift = stripeExponent(currency) - currencyExponent(currency.toUpperCase());
  if (shift <= 0) return amount * 10 ** -shift;
  const unit = 10 ** shift;
  return amount % unit === 0 ? amount / unit : undefined;
}

/**
 * A Stripe Refund's status as a bill states a refund's outcome: as a webhook reports it, and FAILED for any status
 * Stripe has not documented (a bill line is never taken as done unless it says so).
 */
function stripeRefundStatus(status: string): 'SUCCEEDED' | 'PROCESSING' | 'FAILED' {
  return stripeRefundNoticeOutcome(status) ?? 'FAILED';
}

/**
 * A Refund's status as a webhook reports it, strictly: succeeded, pending/requires_action (PROCESSING), failed or
 * canceled (FAILED); undefined for a status Stripe has not documented (the notice then changes nothing).
 */
function stripeRefundNoticeOutcome(status: unknown): 'SUCCEEDED' | 'PROCESSING' | 'FAILED' | undefined {
  switch (status) {
    case 'succeeded':
      return 'SUCCEEDED';
    case 'pending':
    case 'requires_action':
      return 'PROCESSING';
    case 'failed':
    case 'canceled':
      return 'FAILED';
    default:
      return undefined;
  }
}

/** Options of the Stripe adapter. */
export interface StripeProviderOptions extends StripeConfig {
  timeoutMs?: number;
  /** Finds the PaymentIntent id of an order (e.g. from the payments table); undefined when unknown. */
  findPaymentIntentId?: (outTradeNo: string) => Promise<string | undefined>;
  /** Replaces the SDK's HTTP client (tests record the requests). */
  httpClient?: Stripe.HttpClient;
}

const Intent = z.object({
  id: z.string().startsWith('pi_'),
  object: z.literal('payment_intent'),
  amount_received: z.number().int().nonnegative(),
  currency: z.string().regex(/^[a-z]{3}$/),
  metadata: z.record(z.string(), z.string()),
  status: z.string(),
});

/** Creates the Stripe adapter. */
export function createStripeProvider(options: StripeProviderOptions): PaymentProvider & BillSource {
  const base = options.apiBase ? new URL(options.apiBase) : undefined;
  const stripe = new Stripe(options.secretKey.reveal(), {
    // One request per call, answered or failed within the timeout: retries are the activity's, declared with its
    // timeout (as for the other adapters). The SDK's own retries (2, backoff up to 5 s or a Retry-After up to 60 s,
    // 15 s a request) let one attempt run past the activity's 15 s: the next attempt then overlapped it, was
    // answered 409 for the shared Idempotency-Key and retried again, while the first kept calling Stripe.
    maxNetworkRetries: 0,
    timeout: options.timeoutMs ?? 10_000,
    telemetry: false,
    appInfo: { name: 'payflow' },
    ...(base
      ? {
          host: base.hostname,
          port: base.port || (base.protocol === 'https:' ? 443 : 80),
          protocol: base.protocol === 'https:' ? ('https' as const) : ('http' as const),
        }
      : {}),
    ...(options.httpClient ? { httpClient: options.httpClient } : {}),
  });
  const merchantId = options.accountId ?? `stripe-${options.livemode ? 'live' : 'test'}`;
  /** Intents created by this process, by order id (a cache: the database hook is the durable source). */
  const created = new Map<string, string>();

  /**
   * Stripe errors: connection/5xx/rate limit are retried; so is a 409, which Stripe answers while another request with
   * the same Idempotency-Key is still executing (an earlier attempt of this step that outlived its timeout): nothing
   * is saved for the key, and Stripe says to retry. The rest are business errors.
   */
  async function call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof Stripe.errors.StripeError) {
        const retryable =
          err instanceof Stripe.errors.StripeConnectionError ||
          err instanceof Stripe.errors.StripeAPIError ||
          err instanceof Stripe.errors.StripeRateLimitError ||
          err.statusCode === 409 ||
          (err.statusCode ?? 0) >= 500;
        if (retryable) throw new ProviderUnavailableError(`stripe ${what}: ${err.message}`);
        throw new ProviderBusinessError(err.code ?? err.type, `stripe ${what}: ${err.message}`);
      }
      throw err;
    }
  }

  async function findIntentId(outTradeNo: string): Promise<string | undefined> {
    const fromHook = await options.findPaymentIntentId?.(outTradeNo);
    if (fromHook) return fromHook;
    const cached = created.get(outTradeNo);
    if (cached) return cached;
    const found = await call('search payment intents', () =>
      stripe.paymentIntents.search({ query: `metadata['out_trade_no']:'${outTradeNo}'`, limit: 10 }),
    );
    const match = found.data.filter((pi) => pi.metadata?.out_trade_no === outTradeNo);
    if (match.length > 1)
      throw new ProviderBusinessError(
        'AMBIGUOUS_PAYMENT_INTENT',
        `${match.length} PaymentIntents carry out_trade_no ${outTradeNo}`,
      );
    return match[0]?.id;
  }

  async function retrieve(id: string, outTradeNo: string): Promise<Stripe.PaymentIntent> {
    const pi = await call('retrieve payment intent', () =>
      stripe.paymentIntents.retrieve(id, { expand: ['latest_charge'] }),
    );
    const owner = pi.metadata?.out_trade_no;
    if (owner && owner !== outTradeNo)
      throw new ProviderBusinessError(
        'PAYMENT_INTENT_MISMATCH',
        `PaymentIntent ${id} belongs to ${owner}, not ${outTradeNo}`,
      );
    return pi;
  }

  function minor(amount: number, currency: string, field: string): number {
    const value = fromStripeAmount(amount, currency);
    if (value === undefined)
      throw new ProviderUnavailableError(
        `stripe answered ${field}=${amount} ${currency}, which is not a whole number of minor units`,
      );
    return value;
  }

  return {
    name: 'stripe',
    merchantId,
    ack: { status: 200, contentType: 'application/json', body: '{"received":true}' },

    async createPayment(input: CreatePaymentInput) {
      const pi = await call('create payment intent', () =>
        stripe.paymentIntents.create(
          {
            amount: toStripeAmount(input.amount, input.currency),
            currency: input.currency.toLowerCase(),
            description: input.subject.slice(0, 1000),
            automatic_payment_methods: { enabled: true },
            metadata: { out_trade_no: input.outTradeNo, expires_at: input.expiresAt },
          },
          // The same order always gets the same intent, however often the activity retries (within Stripe's 24 h).
          { idempotencyKey: `payflow-create-${input.outTradeNo}` },
        ),
      );
      created.set(input.outTradeNo, pi.id);
      const url = new URL(options.paymentPageUrl);
      url.searchParams.set('payment_intent', pi.id);
      // Stripe.js needs the client secret in the buyer's browser; it is meant for exactly that and nothing else.
      if (pi.client_secret) url.searchParams.set('payment_intent_client_secret', pi.client_secret);
      return { tradeNo: pi.id, paymentUrl: url.toString() };
    },

    async queryPayment(outTradeNo: string): Promise<ProviderPaymentState> {
      const id = await findIntentId(outTradeNo);
      if (!id) return { outTradeNo, status: 'NOT_FOUND' };
      const pi = await retrieve(id, outTradeNo);
      const currency = pi.currency.toUpperCase();
      const common = { outTradeNo, tradeNo: pi.id, currency, merchantId };
      if (pi.status === 'succeeded') {
        const charge = typeof pi.latest_charge === 'object' && pi.latest_charge ? pi.latest_charge : undefined;
        const paidAmount = minor(pi.amount_received, pi.currency, 'amount_received');
        const refunded = charge ? minor(charge.amount_refunded, charge.currency, 'amount_refunded') : 0;
        const paidAt = new Date((charge?.created ?? pi.created) * 1000).toISOString();
        return refunded > 0 && refunded >= paidAmount
          ? { ...common, status: 'REFUNDED', paidAmount, paidAt, refundedAmount: refunded }
          : { ...common, status: 'PAID', paidAmount, paidAt, ...(refunded > 0 ? { refundedAmount: refunded } : {}) };
      }
      if (pi.status === 'canceled') return { ...common, status: 'CLOSED' };
      return { ...common, status: 'PENDING' };
    },

    async closePayment(outTradeNo: string): Promise<CloseResult> {
      const id = await findIntentId(outTradeNo);
      if (!id) return { result: 'NOT_FOUND' };
      const pi = await retrieve(id, outTradeNo);
      if (pi.status === 'succeeded') return { result: 'ALREADY_PAID' };
      if (pi.status === 'canceled') return { result: 'CLOSED' };
      // A processing intent can neither be cancelled nor called paid yet: retry until it settles.
      if (pi.status === 'processing')
        throw new ProviderUnavailableError(`stripe PaymentIntent ${id} is processing; cannot close it yet`);
      try {
        await call('cancel payment intent', () =>
          stripe.paymentIntents.cancel(id, { cancellation_reason: 'abandoned' }),
        );
      } catch (err) {
        if (err instanceof ProviderBusinessError && err.code === 'payment_intent_unexpected_state') {
          const again = await retrieve(id, outTradeNo);
          if (again.status === 'succeeded') return { result: 'ALREADY_PAID' };
          if (again.status === 'canceled') return { result: 'CLOSED' };
        }
        throw err;
      }
      return { result: 'CLOSED' };
    },

    async refund(input: RefundInput) {
      const id = await findIntentId(input.outTradeNo);
      if (!id) throw new ProviderBusinessError('PAYMENT_NOT_FOUND', `no PaymentIntent for ${input.outTradeNo}`);
      const pi = await retrieve(id, input.outTradeNo);
      // Idempotency keys live 24 h at Stripe; our refund number in metadata makes a later retry find the refund too.
      const existing = await call('list refunds', () => stripe.refunds.list({ payment_intent: id, limit: 100 }));
      let refund = existing.data.find((r) => r.metadata?.out_refund_no === input.outRefundNo);
      refund ??= await call('create refund', () =>
        stripe.refunds.create(
          {
            payment_intent: id,
            amount: toStripeAmount(input.amount, pi.currency.toUpperCase()),
            reason: 'requested_by_customer',
            metadata: {
              out_refund_no: input.outRefundNo,
              out_trade_no: input.outTradeNo,
              ...(input.reason ? { reason: input.reason.slice(0, 500) } : {}),
            },
          },
          { idempotencyKey: `payflow-refund-${input.outRefundNo}` },
        ),
      );
      if (refund.status === 'failed' || refund.status === 'canceled')
        throw new ProviderBusinessError(
          `REFUND_${refund.status.toUpperCase()}`,
          `stripe refund ${refund.id} is ${refund.status}`,
        );
      return {
        refundNo: refund.id,
        amount: minor(refund.amount, refund.currency, 'refund amount'),
        refundedAt: new Date(refund.created * 1000).toISOString(),
      };
    },

    verifyNotification(rawBody, headers, now) {
      const raw = headers['stripe-signature'];
      const signature = Array.isArray(raw) ? raw[0] : raw;
      if (!signature) return refuse('MISSING_SIGNATURE', 'no Stripe-Signature header');
      let event: Stripe.Event;
      try {
        event = stripe.webhooks.constructEvent(
          rawBody,
          signature,
          options.webhookSecret.reveal(),
          STRIPE_TOLERANCE_SECONDS,
          undefined,
          now.getTime(),
        );
      } catch (err) {
        if (!(err instanceof Stripe.errors.StripeSignatureVerificationError))
          return refuse('MALFORMED_BODY', 'body is not a Stripe event');
        const message = err.message;
        if (/tolerance/i.test(message)) return refuse('STALE_TIMESTAMP', 'timestamp outside the 300 s tolerance');
        if (/Unable to extract|expected scheme/i.test(message))
          return refuse('MALFORMED_SIGNATURE', 'Stripe-Signature header is malformed');
        return refuse('BAD_SIGNATURE', 'no signature matches the endpoint secret');
      }
      if (typeof event !== 'object' || event === null || typeof event.id !== 'string' || typeof event.type !== 'string')
        return refuse('MALFORMED_BODY', 'not a Stripe event');
      if (event.livemode !== options.livemode)
        return refuse(
          'WRONG_MERCHANT',
          `a ${event.livemode ? 'live' : 'test'}-mode event for a ${options.livemode ? 'live' : 'test'}-mode account`,
        );
      // Our own account's events carry no `account`; a Connect endpoint also delivers connected accounts' events, which
      // carry theirs. Without STRIPE_ACCOUNT_ID every such event is another account's: its metadata (out_trade_no,
      // amount) is whatever that account wrote, and accepting it would mark our order PAID for money held elsewhere.
      if (event.account && event.account !== options.accountId)
        return refuse('WRONG_MERCHANT', `event is for account ${event.account}, not ours`);
      const object = (event.data?.object ?? {}) as unknown as Record<string, unknown>;
      const metadata = (object.metadata ?? {}) as Record<string, unknown>;
      const outTradeNo = typeof metadata.out_trade_no === 'string' ? metadata.out_trade_no : undefined;
      const notice = (kind: ProviderNotice['kind'], extra: Partial<ProviderNotice> = {}): ProviderNotice => ({
        provider: 'stripe',
        notificationId: event.id,
        kind,
        providerEvent: event.type,
        merchantId,
        ...(outTradeNo ? { outTradeNo } : {}),
        ...(typeof object.id === 'string' ? { tradeNo: object.id } : {}),
        at: new Date(event.created * 1000).toISOString(),
        ...extra,
      });
      // refund.created / refund.updated / refund.failed and charge.refund.updated carry the Refund itself: its
      // status, and our refund number in its metadata (refund() puts it there).
      if (object.object === 'refund') {
        const r = object as Partial<
          Record<'id' | 'amount' | 'currency' | 'status' | 'payment_intent' | 'failure_reason', unknown>
        >;
        const currency = typeof r.currency === 'string' ? r.currency.toUpperCase() : undefined;
        const amount = typeof r.amount === 'number' && currency ? fromStripeAmount(r.amount, currency) : undefined;
        const outcome = stripeRefundNoticeOutcome(r.status);
        // The event's object id is the refund's, not a trade's.
        const { tradeNo: _refundId, ...base } = notice('REFUND');
        return refuse('UNSUPPORTED_EVENT', `${event.type}: a refund's outcome (${String(r.status)}), not a payment`, {
          ...base,
          ...(typeof r.payment_intent === 'string' ? { tradeNo: r.payment_intent } : {}),
          ...(typeof r.id === 'string' ? { refundNo: r.id } : {}),
          ...(typeof metadata.out_refund_no === 'string' && metadata.out_refund_no
            ? { outRefundNo: metadata.out_refund_no }
            : {}),
          ...(amount === undefined ? {} : { refundedAmount: amount }),
          ...(currency ? { currency } : {}),
          ...(outcome ? { refundStatus: outcome } : {}),
          ...(typeof r.failure_reason === 'string' ? { failureReason: r.failure_reason.slice(0, 200) } : {}),
        });
      }
      switch (event.type) {
        case 'payment_intent.succeeded': {
          const parsed = Intent.safeParse(object);
          if (!parsed.success)
            return refuse(
              'MALFORMED_BODY',
              `data.object.${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`,
            );
          const pi = parsed.data;
          // Every event of the account reaches the endpoint: a Dashboard charge, a Payment Link, an invoice carry no
          // order of ours (or an id no order of ours can have). Verified, so acknowledged as a notice and logged: a 4xx
          // had Stripe redeliver it for three days, and a 64+ character id failed the inbox insert with a 500.
          const ours = OrderId.safeParse(pi.metadata.out_trade_no);
          if (!ours.success)
            return refuse(
              'UNSUPPORTED_EVENT',
              `PaymentIntent ${pi.id} names no order of ours (metadata.out_trade_no ${JSON.stringify(pi.metadata.out_trade_no ?? null).slice(0, 80)})`,
              notice('OTHER', { outTradeNo: undefined }),
            );
          const amount = fromStripeAmount(pi.amount_received, pi.currency);
          if (amount === undefined)
            return refuse(
              'MALFORMED_BODY',
              `amount_received ${pi.amount_received} is not a whole number of ${pi.currency.toUpperCase()} minor units`,
            );
          const notification: PaymentNotification = {
            provider: 'stripe',
            notificationId: event.id,
            outTradeNo: ours.data,
            tradeNo: pi.id,
            amount,
            currency: pi.currency.toUpperCase(),
            merchantId,
            paidAt: new Date(event.created * 1000).toISOString(),
          };
          return accept(notification);
        }
        case 'payment_intent.canceled':
          return refuse(
            'UNSUPPORTED_EVENT',
            'payment_intent.canceled: no order changes',
            notice('TRADE_CLOSED', { closeReason: 'UNPAID' }),
          );
        case 'payment_intent.payment_failed':
          return refuse(
            'UNSUPPORTED_EVENT',
            'payment_intent.payment_failed: the buyer may try again',
            notice('PAYMENT_FAILED'),
          );
        case 'charge.refunded': {
          const charge = object as unknown as Stripe.Charge;
          const refunded = fromStripeAmount(charge.amount_refunded, charge.currency);
          return refuse(
            'UNSUPPORTED_EVENT',
            'charge.refunded: refunds change no order',
            notice('REFUND', {
              ...(refunded === undefined ? {} : { refundedAmount: refunded }),
              currency: charge.currency?.toUpperCase(),
              ...(typeof charge.payment_intent === 'string' ? { tradeNo: charge.payment_intent } : {}),
            }),
          );
        }
        default:
          return refuse(
            'UNSUPPORTED_EVENT',
            `${event.type} is not handled (subscribe the endpoint to payment_intent.succeeded, refund.updated, refund.failed and charge.refund.updated)`,
            notice(event.type.startsWith('refund.') ? 'REFUND' : 'OTHER'),
          );
      }
    },

    /**
     * Balance transactions created that UTC day: charges/payments as PAYMENT rows, refunds as REFUND rows with the
     * refund's status, refund_failure lines as FAILED REFUND rows of their own, a dispute's lines (money withdrawn,
     * money reinstated) as DISPUTE rows.
     */
    async *billRows(date: string, billOptions?: { fromRow?: number }): AsyncGenerator<BillRow> {
      const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
      if (!m) throw new ProviderBusinessError('BAD_BILL_DATE', `bill date ${date} is not YYYY-MM-DD`);
      const start = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) / 1000;
      let index = 0;
      let startingAfter: string | undefined;
      for (;;) {
        const page = await call('list balance transactions', () =>
          stripe.balanceTransactions.list(
            {
              created: { gte: start, lt: start + 86_400 },
              limit: 100,
              // The intent carries our order id for certain; whether a charge copies its metadata is not something to
              // bet on. A dispute names the disputed intent itself (its `payment_intent`), so this expands that too.
              expand: ['data.source.payment_intent'],
              ...(startingAfter ? { starting_after: startingAfter } : {}),
            },
            // A page is retried where it failed (a 429, a 5xx): the bill's activity has hours, and a failed attempt
            // starts the download again from its first page.
            { maxNetworkRetries: 3 },
          ),
        );
        for (const txn of page.data) {
          const row = billRow(txn);
          if (row && index++ >= (billOptions?.fromRow ?? 0)) yield row;
        }
        if (!page.has_more || page.data.length === 0) break;
        startingAfter = page.data[page.data.length - 1]!.id;
      }
    },
  };

  /**
   * One balance transaction as a bill row, in the charge's own (presentment) currency; undefined for types that move
   * no money of an order (payouts, fees, transfers, ...).
   */
  function billRow(txn: Stripe.BalanceTransaction): BillRow | undefined {
    const source =
      txn.source && typeof txn.source === 'object' ? (txn.source as unknown as Record<string, unknown>) : undefined;
    if (!source) return undefined;
    const at = new Date(txn.created * 1000).toISOString();
    if (source.object === 'dispute') return disputeRow(txn, source, at);
    const metadata = (source.metadata ?? {}) as Record<string, string>;
    const pi =
      source.payment_intent && typeof source.payment_intent === 'object'
        ? (source.payment_intent as { id?: string; metadata?: Record<string, string> })
        : undefined;
    const intent = typeof source.payment_intent === 'string' ? source.payment_intent : (pi?.id ?? '');
    const outTradeNo = pi?.metadata?.out_trade_no ?? metadata.out_trade_no ?? '';
    const currency = String(source.currency ?? txn.currency).toUpperCase();
    const amount = typeof source.amount === 'number' ? fromStripeAmount(source.amount, currency) : undefined;
    if ((txn.type === 'charge' || txn.type === 'payment') && source.object === 'charge') {
      if (amount === undefined)
        throw new Error(`stripe balance transaction ${txn.id}: charge amount is not whole minor units`);
      // A bank debit (ACH, SEPA, ...) has its balance transaction from the moment it is submitted, pending until the
      // charge succeeds or fails (Stripe: rely on the charge's status for success): such a line is not money received.
      const chargeStatus = typeof source.status === 'string' ? source.status : undefined;
      return {
        kind: 'PAYMENT',
        outTradeNo,
        tradeNo: intent || String(source.id),
        amount,
        currency,
        at,
        ...(chargeStatus && chargeStatus !== 'succeeded' ? { providerStatus: chargeStatus } : {}),
      };
    }
    // A refund_failure line returns a refund's money to our balance: the buyer never got it. It is kept as a FAILED
    // row of its own (reconciled as a REFUND_MISMATCH), never dropped, so a refund that failed later cannot stay MATCHED.
    const failureLine = txn.type === 'refund_failure';
    if ((txn.type === 'refund' || txn.type === 'payment_refund' || failureLine) && source.object === 'refund') {
      if (amount === undefined)
        throw new Error(`stripe balance transaction ${txn.id}: refund amount is not whole minor units`);
      const status = typeof source.status === 'string' ? source.status : undefined;
      const refundStatus = failureLine ? 'FAILED' : status === undefined ? undefined : stripeRefundStatus(status);
      return {
        kind: 'REFUND',
        outTradeNo,
        tradeNo: intent,
        ...(metadata.out_refund_no ? { outRefundNo: metadata.out_refund_no } : {}),
        amount,
        currency,
        at,
        ...(refundStatus ? { refundStatus } : {}),
        ...(failureLine ? { providerStatus: 'refund_failure', refundFailureLine: true as const } : {}),
        ...(!failureLine && status ? { providerStatus: status } : {}),
      };
    }
    return undefined;
  }

  /**
   * A balance transaction whose source is a Dispute (a chargeback; type `adjustment`, or `dispute` in older API
   * versions), whatever its type, so that none is dropped: money withdrawn from our balance for the disputed payment
   * (a negative amount) or given back because the dispute was won (positive). The row's amount is the dispute's, in
   * the charge's presentment currency like the charge's own row; the order is named by the disputed PaymentIntent's
   * metadata (the dispute's `payment_intent`, which the list call expands, else that of an expanded charge). A dispute
   * that names no order of ours is still a row, with an empty out-trade-no, for a person to look at.
   */
  function disputeRow(txn: Stripe.BalanceTransaction, dispute: Record<string, unknown>, at: string): BillRow {
    type IntentView = { id?: string; metadata?: Record<string, string> };
    const charge =
      dispute.charge && typeof dispute.charge === 'object'
        ? (dispute.charge as { id?: string; payment_intent?: unknown; metadata?: Record<string, string> })
        : undefined;
    const expanded = (v: unknown) => (v && typeof v === 'object' ? (v as IntentView) : undefined);
    const idOf = (v: unknown) => (typeof v === 'string' ? v : expanded(v)?.id);
    const pi = expanded(dispute.payment_intent) ?? expanded(charge?.payment_intent);
    const tradeNo =
      idOf(dispute.payment_intent) ?? idOf(charge?.payment_intent) ?? idOf(dispute.charge) ?? String(dispute.id);
    const currency = String(dispute.currency ?? txn.currency).toUpperCase();
    const amount = typeof dispute.amount === 'number' ? fromStripeAmount(dispute.amount, currency) : undefined;
    if (amount === undefined)
      throw new Error(`stripe balance transaction ${txn.id}: dispute amount is not whole minor units`);
    return {
      kind: 'DISPUTE',
      outTradeNo: pi?.metadata?.out_trade_no ?? charge?.metadata?.out_trade_no ?? '',
      tradeNo,
      disputeId: String(dispute.id),
      // Only money coming back is a reinstatement; anything else is taken for a withdrawal, which a person looks at.
      disputeFunds: txn.amount > 0 ? 'REINSTATED' : 'WITHDRAWN',
      amount,
      currency,
      at,
      ...(typeof dispute.status === 'string' ? { providerStatus: dispute.status } : {}),
    };
  }
}
