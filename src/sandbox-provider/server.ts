/**
 * The sandbox payment provider (architecture.md, "Sandbox provider"): a small HTTP server that behaves
 * like Alipay/WeChat for local use and tests, with in-memory state and injectable faults.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import formbody from '@fastify/formbody';
import { z } from 'zod';
import {
  type CreatePaymentResponse,
  CreatePaymentRequest,
  FaultSettings,
  OutTradeNo,
  PayRequest,
  type QueryPaymentResponse,
  RefundRequest,
  SandboxErrorCode,
} from '../contracts/sandbox';
import { acceptEmptyJsonBodies } from '../shared/http';
import { renderBill } from './bill';
import { CASHIER_CSP, renderCashierPage, renderNotFoundPage } from './cashier';
import { chinaDayRange } from './china-time';
import { NotificationDelivery } from './delivery';
import { SandboxApiError, SandboxLocalErrorCode, validationError } from './errors';
import { Faults } from './faults';
import { Pauses } from './pauses';
import { registerShopReceiver } from './shop-receiver';
import { type LatePayments, PaymentLedger, type Payment, toQueryResponse } from './payments';

/** How to build a sandbox server. */
export interface SandboxServerOptions {
  /** HMAC secret that signs notifications (`Sandbox-Signature`). */
  secret: string;
  /** Base URL the sandbox is reached at; paymentUrl is `<publicUrl>/pay/<outTradeNo>`. */
  publicUrl: string;
  /** Notification delays in ms: the first before the first attempt, each next one after a failed attempt. */
  notifySchedule: number[];
  /** A pino(-compatible) logger, or false/absent for none. */
  logger?: FastifyBaseLogger | false;
  /** Clock for payment times, expiry, bills and signatures (timers still run in real time). */
  now?: () => Date;
  /** Source of [0, 1) for fault dice; Math.random by default. */
  random?: () => number;
  /**
   * Serve the development stand-in of the shop's systems at /shop/outbox (src/sandbox-provider/shop-receiver.ts), which
   * checks the outbox relay's signatures with this secret. Absent: not served.
   */
  shopOutboxSecret?: string;
}

/** A sandbox server: listen with `app.listen`, stop with `close()`. */
export interface SandboxServer {
  app: FastifyInstance;
  /** Changes the base of paymentUrl, e.g. once the port chosen by `listen({ port: 0 })` is known. */
  setPublicUrl(url: string): void;
  /** Stops delivering notifications (pending timers cancelled, requests aborted) and closes the server. */
  close(): Promise<void>;
}

interface Context {
  ledger: PaymentLedger;
  delivery: NotificationDelivery;
  faults: Faults;
  pauses: Pauses;
  now: () => Date;
  publicUrl: () => string;
}

const OutTradeNoParams = z.object({ outTradeNo: OutTradeNo });
const BillParams = z.object({ date: z.string() });
const BillQuery = z.object({ merchantId: z.string().min(1).optional() });
const NotificationsQuery = z.object({ outTradeNo: z.string().min(1).optional() });
const NotificationParams = z.object({ id: z.string().min(1) });
const CashierParams = z.object({ outTradeNo: z.string() });
const CashierQuery = z.object({ error: z.string().regex(/^[A-Z_]{1,40}$/) });

/** Builds the sandbox provider server (not yet listening). */
export function createSandboxServer(options: SandboxServerOptions): SandboxServer {
  const now = options.now ?? (() => new Date());
  const app: FastifyInstance = options.logger
    ? Fastify({ loggerInstance: options.logger })
    : Fastify({ logger: false });
  const faults = new Faults(options.random);
  let publicUrl = trimSlash(options.publicUrl);
  const ctx: Context = {
    ledger: new PaymentLedger(now),
    delivery: new NotificationDelivery({
      secret: options.secret,
      schedule: options.notifySchedule,
      faults,
      now,
      logger: app.log.child({ component: 'notify' }),
    }),
    faults,
    pauses: new Pauses(),
    now,
    publicUrl: () => publicUrl,
  };

  acceptEmptyJsonBodies(app);
  void app.register(formbody);
  app.setErrorHandler(handleError);
  app.setNotFoundHandler(async (request, reply) =>
    reply
      .code(404)
      .send({ code: SandboxLocalErrorCode.NOT_FOUND, message: `No route ${request.method} ${request.url}` }),
  );
  registerMerchantApi(app, ctx);
  registerCashier(app, ctx);
  registerControl(app, ctx);
  if (options.shopOutboxSecret) registerShopReceiver(app, options.shopOutboxSecret);

  let closing: Promise<void> | undefined;
  return {
    app,
    setPublicUrl: (url) => {
      publicUrl = trimSlash(url);
    },
    close: () => {
      closing ??= (async () => {
        ctx.delivery.close();
        ctx.pauses.wakeAll();
        await app.close();
      })();
      return closing;
    },
  };
}

