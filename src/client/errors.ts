/** The API's one error shape: `{ error: CODE, message, ...details }` with a 4xx status; 5xx only for real faults. */
import type { FastifyError, FastifyInstance } from 'fastify';
import { WorkflowUpdateRPCTimeoutOrCancelledError } from '@temporalio/client';
import { ZodError } from 'zod';
import {
  type AnsweredFailure,
  type ApiAnswer,
  FAILURES,
  FailureType,
  isFailureType,
  orderRefusal,
} from '../contracts/failures';
import { isTemporalBusy, isTemporalUnreachable } from '../temporal/calls';

/** An error the API answers with its own status and code. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/**
 * The API's answer to a failure of the contract (src/contracts/failures.ts): its declared status and code, with the
 * failure's declared detail fields taken from `failureDetails` and any `extra` fields.
 */
export function failureError(
  answer: ApiAnswer,
  message: string,
  failureDetails: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
): ApiError {
  const passed = Object.fromEntries((answer.details ?? []).map((field) => [field, failureDetails[field]]));
  return new ApiError(answer.status, answer.code, message, { ...passed, ...extra });
}

/**
 * POST /orders refused for a business reason (a `tellsBuyer` failure of src/contracts/failures.ts: a coupon taken,
 * too few points, no stock, a reservation already released), answered the same wherever the refusal is met: the API's
 * own Try before the start, the workflow's setup (before or after pricing wrote the order row), a retry with the same
 * Idempotency-Key. The body is the contract's error shape (architecture.md: `{ error, message, ...details }`, e.g.
 * "409 OUT_OF_STOCK (with sku)"), with the failure's declared details and no order id. An order id is what a 201
 * hands out, and a client told one must be able to GET it; a refused request placed no order. The admission's
 * refusals never have an order row, and the workflow's have one (FAILED, for operators) only when a Try refused after
 * pricing, not when pricing itself refused (nor when the order's units were released before pricing: createOrder
 * writes no row then): naming the id would answer one refusal in two shapes, one of them an id that reads 404.
 * Undefined when `type` is not a refusal.
 */
export function orderRefusalError(
  type: string | null | undefined,
  message: string,
  failureDetails: Record<string, unknown> = {},
): ApiError | undefined {
  const answer = orderRefusal(type);
  return answer && failureError(answer, answer.message ?? message, failureDetails);
}

/** Longest provider message an answer quotes (the order's timeline keeps 498 characters of it: the same on replays). */
const PROVIDER_MESSAGE_MAX = 300;

/**
 * POST /orders when the order's setup failed for a reason that is no refusal (orderRefusalError): the provider refused
 * the payment, or a fault outlasted the setup's retries. The order failed for good (its workflow released everything)
 * and no retry with its Idempotency-Key can place it, so the one answer is 409 ORDER_FAILED (PAYMENT_CREATION_FAILED's
 * in the contract), without Retry-After, whether it is the first request's or a retry's: from the workflow's answer,
 * from the FAILED row (`reason` is its status reason) or from the update read again. `reason` is the failure type (an
 * undeclared one, such as an error's class name, is PAYMENT_CREATION_FAILED); the order is named when its row was
 * written. The provider's refusal is quoted (it tells the buyer and support what happened); any other failure's text
 * (a driver's, with SQL or addresses) is not: operators read it in the workflow's history.
 */
export function orderFailedError(reason: string | null | undefined, message: string, orderId?: string): ApiError {
  const type = isFailureType(reason) ? reason : FailureType.PAYMENT_CREATION_FAILED;
  const what =
    type === FailureType.PROVIDER_REJECTED
      ? `the payment provider refused the payment: ${message.slice(0, PROVIDER_MESSAGE_MAX)}`
      : `the order could not be set up (${type})`;
  return failureError(
    FAILURES.PAYMENT_CREATION_FAILED.api,
    `${orderId ? `order ${orderId} failed` : 'the order failed'}: ${what}; place it again with a new Idempotency-Key`,
    {},
    { reason: type, ...(orderId ? { orderId } : {}) },
  );
}

