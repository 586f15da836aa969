/**
 * What people are told about an order, in Chinese and English: a short message for the buyer, a message for
 * support staff with the internal facts and the next automatic step, and the expected next step with its time.
 *
 * Pure and deterministic (no Node built-ins, no I/O, no clock of its own: the caller passes `now`), so the API,
 * the waiting page and workflow code (the `status` query) can all use it and agree.
 */
import { FailureType } from './failures';
import type { OrderStage, OrderStatus } from './order';

/** A text in both languages the service speaks. */
export interface Bilingual {
  en: string;
  zh: string;
}

/** Where an order is on the buyer's progress bar: reserved -> waiting for payment -> confirming -> done. */
export type ProgressPhase = 'RESERVING' | 'AWAITING_PAYMENT' | 'CONFIRMING' | 'DONE';

/** What `describeStatus` answers. */
export interface StatusMessages {
  /** Stable machine code of the situation (e.g. `WAITING_FOR_PAYMENT`, `CONFIRMING_PAYMENT`, `EXPIRED`). */
  code: string;
  /** Progress-bar position for user interfaces. */
  phase: ProgressPhase;
  /** Short message a buyer understands. */
  user: Bilingual;
  /** For support staff: the internal facts and the next automatic step. */
  support: Bilingual;
  /** The expected next step, for the buyer. */
  next: Bilingual;
  /** When the next step is expected (ISO 8601), when there is one. */
  expectedBy?: string;
}

/** What `describeStatus` needs; everything but status and now is optional, and unknown values are handled. */
export interface DescribeStatusInput {
  /** Order status (an unknown value is described generically, never thrown on). */
  status: OrderStatus | (string & {});
  /** Live workflow stage from the `status` query, when known. */
  stage?: OrderStage | (string & {}) | null;
  /** Payment deadline (ISO 8601). */
  deadline?: string | null;
  /** Next active provider query (ISO 8601). */
  nextCheckAt?: string | null;
  /** Active provider queries made so far. */
  queryAttempts?: number | null;
  /** Why the order is in its status (orders.status_reason: OUT_OF_STOCK, PAYMENT_MISMATCH, PAYMENT_TIMEOUT, ...). */
  statusReason?: string | null;
  /** End of the cooling-off window (ISO 8601), while the order is in it. */
  coolingOffUntil?: string | null;
  /** The current time; pass workflow time from workflow code. */
  now: Date | number | string;
}

/** Every stage the workflow reports, with where it puts a still-open order on the progress bar. */
const STAGE_PHASE: Record<OrderStage, ProgressPhase> = {
  CREATING_ORDER: 'RESERVING',
  RESERVING: 'RESERVING',
  CREATING_PAYMENT: 'RESERVING',
  AWAITING_PAYMENT: 'AWAITING_PAYMENT',
  QUERYING_PROVIDER: 'AWAITING_PAYMENT',
  CONFIRMING: 'CONFIRMING',
  CLOSING: 'AWAITING_PAYMENT',
  RELEASING: 'AWAITING_PAYMENT',
  WATCHING_LATE_PAYMENT: 'DONE',
  REFUNDING: 'DONE',
  NEEDS_REVIEW: 'CONFIRMING',
  AWAITING_REVIEW: 'CONFIRMING',
  COOLING_OFF: 'DONE',
  DONE: 'DONE',
};

/** Stages this module knows (tests iterate them; anything else is described from the status alone). */
export const KNOWN_STAGES = Object.keys(STAGE_PHASE) as OrderStage[];

const MINUTE = 60_000;

/** Facts every text builder may use. */
interface Ctx {
  status: string;
  stage: string | undefined;
  nowMs: number;
  deadline: string | undefined;
  deadlineMs: number | undefined;
  nextCheckAt: string | undefined;
  queryAttempts: number | undefined;
  reason: string | undefined;
  coolingOffUntil: string | undefined;
}

type Texts = Omit<StatusMessages, 'code' | 'phase'>;

const REFUND_PROMISE: Bilingual = {
  en: 'If money left your account, it is refunded automatically.',
  zh: '如果已经扣款，款项会自动原路退回。',
};

