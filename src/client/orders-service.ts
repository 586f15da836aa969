/** Starting and steering order workflows from the API, and reading orders for it. */
import { bySkuOrder, jsonColumn } from '../db/json';
import { createHash, randomBytes } from 'node:crypto';
import {
  type Client,
  WithStartWorkflowOperation,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  WorkflowUpdateRPCTimeoutOrCancelledError,
} from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { Knex } from 'knex';
import { type Config, ORDER_START_TIMEOUT_MS } from '../config';
import { fingerprintOf, keyedTry } from '../db/idempotency';
import { FAILURES, FailureType } from '../contracts/failures';
import { type StatusMessages, describeStatus } from '../contracts/messages';
import {
  type CreateOrderRequest,
  type OrderPaymentInput,
  type OrderStatus,
  type OrderWorkflowStatus,
  type PaymentReady,
  ORDER_WORKFLOW_TYPE,
  REVIEW_ROUND_ENTRIES,
  cancelOrderUpdate,
  orderWorkflowId,
  paymentReadyUpdate,
  statusQuery,
} from '../contracts/order';
import { OrderStatusKey, PaymentProviderKey } from '../contracts/search-attributes';
import type { ProviderRegistry } from '../providers/types';
import { isTemporalRefusal, withTemporalDeadline } from '../temporal/calls';
import type { OrderProviderCache } from '../temporal/route-notification';
import type { orderLifecycleV2 } from '../workflows';
import {
  AvailabilityReads,
  BatchedReads,
  type KeyProbe,
  probeKeys,
  ReservationGate,
  TrySlots,
  availableUnits,
  outOfStockError,
  releaseReservation,
  releaseUnlessOwned,
  reservationOf,
  reserveBeforeStart,
  shortLine,
} from './admission';
import { ApiError, apiFailure, idempotencyKeyReused, orderFailedError, orderRefusalError } from './errors';
import { publicTimelineMessage } from './public-timeline';
import { LiveStatusCache } from './live-status';

/** New order ids sort by creation time: `ord_<time base36><random>`. */
export function newOrderId(): string {
  return `ord_${Date.now().toString(36)}${randomBytes(8).toString('hex')}`;
}

/**
 * What anyone holding an order id may read (GET /orders/:id, the waiting page): the order without the shop's id of the
 * buyer, which may be an email address or a phone number, while the order id travels on cashier URLs, receipts and bills.
 */
export function publicOrderView(order: OrderView): Omit<OrderView, 'userId'> {
  const { userId: _buyer, ...shown } = order;
  return shown;
}

/** The same (user, Idempotency-Key) always names the same order. */
export function orderIdForIdempotencyKey(userId: string, key: string): string {
  return `ord_k${createHash('sha256').update(`${userId}\u0000${key}`).digest('hex').slice(0, 32)}`;
}

/**
 * What a request with an Idempotency-Key asks for, as one string to compare with the key's first request: SHA-256 of
 * the user id, the merged lines sorted by SKU, the provider, the coupon code and the points. Two bodies that differ
 * only in how they list the same lines are the same request.
 */
export function requestFingerprint(
  request: Pick<CreateOrderRequest, 'userId' | 'provider' | 'couponCode' | 'points'>,
  items: { sku: string; quantity: number }[],
): string {
  const lines = mergeItems(items)
    .sort((a, b) => (a.sku < b.sku ? -1 : a.sku > b.sku ? 1 : 0))
    .map((i) => [i.sku, i.quantity]);
  const normalised = [request.userId, lines, request.provider, request.couponCode ?? null, request.points ?? null];
  return createHash('sha256').update(JSON.stringify(normalised)).digest('hex');
}

/** Merges repeated SKUs into one line each, keeping first-seen order. */
export function mergeItems(items: { sku: string; quantity: number }[]): { sku: string; quantity: number }[] {
  const merged = new Map<string, number>();
  for (const item of items) merged.set(item.sku, (merged.get(item.sku) ?? 0) + item.quantity);
  return [...merged].map(([sku, quantity]) => ({ sku, quantity }));
}

/** The order as GET /orders/:id returns it. */
export interface OrderView {
  orderId: string;
  userId: string;
  status: OrderStatus;
  statusReason: string | null;
  amount: number;
  currency: string;
  items: { sku: string; quantity: number; unitPrice: number }[];
  payment: {
    provider: string;
    paymentUrl: string | null;
    expiresAt: string | null;
    status: string | null;
    tradeNo: string | null;
    paidAmount: number | null;
  } | null;
  timeline: { at: string; type: string; message: string }[];
  userMessage: string;
  /** What to tell the buyer and support, in Chinese and English, with the next step (see describeStatus). */
  messages: StatusMessages;
  /**
   * Live workflow stage, next provider query and query count: only while AWAITING_PAYMENT and the workflow answered.
   */
  stage?: string;
  nextCheckAt?: string | null;
  queryAttempts?: number;
  createdAt: string;
  deadline: string | null;
  /**
   * NEEDS_REVIEW only: the review's round (REVIEW_ROUND_ENTRIES on the timeline so far). A decision that names it is
   * refused once the review has moved on.
   */
  reviewRound?: number;
}