/** 422: the Idempotency-Key names an order placed with a different request (a retry must send the same body). */
export function idempotencyKeyReused(orderId: string): ApiError {
  return new ApiError(422, 'IDEMPOTENCY_KEY_REUSED', 'this Idempotency-Key was used for a different order', {
    orderId,
  });
}

/** The API's answer to a failure type it answers (see FAILURES[type].api). */
export function apiFailure(type: AnsweredFailure, message: string, details: Record<string, unknown> = {}): ApiError {
  return new ApiError(FAILURES[type].api.status, FAILURES[type].api.code, message, details);
}

/** Turns a ZodError into a 400 VALIDATION_FAILED naming the first bad field. */
export function validationError(err: ZodError): ApiError {
  const issues = err.issues.slice(0, 10).map((i) => ({ path: i.path.join('.'), message: i.message }));
  const first = issues[0];
  return new ApiError(
    400,
    'VALIDATION_FAILED',
    first ? `${first.path || 'body'}: ${first.message}` : 'invalid request',
    { issues },
  );
}

/** Parses with a zod schema or throws the API's validation error. */
export function parseOr400<T>(
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: ZodError } },
  value: unknown,
): T {
  const result = schema.safeParse(value);
  if (!result.success) throw validationError(result.error);
  return result.data;
}

/** Installs the error and not-found handlers that keep every answer in the error shape. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setNotFoundHandler((request, reply) => {
    void reply
      .code(404)
      .send({ error: 'NOT_FOUND', message: `no route ${request.method} ${request.url.split('?')[0]}` });
  });
  app.setErrorHandler((err: FastifyError | ApiError | ZodError, request, reply) => {
    if (err instanceof ApiError) {
      // Shed or pending: the client may retry the same request (same Idempotency-Key) after a second.
      if (err.statusCode === 429 || err.statusCode === 503) void reply.header('retry-after', '1');
      return reply.code(err.statusCode).send({ error: err.code, message: err.message, ...err.details });
    }
    if (err instanceof ZodError) {
      const api = validationError(err);
      return reply.code(400).send({ error: api.code, message: api.message, ...api.details });
    }
    const status = (err as FastifyError).statusCode;
    if (status && status >= 400 && status < 500) {
      // Fastify's own 4xx: bad JSON, body too large, unsupported media type.
      const code =
        status === 413 ? 'PAYLOAD_TOO_LARGE' : status === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : 'VALIDATION_FAILED';
      return reply.code(status).send({ error: code, message: err.message });
    }
    if (isTransientDependencyError(err)) {
      // The database or Temporal dropped out under us (a killed connection, a failover): nothing was decided, the
      // same request (with its Idempotency-Key) can be sent again.
      request.log.warn({ err }, 'dependency unavailable; answered 503');
      return reply
        .code(503)
        .header('retry-after', '1')
        .send({ error: 'SERVICE_UNAVAILABLE', message: 'a dependency is briefly unavailable; retry the same request' });
    }
    request.log.error({ err }, 'request failed');
    return reply.code(500).send({ error: 'INTERNAL', message: 'internal error; it has been logged' });
  });
}

/**
 * Connection-level failures of MySQL (mysql2, knex's pool) and Temporal (unreachable or past the call's deadline):
 * transient, retryable.
 */
const TRANSIENT_CODES = new Set([
  'PROTOCOL_CONNECTION_LOST',
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ER_SERVER_SHUTDOWN',
  'ER_CON_COUNT_ERROR',
  'ER_LOCK_DEADLOCK',
  'ER_LOCK_WAIT_TIMEOUT',
]);

export function isTransientDependencyError(err: unknown): boolean {
  const e = err as { code?: unknown; name?: string; fatal?: boolean };
  if (typeof e?.code === 'string' && TRANSIENT_CODES.has(e.code)) return true;
  if (e?.name === 'KnexTimeoutError') return true;
  // An update whose deadline passed: it may still run in the workflow; the same request can be sent again.
  if (err instanceof WorkflowUpdateRPCTimeoutOrCancelledError) return true;
  // Temporal unreachable: gRPC UNAVAILABLE, or DEADLINE_EXCEEDED when the call's own deadline passed (a black hole); or
  // busy for a while (RESOURCE_EXHAUSTED).
  return isTemporalUnreachable(err) || isTemporalBusy(err);
}