const NOTHING_TO_DO: Bilingual = {
  en: 'Nothing to do. You can place a new order at any time.',
  zh: '您无需任何操作，可随时重新下单。',
};

const CANCELLED_FOR_BUYER: Bilingual = {
  en: `The order was cancelled and the items released. ${REFUND_PROMISE.en}`,
  zh: `订单已取消，商品已释放。${REFUND_PROMISE.zh}`,
};

/** Describes an order's state for people: buyer message, support message, next step and when. Never throws. */
export function describeStatus(input: DescribeStatusInput): StatusMessages {
  const ctx = context(input);
  const code = situation(ctx);
  const texts = TEXTS[code](ctx);
  return { code, phase: phaseOf(code, ctx), ...texts };
}

function context(input: DescribeStatusInput): Ctx {
  const nowMs = toMs(input.now) ?? 0;
  const deadlineMs = toMs(input.deadline ?? undefined);
  const nextMs = toMs(input.nextCheckAt ?? undefined);
  const coolMs = toMs(input.coolingOffUntil ?? undefined);
  return {
    status: String(input.status),
    stage: input.stage ? String(input.stage) : undefined,
    nowMs,
    deadline: deadlineMs === undefined ? undefined : new Date(deadlineMs).toISOString(),
    deadlineMs,
    nextCheckAt: nextMs === undefined ? undefined : new Date(nextMs).toISOString(),
    queryAttempts:
      typeof input.queryAttempts === 'number' && Number.isFinite(input.queryAttempts) ? input.queryAttempts : undefined,
    reason: input.statusReason ? String(input.statusReason) : undefined,
    coolingOffUntil: coolMs === undefined ? undefined : new Date(coolMs).toISOString(),
  };
}

function toMs(value: Date | number | string | undefined): number | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const ms = value instanceof Date ? value.getTime() : typeof value === 'number' ? value : Date.parse(value);
  return Number.isFinite(ms) ? ms : undefined;
}

type Code = keyof typeof TEXTS;

/** Picks the situation: the status decides, the live stage refines it while the order is still moving. */
function situation(ctx: Ctx): Code {
  const { status, stage } = ctx;
  const pastDeadline = ctx.deadlineMs !== undefined && ctx.nowMs >= ctx.deadlineMs;
  if (stage === 'REFUNDING') return 'REFUNDING';
  switch (status) {
    case 'AWAITING_PAYMENT':
      switch (stage) {
        case 'CREATING_ORDER':
        case 'RESERVING':
        case 'CREATING_PAYMENT':
          return 'SETTING_UP';
        case 'CONFIRMING':
          return 'CONFIRMING_PAYMENT';
        case 'CLOSING':
          return 'CLOSING';
        case 'RELEASING':
          return 'RELEASING';
        case 'NEEDS_REVIEW':
        case 'AWAITING_REVIEW':
          return 'NEEDS_REVIEW';
        case 'QUERYING_PROVIDER':
          return pastDeadline ? 'DEADLINE_REACHED' : 'CHECKING_WITH_PROVIDER';
        default:
          return pastDeadline ? 'DEADLINE_REACHED' : 'WAITING_FOR_PAYMENT';
      }
    case 'PAID':
      return stage === 'COOLING_OFF' ? 'PAID_COOLING_OFF' : 'PAID';
    case 'EXPIRED':
      return stage === 'WATCHING_LATE_PAYMENT' ? 'EXPIRED_WATCHING' : 'EXPIRED';
    case 'CANCELLED':
      return stage === 'WATCHING_LATE_PAYMENT' ? 'CANCELLED_WATCHING' : 'CANCELLED';
    case 'REFUNDED':
      return 'REFUNDED';
    case 'NEEDS_REVIEW':
      if (stage === 'CONFIRMING') return 'REVIEW_APPROVED_CONFIRMING';
      if (stage === 'RELEASING') return 'RELEASING';
      if (ctx.reason === 'REFUND_FAILED') return 'REFUND_FAILED';
      return ctx.reason === 'PAYMENT_MISMATCH' ? 'PAYMENT_MISMATCH' : 'NEEDS_REVIEW';
    case 'FAILED':
      return ctx.reason === FailureType.OUT_OF_STOCK ? 'FAILED_OUT_OF_STOCK' : 'FAILED';
    default:
      return 'UNKNOWN';
  }
}