/** `/v1/*`: the API the merchant's backend calls; latency and errors are injected here. */
function registerMerchantApi(app: FastifyInstance, ctx: Context): void {
  app.post('/v1/payments', async (request) =>
    withApiFaults(ctx, request.log, (): CreatePaymentResponse => {
      const payment = ctx.ledger.create(parse(CreatePaymentRequest, request.body, 'payment request'));
      return {
        tradeNo: payment.tradeNo,
        paymentUrl: `${ctx.publicUrl()}/pay/${encodeURIComponent(payment.outTradeNo)}`,
        status: payment.status,
      };
    }),
  );

  app.get('/v1/payments/:outTradeNo', async (request) =>
    withApiFaults(ctx, request.log, (): QueryPaymentResponse => {
      const { outTradeNo } = parse(OutTradeNoParams, request.params, 'path');
      const payment = ctx.ledger.find(outTradeNo);
      return payment
        ? toQueryResponse(payment, { ms: ctx.faults.get().queryLagMs, now: ctx.now() })
        : { outTradeNo, status: 'NOT_FOUND' };
    }),
  );

  app.post('/v1/payments/:outTradeNo/close', async (request) =>
    withApiFaults(ctx, request.log, () => {
      const { outTradeNo } = parse(OutTradeNoParams, request.params, 'path');
      return { status: ctx.ledger.close(outTradeNo).status };
    }),
  );

  // The buyer's side, not the merchant's: no injected API faults.
  app.post('/v1/payments/:outTradeNo/pay', async (request) => {
    const { outTradeNo } = parse(OutTradeNoParams, request.params, 'path');
    const { amount } = parse(PayRequest, request.body ?? {}, 'pay request');
    return toQueryResponse(pay(ctx, outTradeNo, amount));
  });

  app.post('/v1/refunds', async (request) =>
    withApiFaults(ctx, request.log, () => ctx.ledger.refund(parse(RefundRequest, request.body, 'refund request'))),
  );

  app.get('/v1/bills/:date', async (request, reply) => {
    const csv = await withApiFaults(ctx, request.log, () => bill(ctx, request.params, request.query));
    return reply.type('text/csv; charset=utf-8').send(csv);
  });
}

/** `/pay/:outTradeNo`: the cashier page a person opens, and its Pay form. */
function registerCashier(app: FastifyInstance, ctx: Context): void {
  app.get('/pay/:outTradeNo', async (request, reply) => {
    const { outTradeNo } = parse(CashierParams, request.params, 'path');
    const payment = ctx.ledger.find(outTradeNo);
    reply.header('content-security-policy', CASHIER_CSP).type('text/html; charset=utf-8');
    if (!payment) return reply.code(404).send(renderNotFoundPage(outTradeNo));
    const query = CashierQuery.safeParse(request.query);
    const payable = ctx.ledger.isPayable(payment, latePayments(ctx));
    return reply.send(
      renderCashierPage({ payment, now: ctx.now(), payable, errorCode: query.success ? query.data.error : undefined }),
    );
  });

  // Post/redirect/get: the form pays exactly the order amount, then the page shows the outcome.
  app.post('/pay/:outTradeNo', async (request, reply) => {
    const { outTradeNo } = parse(CashierParams, request.params, 'path');
    const page = `/pay/${encodeURIComponent(outTradeNo)}`;
    try {
      pay(ctx, outTradeNo, undefined);
      return reply.redirect(page, 303);
    } catch (err) {
      if (!(err instanceof SandboxApiError)) throw err;
      if (err.code === SandboxErrorCode.TRADE_NOT_EXIST) {
        return reply
          .code(404)
          .header('content-security-policy', CASHIER_CSP)
          .type('text/html; charset=utf-8')
          .send(renderNotFoundPage(outTradeNo));
      }
      return reply.redirect(`${page}?error=${encodeURIComponent(err.code)}`, 303);
    }
  });
}