/** What became of a refused start's pre-start reservation. */
export type StartRefusedUnits =
  'kept for the key' | 'released' | 'owned by its workflow' | 'release failed: the orphan sweeper releases them';

const startSeen = () => true;
const startNotSeen = () => false;

/** Dependencies of the order service. */
export interface OrderServiceDeps {
  db: Knex;
  client: Client;
  config: Pick<
    Config,
    | 'taskQueue'
    | 'paymentTimeoutMs'
    | 'queryFirstDelayMs'
    | 'queryMaxIntervalMs'
    | 'providerExpiryMarginMs'
    | 'publicBaseUrl'
    | 'coolingOffMs'
    | 'reviewReminderMs'
    | 'temporalUpdateTimeoutMs'
    | 'orderStartConcurrency'
  >;
  /**
   * Providers this deployment offers; an order for any other answers 422 PROVIDER_NOT_AVAILABLE. Unset: not checked
   * here.
   */
  providers?: ProviderRegistry;
  /** Orders' providers as the callback route reads them: told the provider of every order this process creates. */
  orderProviders?: OrderProviderCache;
  /**
   * Told when a batched key probe could not be read (its buyers go on to the full reads, so answers stay right, but the
   * load rises, and a lasting cause, a schema or a grant, must be seen): the app logs it and counts it.
   */
  keyProbeFailed?: (err: unknown, keys: number) => void;
  /**
   * Told when Temporal refused an order's start outright (a setting is wrong: the namespace, credentials, a search
   * attribute not registered): every order fails until it is fixed, so the app logs it at error level.
   */
  startRefused?: (err: unknown, orderId: string, units: StartRefusedUnits) => void;
}

/** RESERVATION_GRACE is kept above this in production (src/config.ts): the sweeper never races a slow start. */
const START_TIMEOUT_MS = ORDER_START_TIMEOUT_MS;
/**
 * The id of every order's early-return update (one per workflow; a request that joins the order attaches to it). Fixed
 * so that the answer the workflow gave can be read again after it finished: a retry with the same Idempotency-Key of
 * an order refused before its row was written learns the refusal from it (releasedBeforeWritten).
 */
const PAYMENT_READY_UPDATE_ID = 'payment-ready';
/** Tries (pre-start reservations) one API process runs at once: a few, well under its MySQL pool (20). */
const TRY_CONCURRENCY = 6;
/** A GET never waits longer than this for the workflow's live status; it falls back to MySQL. */
const LIVE_STATUS_TIMEOUT_MS = 1_500;

/** Order operations behind the HTTP routes. */
export class OrderService {
  /**
   * Live stages of waiting orders: shared between concurrent polls, reused for 15 s, at most 10 queries/s per process
   * (4 in flight). A query costs the Temporal server and the worker's workflow thread far more than the poll's MySQL
   * read: with 1,000 buyers polling every 0.5 s (bench --polls --interval 0.5s), the server's CPU over the polling
   * phase fell from 11.1 s at 50/s to 4.9 s at 10/s. The stage moves only at a provider query, tens of seconds
   * apart, so an answer 15 s old is still the right one almost always.
   */
  private readonly live = new LiveStatusCache<OrderWorkflowStatus>((orderId) => this.queryLiveStatus(orderId), {
    ttlMs: 15_000,
    maxInFlight: 4,
    maxPerSecond: 10,
  });

  /** Orders between reservation and payment URL in this process (bounded by ORDER_START_CONCURRENCY). */
  private startsInFlight = 0;

  /** The units read of POST /orders, shared by buyers who arrive together (never older than the buyer). */
  private readonly availability: AvailabilityReads;
  /** Where the keys of keyed buyers about to be refused stand, read for those who arrive together. */
  private readonly keyProbes: BatchedReads<KeyProbe>;

  /** Units being reserved in this process right now: a buyer whose units are all spoken for is turned away at once. */
  private readonly gate = new ReservationGate();

  /** At most this many Tries at once per process, so that Tries waiting on a hot row never hold the whole pool. */
  private readonly trySlots = new TrySlots(TRY_CONCURRENCY);

  constructor(private readonly deps: OrderServiceDeps) {
    this.availability = new AvailabilityReads((skus) => availableUnits(deps.db, skus));
    this.keyProbes = new BatchedReads((orderIds) => probeKeys(deps.db, orderIds, deps.keyProbeFailed));
  }