function phaseOf(code: Code, ctx: Ctx): ProgressPhase {
  switch (code) {
    case 'SETTING_UP':
      return 'RESERVING';
    case 'WAITING_FOR_PAYMENT':
    case 'CHECKING_WITH_PROVIDER':
    case 'DEADLINE_REACHED':
    case 'CLOSING':
    case 'RELEASING':
      return 'AWAITING_PAYMENT';
    case 'CONFIRMING_PAYMENT':
    case 'REVIEW_APPROVED_CONFIRMING':
    case 'NEEDS_REVIEW':
    case 'PAYMENT_MISMATCH':
    case 'REFUND_FAILED':
      return 'CONFIRMING';
    case 'UNKNOWN':
      return ctx.stage !== undefined && Object.prototype.hasOwnProperty.call(STAGE_PHASE, ctx.stage)
        ? STAGE_PHASE[ctx.stage as OrderStage]
        : 'AWAITING_PAYMENT';
    default:
      return 'DONE';
  }
}

/** `in 12s` / `in 3 min` / `now`, for support texts. */
function relative(ms: number | undefined, nowMs: number): Bilingual {
  if (ms === undefined) return { en: '', zh: '' };
  const s = Math.round((ms - nowMs) / 1000);
  if (Math.abs(s) < 1) return { en: ' (now)', zh: '（现在）' };
  const mag = Math.abs(s);
  const en = mag < 120 ? `${mag}s` : mag < 7200 ? `${Math.round(mag / 60)} min` : `${Math.round(mag / 3600)} h`;
  const zh = mag < 120 ? `${mag} 秒` : mag < 7200 ? `${Math.round(mag / 60)} 分钟` : `${Math.round(mag / 3600)} 小时`;
  return s > 0 ? { en: ` (in ${en})`, zh: `（${zh}后）` } : { en: ` (${en} ago)`, zh: `（${zh}前）` };
}

/** The internal facts, in both languages: `status X, stage Y, deadline ..., next query ...`. */
function facts(ctx: Ctx): Bilingual {
  const en: string[] = [`status ${ctx.status}`, `stage ${ctx.stage ?? 'unknown'}`];
  const zh: string[] = [`状态 ${ctx.status}`, `阶段 ${ctx.stage ?? '未知'}`];
  if (ctx.reason) {
    en.push(`reason ${ctx.reason}`);
    zh.push(`原因 ${ctx.reason}`);
  }
  if (ctx.deadline) {
    const r = relative(ctx.deadlineMs, ctx.nowMs);
    en.push(`deadline ${ctx.deadline}${r.en}`);
    zh.push(`付款截止 ${ctx.deadline}${r.zh}`);
  }
  if (ctx.nextCheckAt) {
    const r = relative(toMs(ctx.nextCheckAt), ctx.nowMs);
    en.push(`next provider query ${ctx.nextCheckAt}${r.en}`);
    zh.push(`下次主动查询 ${ctx.nextCheckAt}${r.zh}`);
  }
  if (ctx.queryAttempts !== undefined) {
    en.push(`${ctx.queryAttempts} provider quer${ctx.queryAttempts === 1 ? 'y' : 'ies'} so far`);
    zh.push(`已主动查询 ${ctx.queryAttempts} 次`);
  }
  if (ctx.coolingOffUntil) {
    const r = relative(toMs(ctx.coolingOffUntil), ctx.nowMs);
    en.push(`cooling-off until ${ctx.coolingOffUntil}${r.en}`);
    zh.push(`冷静期至 ${ctx.coolingOffUntil}${r.zh}`);
  }
  return { en: `${en.join('; ')}.`, zh: `${zh.join('；')}。` };
}