/** `/_control/*`: fault settings and notification inspection for tests and demos. */
function registerControl(app: FastifyInstance, ctx: Context): void {
  app.get('/_control/faults', async () => ctx.faults.get());
  app.put('/_control/faults', async (request) =>
    ctx.faults.update(parse(FaultSettings, request.body, 'fault settings')),
  );
  app.post('/_control/reset', async () => ctx.faults.reset());
  app.get('/_control/notifications', async (request) => {
    const { outTradeNo } = parse(NotificationsQuery, request.query, 'query');
    return { notifications: ctx.delivery.list(outTradeNo) };
  });
  app.post('/_control/notifications/:id/redeliver', async (request) => {
    const { id } = parse(NotificationParams, request.params, 'path');
    return ctx.delivery.redeliver(id);
  });
  // What a test's oracle needs beyond the merchant API: whether the buyer paid a trade the merchant had closed already
  // (money that must be given back: the order can never end PAID on it).
  app.get('/_control/payments/:outTradeNo', async (request) => {
    const { outTradeNo } = parse(OutTradeNoParams, request.params, 'path');
    const payment = ctx.ledger.find(outTradeNo);
    if (!payment) throw new SandboxApiError(404, SandboxLocalErrorCode.NOT_FOUND, `No payment ${outTradeNo}`);
    return {
      outTradeNo,
      status: payment.status,
      paidAt: payment.paidAt?.toISOString() ?? null,
      paidAfterClose: payment.paidAt !== null && payment.statusBeforePaid === 'CLOSED',
    };
  });
}

function latePayments(ctx: Context): LatePayments {
  const faults = ctx.faults.get();
  return { afterClose: faults.acceptPaymentAfterClose, afterExpiry: faults.acceptPaymentAfterExpiry };
}

/** The buyer pays; a successful payment starts its notification. */
function pay(ctx: Context, outTradeNo: string, amount: number | undefined): Payment {
  const payment = ctx.ledger.pay(outTradeNo, amount, latePayments(ctx));
  ctx.delivery.notifyPaid(payment);
  return payment;
}

function bill(ctx: Context, params: unknown, query: unknown): string {
  const { date } = parse(BillParams, params, 'path');
  const { merchantId } = parse(BillQuery, query, 'query');
  const range = chinaDayRange(date);
  if (!range)
    throw new SandboxApiError(400, SandboxErrorCode.VALIDATION_FAILED, `Invalid bill date "${date}": use YYYY-MM-DD`);
  const ofMerchant = (p: Payment): boolean => merchantId === undefined || p.merchantId === merchantId;
  return renderBill({
    ...range,
    account: merchantId ?? 'ALL',
    payments: ctx.ledger.paidBetween(range.start, range.end).filter(ofMerchant),
    refunds: ctx.ledger.refundedBetween(range.start, range.end).filter(({ payment }) => ofMerchant(payment)),
    exportedAt: ctx.now(),
  });
}

/**
 * Applies the API faults around one merchant call: latency first, then with probability apiErrorRate a
 * 500. Half of those 500s come before the call is processed, half after it, when the effect has happened
 * but the answer is lost, as with real providers; the merchant's idempotency has to cope with both.
 */
async function withApiFaults<T>(ctx: Context, log: FastifyBaseLogger, handle: () => T): Promise<T> {
  const faults = ctx.faults.get();
  await ctx.pauses.sleep(faults.apiLatencyMs);
  const dice = ctx.faults.draw();
  if (dice >= faults.apiErrorRate) return handle();
  const processed = dice >= faults.apiErrorRate / 2;
  if (processed) {
    try {
      handle();
    } catch {
      // The answer is lost anyway; the caller sees the injected 500 either way.
    }
  }
  log.info({ processed }, 'injected SYSTEM_ERROR (fault)');
  throw new SandboxApiError(500, SandboxErrorCode.SYSTEM_ERROR, 'System busy, please retry later (injected fault)');
}

/** Parses with a contract schema; a mismatch is a 400 VALIDATION_FAILED naming the fields. */
function parse<S extends z.ZodType>(schema: S, data: unknown, what: string): z.infer<S> {
  const result = schema.safeParse(data);
  if (!result.success) throw validationError(result.error, what);
  return result.data;
}

/** An error as fastify hands it over: its own errors carry a statusCode, SandboxApiError does too. */
type HandledError = Error & { statusCode?: number; code?: string };

/** Every error leaves as JSON `{ code, message }`. */
async function handleError(error: HandledError, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const body = errorBody(error);
  if (body.statusCode >= 500 && !(error instanceof SandboxApiError))
    request.log.error({ err: error }, 'unexpected error');
  return reply
    .code(body.statusCode)
    .type('application/json; charset=utf-8')
    .send({ code: body.code, message: body.message });
}

function errorBody(error: HandledError): { statusCode: number; code: string; message: string } {
  if (error instanceof SandboxApiError) return error;
  const status = error.statusCode ?? 500;
  // Fastify's own refusals (malformed JSON, empty JSON body, unsupported content type) are invalid requests too.
  if (status >= 400 && status < 500) {
    return { statusCode: status === 404 ? 404 : 400, code: SandboxErrorCode.VALIDATION_FAILED, message: error.message };
  }
  return {
    statusCode: 500,
    code: SandboxErrorCode.SYSTEM_ERROR,
    message: 'Unexpected sandbox error; see the sandbox log',
  };
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, '');
}