  /**
   * Creates an order: starts its workflow and waits for the early-return update (payment URL). `replayed`: the order
   * was placed by an earlier request with the same Idempotency-Key (this one was answered from it, or joined it).
   */
  async create(
    request: CreateOrderRequest,
    idempotencyKey: string | undefined,
  ): Promise<{ replayed: boolean; body: PaymentReady }> {
    const { db, config, providers } = this.deps;
    if (providers && !providers[request.provider]) {
      throw new ApiError(
        422,
        'PROVIDER_NOT_AVAILABLE',
        `payment provider ${request.provider} is not configured here; available: ${Object.keys(providers).join(', ')}`,
        {
          provider: request.provider,
          available: Object.keys(providers),
        },
      );
    }
    const items = mergeItems(request.items);
    // One plain read answers both "is every SKU known" and "are the units there" (all buckets summed).
    const available = await this.availability.read(items.map((i) => i.sku));
    const unknown = items.map((i) => i.sku).filter((s) => !available.has(s));
    if (unknown.length)
      throw apiFailure(FailureType.UNKNOWN_SKU, `unknown SKU: ${unknown.join(', ')}`, {
        skus: unknown,
        sku: unknown[0],
      });

    // Without a key the id is drawn only for a buyer who gets past the stock check.
    const keyedId = idempotencyKey ? orderIdForIdempotencyKey(request.userId, idempotencyKey) : undefined;
    // A keyed request is compared with the key's first request (stored with the first Try) wherever it is answered:
    // from the stored order, or by its own Try, which compares before it reserves anything.
    const keyed = keyedId ? { orderId: keyedId, fingerprint: requestFingerprint(request, items) } : undefined;
    // A retry with the same Idempotency-Key of an order that already holds its units (reserved by the first request,
    // its workflow still setting up) joins that order: it must not be told OUT_OF_STOCK by its own reservation.
    let holdsUnits = false;
    if (keyed) {
      // A keyed buyer the units cannot cover (most buyers of a sale, who send keys) is refused on two reads shared with
      // the keyed buyers refused with it (probeKeys): its key's fingerprint row, read without waiting for locks (see
      // below), and whether its order has a row or a stock fence. Only a key with a Try committed or under way, or such
      // a trace (of an order placed before fingerprints were kept), goes on to the full reads below, which answer
      // exactly as before; a key never used before has none, and its answer is the refusal those reads would have
      // reached.
      const quickShort = this.gate.claiming(keyed.orderId)
        ? undefined
        : (shortLine(items, available) ?? this.gate.contested(items, available));
      if (quickShort) {
        const probe = (await this.keyProbes.read([keyed.orderId])).get(keyed.orderId);
        if (probe === 'in progress') throw orderPendingError();
        if (probe === 'none') throw outOfStockError(quickShort);
      }
      const existing = await this.read(keyed.orderId, { fingerprint: true });
      // An order still being set up is joined through update-with-start below (it waits for the payment URL).
      const settingUp = existing?.view.status === 'AWAITING_PAYMENT' && !existing.view.payment?.paymentUrl;
      if (existing && !settingUp) return { replayed: true, body: this.replay(existing, keyed, items, request) };
      const reservation = settingUp ? 'held' : await reservationOf(db, keyed.orderId);
      // No order row and the units released: the order was refused or released before it was written. A new Try
      // could only be refused (TCC_TRY_AFTER_CANCEL), and a units read could answer OUT_OF_STOCK: neither is the answer
      // the first request got (if it is the first request's: a different one is told so).
      if (reservation === 'released') throw await this.releasedKeyAnswer(keyed, request);
      holdsUnits = reservation === 'held';
    }
    // A buyer who cannot get the units costs one read: no reservation, no workflow (flash sales). Units being reserved
    // by Tries in flight in this process count as taken (ReservationGate), except by a request whose key names an
    // order whose first request is in its Try here (sent twice at once): that claim is its own order's, and its Try
    // below waits on the order's fence row and finds it held. No await between this check and the claim below (the
    // keyed branch that awaits never claims).
    if (keyedId && this.gate.claiming(keyedId)) holdsUnits = true;
    const short = holdsUnits ? undefined : (shortLine(items, available) ?? this.gate.contested(items, available));
    if (short && keyed) {
      // This process's gate knows only its own Tries: the key's first request may be in its Try on another API process
      // (the client timed out and its retry was sent elsewhere). Its Try inserts the key's fingerprint row first: a
      // locking read that does not wait tells whether that Try is under way (503: retry with the key, it will find the
      // order) or committed (this request joins it), instead of this request being told OUT_OF_STOCK by that order's
      // own units while a later retry is told 201. (A first request still queued for its Try, or between two attempts
      // of it after a deadlock, is not seen: this request is refused as before.)
      const firstTry = await keyedTry(db, keyed.orderId);
      if (firstTry === 'in progress') throw orderPendingError();
      if (firstTry === 'committed') {
        const reservation = await reservationOf(db, keyed.orderId);
        if (reservation === 'released') throw await this.releasedKeyAnswer(keyed, request);
        if (reservation === 'held') holdsUnits = true;
      }
      if (!holdsUnits) throw outOfStockError(short);
    } else if (short) throw outOfStockError(short);
    // Shed load before anything is reserved: a shed request holds nothing, and its retry (same Idempotency-Key) gets
    // the same order id.
    if (!holdsUnits && this.startsInFlight >= config.orderStartConcurrency) {
      throw new ApiError(
        429,
        'TOO_MANY_REQUESTS',
        'too many orders are being set up right now; retry shortly with the same Idempotency-Key',
      );
    }
    this.startsInFlight++;
    try {
      const orderId = keyedId ?? newOrderId();
      // The units (the order's TCC Try, before the start), claimed in the gate until the Try has settled.
      const settled = holdsUnits ? undefined : this.gate.claim(items, orderId);
      // 'same': an earlier request with this key reserved (and started) the order; this one joins it.
      let keyUse: 'first' | 'same' | undefined;
      try {
        // The claim ends as the Try commits, not when its answer comes back: a units read answered in between already
        // counts the units as taken, and must not find them claimed too (a buyer refused with a unit nobody held).
        keyUse = await this.trySlots.run(() => reserveBeforeStart(db, orderId, items, keyed?.fingerprint, settled));
      } catch (err) {
        // Released between the check above and this Try (the order's workflow refused it meanwhile): the answer its
        // first request got, not a bare RESERVATION_RELEASED. (The Try compared the request first: it is the same.)
        if (keyed && err instanceof ApiError && err.code === FAILURES.TCC_TRY_AFTER_CANCEL.api.code)
          throw await this.releasedAnswer(keyed, items, request);
        throw err;
      } finally {
        settled?.();
      }
      const body = await this.start(request, idempotencyKey, orderId, items);
      return { replayed: keyUse === 'same', body };
    } finally {
      this.startsInFlight--;
    }
  }