/** Support text: the facts, then what is going on and the next automatic step. */
function support(ctx: Ctx, what: Bilingual): Bilingual {
  const f = facts(ctx);
  return { en: `${f.en} ${what.en}`, zh: `${f.zh}${what.zh}` };
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** The deadline when it is still ahead, else undefined. */
function futureDeadline(ctx: Ctx): string | undefined {
  return ctx.deadlineMs !== undefined && ctx.deadlineMs > ctx.nowMs ? ctx.deadline : undefined;
}

/** What the buyer reads while the order waits for payment. */
const WAITING_TEXTS: Pick<Texts, 'user' | 'next'> = {
  user: {
    en: 'Waiting for your payment. Your items are held for you until the deadline.',
    zh: '等待您付款。商品已为您保留，直到付款截止时间。',
  },
  next: {
    en: 'Pay with the payment link. We confirm your order as soon as the payment provider tells us, usually within seconds. If the deadline passes unpaid, the order is closed and the items are released.',
    zh: '请通过支付链接付款。支付机构通知我们后会立即确认订单，通常只需几秒。若截止时间前未付款，订单将自动关闭并释放商品。',
  },
};

const TEXTS = {
  SETTING_UP: (ctx: Ctx): Texts => ({
    user: {
      en: 'Setting up your order: holding your items and creating the payment. This takes a few seconds.',
      zh: '正在为您锁定商品并创建支付单，通常只需几秒钟。',
    },
    support: support(ctx, {
      en: 'The workflow is pricing the items, reserving stock (TCC Try) and creating the provider payment; the payment link is returned as soon as the payment exists. A failure here releases the stock and marks the order FAILED; no money can have been taken yet.',
      zh: '工作流正在按目录定价、预留库存（TCC Try）并在支付机构创建支付单，支付单创建后立即返回支付链接。此阶段失败会释放库存并将订单标记为 FAILED，此时不可能已扣款。',
    }),
    next: {
      en: 'The payment link appears here in a moment; then pay before the deadline.',
      zh: '支付链接稍后会显示在这里，请在截止时间前完成付款。',
    },
    expectedBy: iso(ctx.nowMs + 30_000),
  }),

  WAITING_FOR_PAYMENT: (ctx: Ctx): Texts => ({
    ...WAITING_TEXTS,
    support: support(ctx, {
      en: `Stock is reserved and the provider payment is open; no payment seen yet (neither a callback nor an active query). Next automatic step: a payment notification confirms at once; otherwise the provider is queried${ctx.nextCheckAt ? ` at ${ctx.nextCheckAt}` : ' on a backoff'}; at the deadline the provider payment is closed first (a payment found then still counts), then the stock is released and the order EXPIRES.`,
      zh: `库存已预留，支付单处于待支付状态，尚未收到付款（无回调，主动查询也未发现）。下一步自动处理：收到支付通知立即确认；否则${ctx.nextCheckAt ? `于 ${ctx.nextCheckAt} ` : '按退避间隔'}主动查询支付机构；到达截止时间先关闭支付单（此时发现已付款仍按已付处理），再释放库存，订单变为 EXPIRED。`,
    }),
    expectedBy: futureDeadline(ctx),
  }),

  // The buyer sees the same texts as while waiting: queries come and go every few seconds, the page must not flicker.
  CHECKING_WITH_PROVIDER: (ctx: Ctx): Texts => ({
    ...WAITING_TEXTS,
    support: support(ctx, {
      en: 'An active query to the provider is running (no callback has arrived). A query that reports the payment as paid counts exactly like a callback and confirms the order; otherwise the workflow waits for the next query or the deadline.',
      zh: '正在主动查询支付机构（尚未收到回调）。查询结果为已支付时与回调同等处理并确认订单；否则继续等待下一次查询或截止时间。',
    }),
    expectedBy: futureDeadline(ctx) ?? iso(ctx.nowMs + MINUTE),
  }),

  DEADLINE_REACHED: (ctx: Ctx): Texts => ({
    user: {
      en: 'The payment deadline has passed; we are closing the order. If you paid just before the deadline, your payment still counts.',
      zh: '付款截止时间已过，正在关闭订单。如果您在截止前已付款，付款依然有效。',
    },
    support: support(ctx, {
      en: 'Deadline reached and no payment seen. Next automatic step: close the provider payment first; if the provider answers "already paid" the order is confirmed, otherwise stock is released and the order EXPIRES; a payment arriving later is refunded automatically.',
      zh: '已到截止时间且未发现付款。下一步自动处理：先关闭支付机构的支付单；若支付机构返回“已支付”则确认订单，否则释放库存，订单变为 EXPIRED；之后到账的付款会自动退款。',
    }),
    next: {
      en: `Within a minute the order is either confirmed (if you paid) or closed and the items released. ${REFUND_PROMISE.en}`,
      zh: `一分钟内订单将被确认（如已付款）或关闭并释放商品。${REFUND_PROMISE.zh}`,
    },
    expectedBy: iso(ctx.nowMs + MINUTE),
  }),

  CLOSING: (ctx: Ctx): Texts => ({
    user: {
      en: 'Closing the payment because the deadline passed or the order was cancelled. If you already paid, your payment still counts.',
      zh: '由于付款超时或订单已取消，正在关闭支付单。如果您已付款，付款依然有效。',
    },
    support: support(ctx, {
      en: 'Closing the provider payment before anything is released, so nobody can pay a released order. If the provider answers "already paid", the order is confirmed as paid; otherwise stock is released next. The close is retried until the provider answers.',
      zh: '正在先关闭支付机构的支付单，再释放任何资源，确保已释放的订单无法再被支付。若支付机构返回“已支付”则按已付款确认；否则接着释放库存。关闭操作会重试直到支付机构应答。',
    }),
    next: {
      en: `Within a minute the order is either confirmed (if you paid) or closed and the items released. ${REFUND_PROMISE.en}`,
      zh: `一分钟内订单将被确认（如已付款）或关闭并释放商品。${REFUND_PROMISE.zh}`,
    },
    expectedBy: iso(ctx.nowMs + MINUTE),
  }),

  RELEASING: (ctx: Ctx): Texts => ({
    user: {
      en: `Closing your order and releasing the items. ${REFUND_PROMISE.en}`,
      zh: `正在关闭订单并释放商品。${REFUND_PROMISE.zh}`,
    },
    support: support(ctx, {
      en: 'The provider payment is closed; the TCC participants (stock, and any coupon or points) are being cancelled, retried until they succeed. The order then shows as closed; the workflow keeps watching for a late payment and refunds it automatically.',
      zh: '支付单已关闭，正在取消各 TCC 参与方（库存及使用的优惠券、积分），失败会重试直到成功。随后订单显示为已关闭；工作流会继续监控迟到的付款并自动退款。',
    }),
    next: {
      en: 'The order will show as closed within a minute. Nothing for you to do.',
      zh: '一分钟内订单将显示为已关闭，您无需任何操作。',
    },
    expectedBy: iso(ctx.nowMs + MINUTE),
  }),

  CONFIRMING_PAYMENT: (ctx: Ctx): Texts => ({
    user: {
      en: 'Payment received by the provider, confirming your order; this usually takes under a minute.',
      zh: '已收到支付机构的付款通知，正在确认订单，通常不超过一分钟。',
    },
    support: support(ctx, {
      en: 'The payment matched the order (amount, currency, merchant). Confirming every TCC participant (stock reserved -> sold) and marking the order PAID; each step is retried until it succeeds and alerts when it keeps failing.',
      zh: '付款与订单一致（金额、币种、商户号）。正在确认所有 TCC 参与方（库存由预留转为已售）并将订单标记为 PAID；每一步都会重试直到成功，持续失败会告警。',
    }),
    next: {
      en: 'Your order is marked as paid and your items are secured.',
      zh: '订单将被标记为已支付，商品为您锁定。',
    },
    expectedBy: iso(ctx.nowMs + MINUTE),
  }),

  REVIEW_APPROVED_CONFIRMING: (ctx: Ctx): Texts => ({
    user: {
      en: 'Our team checked your payment and approved it; confirming your order now. This usually takes under a minute.',
      zh: '工作人员已核实并通过您的付款，正在确认订单，通常不超过一分钟。',
    },
    support: support(ctx, {
      en: 'An operator approved the payment under review; confirming the TCC participants and marking the order PAID (retried until it succeeds).',
      zh: '运营人员已审核通过该付款；正在确认 TCC 参与方并将订单标记为 PAID（失败会重试直到成功）。',
    }),
    next: {
      en: 'Your order is marked as paid.',
      zh: '订单将被标记为已支付。',
    },
    expectedBy: iso(ctx.nowMs + MINUTE),
  }),

  PAID: (ctx: Ctx): Texts => ({
    user: {
      en: 'Payment received and your order is confirmed.',
      zh: '付款成功，订单已确认。',
    },
    support: support(ctx, {
      en: 'The order is PAID: the payment matched and every participant is confirmed (stock sold). Nothing is pending on the payment side.',
      zh: '订单已支付（PAID）：付款核对一致，所有参与方已确认（库存已售出）。支付侧没有待处理事项。',
    }),
    next: {
      en: 'Nothing more to do: your order goes on to fulfilment.',
      zh: '您无需任何操作，订单将进入发货流程。',
    },
  }),

  PAID_COOLING_OFF: (ctx: Ctx): Texts => ({
    user: {
      en: 'Payment received and your order is confirmed. During the cooling-off period you can still cancel it for a full refund.',
      zh: '付款成功，订单已确认。冷静期内您仍可申请全额退款。',
    },
    support: support(ctx, {
      en: 'PAID and inside the cooling-off window: POST /orders/:id/refund refunds in full without review and returns stock, coupon and points. When the window ends the order becomes ready for fulfilment (outbox row written).',
      zh: '已支付，处于冷静期内：POST /orders/:id/refund 可免审核全额退款并退回库存、优惠券和积分。冷静期结束后订单进入待发货状态（写入 outbox 记录）。',
    }),
    next: {
      en: 'When the cooling-off period ends, your order goes on to fulfilment.',
      zh: '冷静期结束后，订单将进入发货流程。',
    },
    expectedBy: ctx.coolingOffUntil,
  }),

  EXPIRED: (ctx: Ctx): Texts => ({
    user: {
      en: `The payment deadline passed, so the order was closed and the items released. ${REFUND_PROMISE.en}`,
      zh: `付款已超时，订单已关闭，商品已释放。${REFUND_PROMISE.zh}`,
    },
    support: support(ctx, {
      en: 'EXPIRED: the provider payment was closed before the stock was released. A payment that still arrives (late callback or reconciliation) is verified with the provider and refunded automatically with a stable refund number, never twice.',
      zh: '已过期（EXPIRED）：先关闭了支付单再释放库存。之后仍到账的付款（迟到回调或对账发现）会向支付机构核实后自动退款，退款单号固定，不会重复退款。',
    }),
    next: NOTHING_TO_DO,
  }),

  EXPIRED_WATCHING: (ctx: Ctx): Texts => ({
    user: {
      en: `The payment deadline passed, so the order was closed and the items released. ${REFUND_PROMISE.en}`,
      zh: `付款已超时，订单已关闭，商品已释放。${REFUND_PROMISE.zh}`,
    },
    support: support(ctx, {
      en: 'EXPIRED and stock released; the workflow is still watching for a late payment until the provider-side expiry, then queries the provider once more. Any payment found is refunded automatically (stable refund number).',
      zh: '已过期且库存已释放；工作流仍在监控迟到的付款，直到支付机构侧的过期时间，届时再查询一次。发现的任何付款都会自动退款（退款单号固定）。',
    }),
    next: NOTHING_TO_DO,
  }),

  CANCELLED: (ctx: Ctx): Texts => ({
    user: CANCELLED_FOR_BUYER,
    support: support(ctx, {
      en: 'CANCELLED by the buyer (or by an operator through Temporal): the provider payment was closed before the stock was released. A payment that still arrives is verified with the provider and refunded automatically with a stable refund number, never twice.',
      zh: '买家（或运维通过 Temporal）已取消（CANCELLED）：先关闭了支付单再释放库存。之后仍到账的付款会向支付机构核实后自动退款，退款单号固定，不会重复退款。',
    }),
    next: NOTHING_TO_DO,
  }),

  CANCELLED_WATCHING: (ctx: Ctx): Texts => ({
    user: CANCELLED_FOR_BUYER,
    support: support(ctx, {
      en: 'CANCELLED and stock released; the workflow is still watching for a late payment until the provider-side expiry, then queries the provider once more. Any payment found is refunded automatically (stable refund number).',
      zh: '已取消且库存已释放；工作流仍在监控迟到的付款，直到支付机构侧的过期时间，届时再查询一次。发现的任何付款都会自动退款（退款单号固定）。',
    }),
    next: NOTHING_TO_DO,
  }),

  REFUNDING: (ctx: Ctx): Texts => ({
    user: {
      en: 'We are refunding your payment in full; the money goes back the way it came.',
      zh: '正在为您全额退款，款项将原路退回。',
    },
    support: support(ctx, {
      en: 'A refund is in progress at the provider with a stable refund number (retries never refund twice); the order becomes REFUNDED once the provider accepts it and the participants are released.',
      zh: '正在向支付机构发起退款，退款单号固定（重试不会重复退款）；支付机构受理且各参与方释放后，订单变为 REFUNDED。',
    }),
    next: {
      en: 'The order shows as refunded within minutes; your bank may take a few business days to show the money.',
      zh: '几分钟内订单将显示为已退款；款项到账时间取决于银行，可能需要几个工作日。',
    },
    expectedBy: iso(ctx.nowMs + 5 * MINUTE),
  }),

  REFUNDED: (ctx: Ctx): Texts => ({
    user: {
      en: 'Your payment was refunded in full.',
      zh: '您的付款已全额退回。',
    },
    support: support(ctx, {
      en: 'REFUNDED: the provider accepted the full refund (stable refund number); stock and other participants are released.',
      zh: '已退款（REFUNDED）：支付机构已受理全额退款（退款单号固定）；库存等参与方已释放。',
    }),
    next: {
      en: 'The money goes back to your original payment method; depending on your bank it can take a few business days to appear.',
      zh: '款项将退回原支付方式，到账时间取决于银行，可能需要几个工作日。',
    },
  }),

  PAYMENT_MISMATCH: (ctx: Ctx): Texts => ({
    user: {
      en: 'We received a payment that does not match this order. A person is checking it; nothing is lost, and you will be refunded if needed.',
      zh: '我们收到的付款与订单不一致，工作人员正在核查；您的资金不会丢失，如有需要将全额退款。',
    },
    support: support(ctx, {
      en: 'NEEDS_REVIEW (payment mismatch: amount, currency or merchant differs; see the timeline). Never confirmed automatically; stock stays reserved. Waiting for an operator decision: approve (confirm as paid) or refund (refund what was paid, release everything).',
      zh: '待人工审核（付款不一致：金额、币种或商户号不同，详见时间线）。不会自动确认，库存保持预留。等待运营人员决定：通过（按已付款确认）或退款（退还已付金额并释放全部资源）。',
    }),
    next: {
      en: 'Our team either confirms your order or refunds your payment in full, usually within one business day.',
      zh: '工作人员将确认订单或全额退款，通常在一个工作日内完成。',
    },
  }),

  // A refund the provider accepted and later reported failed: the order was refunded, so it is never confirmed again;
  // the only decision is how the money goes back (a new refund, or closing it when it went back another way).
  REFUND_FAILED: (ctx: Ctx): Texts => ({
    user: {
      en: 'Your refund did not reach you: the payment provider reported it failed after accepting it. Our team is refunding you again; nothing is lost.',
      zh: '您的退款未能到账：支付机构受理后报告退款失败。工作人员将重新为您退款，资金不会丢失。',
    },
    support: support(ctx, {
      en: 'NEEDS_REVIEW (REFUND_FAILED): a refund the provider had accepted failed or was closed; the buyer has not been paid back. Only a refund decision settles it (POST /orders/:id/review, decision refund: a new refund under a new number; refundAmount 0 when the money went back by other means); approve is refused. See docs/runbook.md, REFUND_FAILED.',
      zh: '待人工审核（REFUND_FAILED）：支付机构已受理的退款失败或被关闭，买家尚未收到退款。只能以退款决定处理（POST /orders/:id/review，decision 为 refund：以新退款单号重新退款；如款项已通过其他方式退回，refundAmount 为 0）；通过（approve）会被拒绝。见 docs/runbook.md 的 REFUND_FAILED 一节。',
    }),
    next: {
      en: 'Our team refunds your payment again, usually within one business day; you will see the order as refunded once it is sent.',
      zh: '工作人员将重新退款，通常在一个工作日内完成；退款发出后订单将显示为已退款。',
    },
  }),

  NEEDS_REVIEW: (ctx: Ctx): Texts => ({
    user: {
      en: 'Your order needs a manual check by our team. Nothing is lost: either the order is confirmed or your money is refunded in full.',
      zh: '您的订单需要工作人员人工核查。资金不会丢失：订单要么被确认，要么全额退款。',
    },
    support: support(ctx, {
      en: `NEEDS_REVIEW${ctx.reason ? ` (${ctx.reason})` : ''}: automatic handling stopped; see the timeline for the cause. Waiting durably for an operator decision: approve (confirm as paid) or refund (refund what was paid, release everything).`,
      zh: `待人工审核${ctx.reason ? `（${ctx.reason}）` : ''}：自动处理已停止，原因见时间线。工作流持久等待运营人员决定：通过（按已付款确认）或退款（退还已付金额并释放全部资源）。`,
    }),
    next: {
      en: 'Our team either confirms your order or refunds your payment in full, usually within one business day.',
      zh: '工作人员将确认订单或全额退款，通常在一个工作日内完成。',
    },
  }),

  FAILED_OUT_OF_STOCK: (ctx: Ctx): Texts => ({
    user: {
      en: 'Some items are out of stock, so the order could not be placed. No money was taken.',
      zh: '部分商品库存不足，订单未能创建，未扣任何款项。',
    },
    support: support(ctx, {
      en: 'FAILED before a payment existed (OUT_OF_STOCK): any partial reservation was cancelled; no provider payment was created, so no money can have been taken.',
      zh: '在创建支付单前失败（库存不足）：已取消部分预留；未创建支付单，因此不可能已扣款。',
    }),
    next: {
      en: 'Nothing to do. You can order again when the items are back in stock.',
      zh: '您无需任何操作，商品补货后可重新下单。',
    },
  }),

  FAILED: (ctx: Ctx): Texts => ({
    user: {
      en: 'The order could not be placed. No money was taken.',
      zh: '订单未能创建，未扣任何款项。',
    },
    support: support(ctx, {
      en: 'FAILED before the buyer could pay (see the reason and timeline): reservations were cancelled and no payable provider payment was handed out. A payment that still arrives is refunded automatically.',
      zh: '在买家可付款前失败（原因见上及时间线）：预留已取消，未向买家提供可支付的支付单。若仍有付款到账，会自动退款。',
    }),
    next: NOTHING_TO_DO,
  }),

  UNKNOWN: (ctx: Ctx): Texts => ({
    user: {
      en: 'We are processing your order. If anything goes wrong, any money taken is refunded automatically.',
      zh: '正在处理您的订单。如有任何问题，已扣款项会自动原路退回。',
    },
    support: support(ctx, {
      en: 'This status/stage has no dedicated description yet; check the workflow in the Temporal UI (current details and timeline).',
      zh: '该状态/阶段尚无专门说明；请在 Temporal UI 中查看该工作流（当前详情与时间线）。',
    }),
    next: {
      en: 'This page updates by itself; contact support if it does not change for a while.',
      zh: '本页面会自动更新；如长时间没有变化，请联系客服。',
    },
  }),
};

/** English buyer message per status without live data (compatibility with the first API version). */
export const USER_MESSAGES: Record<OrderStatus, string> = {
  AWAITING_PAYMENT: describeStatus({ status: 'AWAITING_PAYMENT', now: 0 }).user.en,
  PAID: describeStatus({ status: 'PAID', now: 0 }).user.en,
  EXPIRED: describeStatus({ status: 'EXPIRED', now: 0 }).user.en,
  CANCELLED: describeStatus({ status: 'CANCELLED', now: 0 }).user.en,
  REFUNDED: describeStatus({ status: 'REFUNDED', now: 0 }).user.en,
  NEEDS_REVIEW: describeStatus({ status: 'NEEDS_REVIEW', now: 0 }).user.en,
  FAILED: describeStatus({ status: 'FAILED', now: 0 }).user.en,
};