  /** Starts the workflow of an order whose units are reserved and waits for its payment URL. */
  private async start(
    request: CreateOrderRequest,
    idempotencyKey: string | undefined,
    orderId: string,
    items: { sku: string; quantity: number }[],
  ): Promise<PaymentReady> {
    const { db, client, config } = this.deps;
    const input: OrderPaymentInput = {
      orderId,
      userId: request.userId,
      items,
      provider: request.provider,
      idempotencyKey,
      ...(request.couponCode !== undefined ? { couponCode: request.couponCode } : {}),
      ...(request.points !== undefined ? { points: request.points } : {}),
      paymentTimeoutMs: config.paymentTimeoutMs,
      queryFirstDelayMs: config.queryFirstDelayMs,
      queryMaxIntervalMs: config.queryMaxIntervalMs,
      providerExpiryMarginMs: config.providerExpiryMarginMs,
      publicBaseUrl: config.publicBaseUrl,
      coolingOffMs: config.coolingOffMs,
      reviewReminderMs: config.reviewReminderMs,
    };
    const startOp = new WithStartWorkflowOperation<typeof orderLifecycleV2>(ORDER_WORKFLOW_TYPE, {
      workflowId: orderWorkflowId(orderId),
      taskQueue: config.taskQueue,
      args: [input],
      workflowIdConflictPolicy: 'USE_EXISTING',
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      typedSearchAttributes: [
        { key: OrderStatusKey, value: 'AWAITING_PAYMENT' },
        { key: PaymentProviderKey, value: request.provider },
      ],
      staticSummary: `Order ${orderId}: ${items.map((i) => `${i.quantity} x ${i.sku}`).join(', ')}`.slice(0, 200),
      staticDetails: `user ${request.userId}; provider ${request.provider}; items:\n${items.map((i) => `- ${i.quantity} x ${i.sku}`).join('\n')}`,
    });
    try {
      const body = await client.withDeadline(Date.now() + START_TIMEOUT_MS, () =>
        client.workflow.executeUpdateWithStart(paymentReadyUpdate, {
          updateId: PAYMENT_READY_UPDATE_ID,
          startWorkflowOperation: startOp,
        }),
      );
      // The start may have joined an order set up by an earlier request with this key (conflict policy USE_EXISTING):
      // that request was the same as this one, or this one's Try would have refused it (claimFingerprint).
      // The workflow's own provider (a joined order keeps the one it was created with).
      this.deps.orderProviders?.remember(orderId, body.payment.provider);
      return body;
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError) {
        // The workflow ran and failed before it owned the order (pricing, coupon, payment creation): it released what
        // its own Try held; release the pre-start reservation too (idempotent), so the units are sellable at once.
        await releaseReservation(db, orderId, items).catch(() => undefined);
      } else if (isTemporalRefusal(err) && !(await startOp.workflowHandle().then(startSeen, startNotSeen))) {
        // Refused before the server answered the start: nothing runs. (A refusal after the start was answered, a
        // credential that expired between the start and the update's poll, leaves a workflow that owns the units.)
        throw await this.startRefused(err, orderId, items, idempotencyKey !== undefined);
      }
      throw await this.translateStartError(err, orderId, items, request, idempotencyKey !== undefined);
    }
  }

  /**
   * The server refused the start itself (the namespace unknown, a search attribute it does not know, credentials or
   * permission refused, an API switched off): no workflow was started, and none will be until a setting changes (the
   * API registers missing search attributes in the background: src/client/main.ts). The buyer is told 503 with
   * Retry-After, never a 500 that reads like a failed order. An unkeyed order's units are released at once: its id was
   * never handed out, so nothing can start it. A keyed order keeps them for its retry, which joins them (its Try finds
   * the fence held) and starts the workflow once the server accepts: what bridges the seconds an API takes to register
   * missing search attributes at its start. They are held no longer than RESERVATION_GRACE: the orphan sweeper then
   * releases them, as after a crash between the Try and the start, and a retry after that is refused 409
   * RESERVATION_RELEASED (place the order again with a new key).
   */
  private async startRefused(
    err: unknown,
    orderId: string,
    items: { sku: string; quantity: number }[],
    keyed: boolean,
  ): Promise<ApiError> {
    let units: StartRefusedUnits = 'kept for the key';
    if (!keyed)
      units = await releaseUnlessOwned(this.deps.db, orderId, items).then(
        (released) => (released ? 'released' : 'owned by its workflow'),
        () => 'release failed: the orphan sweeper releases them',
      );
    this.deps.startRefused?.(err, orderId, units);
    return new ApiError(
      503,
      'SERVICE_UNAVAILABLE',
      keyed
        ? 'orders cannot be started right now; the units stay reserved for this Idempotency-Key for a short while: retry with it shortly'
        : 'orders cannot be started right now; retry shortly (send an Idempotency-Key to make retries safe)',
    );
  }

  /**
   * The answer to a keyed request whose order is stored: 422 unless it is the key's first request again (by the stored
   * fingerprint; by the lines for an order placed before fingerprints were kept), then what the order is.
   */
  private replay(
    stored: StoredOrder,
    keyed: { orderId: string; fingerprint: string },
    items: { sku: string; quantity: number }[],
    request: Pick<CreateOrderRequest, 'couponCode' | 'points'>,
  ): PaymentReady {
    const { view: existing, fingerprint } = stored;
    const same = fingerprint !== null ? fingerprint === keyed.fingerprint : sameItems(existing.items, items);
    if (!same) throw idempotencyKeyReused(existing.orderId);
    if (existing.status === 'FAILED') {
      // A failed order answers as its first request was answered: the message the workflow gave (its timeline's
      // ORDER_FAILED entry, written by the setup as "Order failed: <message>"), the details this same request carries.
      // A refusal as orderRefusalError; any other failure as orderFailedError, naming the order (it exists).
      const failed = existing.timeline.filter((e) => e.type === 'ORDER_FAILED').pop()?.message ?? '';
      const message = failed.startsWith('Order failed: ')
        ? failed.slice('Order failed: '.length)
        : `order ${existing.statusReason}`;
      const refused = orderRefusalError(existing.statusReason, message, {
        couponCode: request.couponCode,
        requested: request.points,
      });
      if (refused) throw refused;
      throw orderFailedError(existing.statusReason, message, existing.orderId);
    }
    if (existing.status === 'AWAITING_PAYMENT' && !existing.payment?.paymentUrl) {
      // Still being set up (the first request is waiting for the payment): never hand out an empty URL.
      throw new ApiError(503, 'ORDER_PENDING', 'the order is being set up; retry with the same Idempotency-Key', {
        orderId: existing.orderId,
      });
    }
    return {
      orderId: existing.orderId,
      status: existing.status,
      amount: existing.amount,
      currency: existing.currency,
      payment: {
        provider: existing.payment?.provider ?? 'sandbox',
        paymentUrl: existing.payment?.paymentUrl ?? '',
        expiresAt: existing.deadline ?? '',
      },
    };
  }

  private async translateStartError(
    err: unknown,
    orderId: string,
    items: { sku: string; quantity: number }[],
    request: CreateOrderRequest,
    keyed: boolean,
  ): Promise<ApiError> {
    if (err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure) {
      // The buyer is told the refusals the contract says they are told (no order id: see orderRefusalError); any other
      // failure failed the order for good (orderFailedError: what every retry with the key will be told too), naming
      // the order only if it was written and can be read.
      const details = (err.cause.details?.[0] ?? {}) as Record<string, unknown>;
      const refused = orderRefusalError(err.cause.type, err.cause.message, details);
      if (refused) return refused;
      const written = await this.deps.db('orders').where({ order_id: orderId }).first('order_id');
      return orderFailedError(err.cause.type, err.cause.message, written ? orderId : undefined);
    }
    // Same Idempotency-Key after the order's workflow finished: answer with the stored order, or, when the workflow
    // ended before pricing wrote one, with what it answered.
    if (err instanceof WorkflowExecutionAlreadyStartedError)
      return this.releasedAnswer({ orderId, fingerprint: requestFingerprint(request, items) }, items, request);
    // Under load the update-with-start call can also come back cancelled at the deadline ("Call cancelled").
    if (
      err instanceof WorkflowUpdateRPCTimeoutOrCancelledError ||
      (err instanceof Error && /deadline|DEADLINE_EXCEEDED/i.test(err.message))
    ) {
      // Without a key a retry is a new order (its units held twice): the client is told to follow this one instead.
      return new ApiError(
        503,
        'ORDER_PENDING',
        keyed
          ? 'the order is being set up but took too long; retry with the same Idempotency-Key'
          : `the order is being set up but took too long; follow it at GET /orders/${orderId} (404 until its workflow has written it) rather than sending the request again, which places another order; send an Idempotency-Key to make retries safe`,
        { orderId },
      );
    }
    throw err;
  }

  private replayError(
    stored: StoredOrder,
    keyed: { orderId: string; fingerprint: string },
    items: { sku: string; quantity: number }[],
    request: CreateOrderRequest,
  ): ApiError {
    try {
      this.replay(stored, keyed, items, request);
      const existing = stored.view;
      return new ApiError(
        409,
        'ORDER_EXISTS',
        `order ${existing.orderId} already exists with status ${existing.status}`,
        { orderId: existing.orderId, status: existing.status },
      );
    } catch (e) {
      return e as ApiError;
    }
  }

  /**
   * The answer to a keyed request whose order has no row and whose units were released: 422 when its body is not the
   * key's first request's (by the stored fingerprint), else what that first request was answered.
   */
  private async releasedKeyAnswer(
    keyed: { orderId: string; fingerprint: string },
    request: CreateOrderRequest,
  ): Promise<ApiError> {
    const stored = await fingerprintOf(this.deps.db, keyed.orderId);
    if (stored !== undefined && stored !== keyed.fingerprint) return idempotencyKeyReused(keyed.orderId);
    return this.releasedBeforeWritten(keyed.orderId, request);
  }

  /** The answer to a request whose order can no longer reserve: what the order's first request was answered. */
  private async releasedAnswer(
    keyed: { orderId: string; fingerprint: string },
    items: { sku: string; quantity: number }[],
    request: CreateOrderRequest,
  ): Promise<ApiError> {
    const existing = await this.read(keyed.orderId, { fingerprint: true });
    return existing
      ? this.replayError(existing, keyed, items, request)
      : this.releasedBeforeWritten(keyed.orderId, request);
  }

  /**
   * The answer to a retry of an order whose units were released before its row was written, where MySQL cannot say
   * why: its workflow's early-return update can (read again by its fixed id), so the retry gets the refusal the first
   * request got (409 COUPON_UNAVAILABLE for a coupon pricing refused, ...), or, for a failure that is no refusal, the
   * 409 ORDER_FAILED it got (orderFailedError: nothing can be reserved for this key again). No workflow (the API
   * stopped before its start and the sweeper released the units): 409 RESERVATION_RELEASED. A 5xx only when Temporal
   * cannot be reached.
   */
  private async releasedBeforeWritten(orderId: string, request: Pick<CreateOrderRequest, 'couponCode' | 'points'>) {
    const { client, config } = this.deps;
    try {
      await withTemporalDeadline(client, config.temporalUpdateTimeoutMs, () =>
        client.workflow.getHandle(orderWorkflowId(orderId)).getUpdateHandle(PAYMENT_READY_UPDATE_ID).result(),
      );
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure) {
        const { type, message } = err.cause;
        const details = {
          couponCode: request.couponCode,
          requested: request.points,
          ...((err.cause.details?.[0] ?? {}) as Record<string, unknown>),
        };
        return orderRefusalError(type, message, details) ?? orderFailedError(type, message);
      }
      // An update of that id unknown (a workflow started before it was fixed) or no workflow at all.
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    }
    return orderRefusalError(FailureType.TCC_TRY_AFTER_CANCEL, '')!;
  }

  /**
   * Reads an order with its lines, payment and timeline; null when unknown. With `live`, an order still
   * AWAITING_PAYMENT also gets the workflow's live stage (best effort, short timeout, never fails the read).
   */
  async get(orderId: string, options: { live?: boolean } = {}): Promise<OrderView | null> {
    return (await this.read(orderId, options))?.view ?? null;
  }

  /**
   * get, and with `fingerprint` (a keyed POST /orders) also the fingerprint of the request that placed the order, in
   * the same read (null when none is stored).
   */
  private async read(
    orderId: string,
    options: { live?: boolean; fingerprint?: boolean } = {},
  ): Promise<StoredOrder | null> {
    const { db } = this.deps;
    // One read (a waiting page polls this every few seconds, and a MySQL round trip is the dearest part of a poll):
    // the order, its payment, and its lines and timeline as JSON arrays. JSON_ARRAYAGG has no ORDER BY on MySQL 8, so
    // the timeline carries its ids and is sorted here; times are formatted in SQL as UTC ISO strings (the session
    // clock is UTC, src/db/knex.ts).
    const [rows] = (await db.raw(
      `SELECT o.user_id, o.status, o.status_reason, o.amount, o.currency, o.deadline, o.created_at,
              p.provider AS payment_provider, p.payment_url AS payment_payment_url, p.status AS payment_status,
              p.trade_no AS payment_trade_no, p.paid_amount AS payment_paid_amount,
              p.out_trade_no AS payment_out_trade_no,
              (SELECT JSON_ARRAYAGG(JSON_OBJECT('sku', l.sku, 'quantity', l.quantity, 'unit_price', l.unit_price))
                 FROM order_lines l WHERE l.order_id = o.order_id) AS lines_json,
              (SELECT JSON_ARRAYAGG(JSON_OBJECT('id', e.id, 'at', CONCAT(DATE_FORMAT(e.at, '%Y-%m-%dT%H:%i:%s.%f'), 'Z'),
                                                'type', e.type, 'message', e.message))
                 FROM order_events e WHERE e.order_id = o.order_id) AS events_json${
                   options.fingerprint
                     ? `,
              (SELECT f.fingerprint FROM idempotency_fingerprints f WHERE f.order_id = o.order_id) AS request_fingerprint`
                     : ''
                 }
         FROM orders o LEFT JOIN payments p ON p.out_trade_no = o.order_id
        WHERE o.order_id = ?`,
      [orderId],
    )) as [(OrderReadRow & { lines_json: unknown; events_json: unknown; request_fingerprint?: string | null })[]];
    const found = rows[0];
    // In primary-key order (order_id, sku; binary collation), as a plain read of the lines returns them.
    const lines = bySkuOrder(jsonArray<{ sku: string; quantity: number; unit_price: number }>(found?.lines_json));
    const events = jsonArray<{ id: number; at: string; type: string; message: string }>(found?.events_json).sort(
      (a, b) => a.id - b.id,
    );
    const order = found as OrderReadRow | undefined;
    if (!order) return null;
    // payments.provider is NOT NULL: a joined row has one.
    const payment =
      order.payment_out_trade_no === null
        ? undefined
        : {
            provider: order.payment_provider!,
            payment_url: order.payment_payment_url,
            status: order.payment_status,
            trade_no: order.payment_trade_no,
            paid_amount: order.payment_paid_amount,
          };
    const status = order.status as OrderStatus;
    const storedDeadline = order.deadline ? new Date(order.deadline).toISOString() : null;
    const live = options.live && status === 'AWAITING_PAYMENT' ? await this.live.get(orderId) : undefined;
    const deadline = live?.deadline ?? storedDeadline;
    const messages = describeStatus({
      status,
      stage: live?.stage,
      deadline,
      nextCheckAt: live?.nextCheckAt,
      queryAttempts: live?.queryAttempts,
      statusReason: order.status_reason ?? null,
      now: new Date(),
    });
    const view: OrderView = {
      orderId,
      userId: order.user_id,
      status,
      statusReason: order.status_reason ?? null,
      amount: Number(order.amount),
      currency: order.currency,
      items: lines.map((l) => ({
        sku: l.sku,
        quantity: Number(l.quantity),
        unitPrice: Number(l.unit_price),
      })),
      payment: payment
        ? {
            provider: payment.provider,
            paymentUrl: payment.payment_url ?? null,
            expiresAt: order.deadline ? new Date(order.deadline).toISOString() : null,
            status: payment.status,
            tradeNo: payment.trade_no ?? null,
            paidAmount: payment.paid_amount === null ? null : Number(payment.paid_amount),
          }
        : null,
      timeline: events.map((e) => ({
        at: new Date(e.at).toISOString(),
        type: e.type,
        message: publicTimelineMessage(e, order.status_reason),
      })),
      userMessage: messages.user.en,
      messages,
      ...(live ? { stage: live.stage, nextCheckAt: live.nextCheckAt ?? null, queryAttempts: live.queryAttempts } : {}),
      createdAt: new Date(order.created_at).toISOString(),
      deadline,
      ...(status === 'NEEDS_REVIEW'
        ? { reviewRound: events.filter((e) => (REVIEW_ROUND_ENTRIES as readonly string[]).includes(e.type)).length }
        : {}),
    };
    return { view, fingerprint: found?.request_fingerprint ?? null };
  }

  /** The workflow's `status` query within LIVE_STATUS_TIMEOUT_MS; undefined on any failure or timeout. */
  private async queryLiveStatus(orderId: string): Promise<OrderWorkflowStatus | undefined> {
    const { client } = this.deps;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), LIVE_STATUS_TIMEOUT_MS);
    });
    const query = client
      .withDeadline(Date.now() + LIVE_STATUS_TIMEOUT_MS, () =>
        client.workflow.getHandle(orderWorkflowId(orderId)).query(statusQuery),
      )
      .catch(() => undefined);
    try {
      return await Promise.race([query, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * User cancel: runs the workflow's cancel update (close at the provider first); 409 once it can no longer be
   * cancelled.
   */
  async cancel(orderId: string, reason: string | undefined): Promise<{ orderId: string; status: OrderStatus }> {
    const order = await this.get(orderId);
    if (!order) throw apiFailure(FailureType.ORDER_NOT_FOUND, `no order ${orderId}`);
    if (order.status === 'CANCELLED') return { orderId, status: 'CANCELLED' };
    if (order.status !== 'AWAITING_PAYMENT') {
      throw new ApiError(409, 'ORDER_NOT_CANCELLABLE', `order is ${order.status} and can no longer be cancelled`, {
        status: order.status,
      });
    }
    try {
      const { client, config } = this.deps;
      const result = await withTemporalDeadline(client, config.temporalUpdateTimeoutMs, () =>
        // One update id per order's cancel: a retry (after a 503 at the deadline) attaches to the update already under
        // way instead of adding another, and an order stuck closing never collects one waiting update per retry
        // (Temporal allows 10 in flight per workflow, which the buyer's escalation needs too).
        client.workflow
          .getHandle(orderWorkflowId(orderId))
          .executeUpdate(cancelOrderUpdate, { args: [{ reason }], updateId: `cancel-${orderId}` }),
      );
      if (result.status !== 'CANCELLED') {
        throw new ApiError(409, 'ORDER_NOT_CANCELLABLE', `order became ${result.status} before it could be cancelled`, {
          status: result.status,
        });
      }
      return { orderId, status: result.status };
    } catch (err) {
      if (err instanceof ApiError) throw err;
      if (err instanceof WorkflowUpdateFailedError || err instanceof WorkflowNotFoundError) {
        const now = await this.get(orderId);
        if (now?.status === 'CANCELLED') return { orderId, status: 'CANCELLED' };
        throw new ApiError(
          409,
          'ORDER_NOT_CANCELLABLE',
          `order can no longer be cancelled (${now?.status ?? 'unknown'})`,
          { status: now?.status },
        );
      }
      throw err;
    }
  }
}

/** A JSON_ARRAYAGG column: parsed already (MySQL's JSON type), a string (MariaDB), or NULL for no rows. */
function jsonArray<T>(value: unknown): T[] {
  return jsonColumn<T[]>(value) ?? [];
}

/** The row GET /orders/:id reads: the order and, when it exists, its payment (LEFT JOIN). */
interface OrderReadRow {
  user_id: string;
  status: string;
  status_reason: string | null;
  amount: number | string;
  currency: string;
  deadline: Date | string | null;
  created_at: Date | string;
  payment_provider: string | null;
  payment_payment_url: string | null;
  payment_status: string | null;
  payment_trade_no: string | null;
  payment_paid_amount: number | string | null;
  payment_out_trade_no: string | null;
}

/** Whether an order's stored lines are the ones a request asks for (same SKUs, same quantities). */
function sameItems(stored: { sku: string; quantity: number }[], items: { sku: string; quantity: number }[]): boolean {
  return (
    stored.length === items.length &&
    items.every((i) => stored.some((e) => e.sku === i.sku && e.quantity === i.quantity))
  );
}

/** An order as read for a keyed POST /orders: the view, and the fingerprint of the request that placed it. */
interface StoredOrder {
  view: OrderView;
  /** null: none stored (read without asking for it, or an order placed before fingerprints were kept). */
  fingerprint: string | null;
}

/** A keyed request whose key's first request is in its Try right now (on this process or another). */
function orderPendingError(): ApiError {
  return new ApiError(
    503,
    'ORDER_PENDING',
    'an earlier request with this Idempotency-Key is reserving its units right now; retry with the same key',
  );
}
