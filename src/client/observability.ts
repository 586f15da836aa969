/**
 * The API's request logs and request spans.
 *
 * - Logs: fastify's request lines ("incoming request", "request completed", errors) go through the process's
 *   pino logger; a route with an `:orderId` parameter logs every line of the request with `orderId`, and a route
 *   that learns the order id later (POST /orders, callbacks) binds it with `bindOrderId`.
 * - Spans (only when tracing is on): one SERVER span per request, `<METHOD> <route>`, continuing an incoming W3C
 *   `traceparent`, active while the handler runs, so the Temporal client's spans (workflow start, update,
 *   signal) are its children and the workflow's and activities' spans follow from them.
 */
import {
  type Context,
  type Span,
  SpanKind,
  SpanStatusCode,
  ROOT_CONTEXT,
  context,
  propagation,
  trace,
} from '@opentelemetry/api';
import { type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import type { Tracing } from '../observability/tracing';

/** Adds `orderId` to every further log line of this request (and to its span, when traced). */
export function bindOrderId(request: FastifyRequest, reply: FastifyReply, orderId: string): void {
  const log = request.log.child({ orderId });
  request.log = log;
  reply.log = log;
  spans.get(request)?.span.setAttribute('payflow.order_id', orderId);
}

/** fastify's request logging, with the route's `:orderId` bound before the first line is written. */
export class OrderLogController extends LogController {
  override incomingRequest(request: FastifyRequest, reply: FastifyReply, metadata?: Record<string, unknown>): void {
    const orderId = (request.params as Record<string, unknown> | undefined)?.orderId;
    if (typeof orderId === 'string' && orderId !== '') {
      const log = request.log.child({ orderId: orderId.slice(0, 64) });
      request.log = log;
      reply.log = log;
    }
    super.incomingRequest(request, reply, metadata);
  }
}

const spans = new WeakMap<FastifyRequest, { span: Span; ctx: Context }>();

/** Installs the per-request span hooks (call only with tracing on; without them no OTel code runs per request). */
export function installRequestTracing(app: FastifyInstance, tracing: Tracing): void {
  app.addHook('onRequest', (request, reply, done) => {
    const parent = propagation.extract(ROOT_CONTEXT, request.headers);
    const route = request.routeOptions.url;
    const span = tracing.tracer.startSpan(
      `${request.method} ${route ?? 'unmatched'}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': request.method,
          'url.path': request.url.split('?')[0],
          ...(route ? { 'http.route': route } : {}),
        },
      },
      parent,
    );
    const orderId = (request.params as Record<string, unknown> | undefined)?.orderId;
    if (typeof orderId === 'string') span.setAttribute('payflow.order_id', orderId.slice(0, 64));
    const ctx = trace.setSpan(parent, span);
    spans.set(request, { span, ctx });
    const { traceId, spanId } = span.spanContext();
    request.log = request.log.child({ trace_id: traceId, span_id: spanId });
    reply.log = request.log;
    context.with(ctx, done);
  });
  // Body parsing loses the async context (stream events); the handler runs from preHandler, so re-enter it here.
  app.addHook('preHandler', (request, _reply, done) => {
    const entry = spans.get(request);
    if (entry) context.with(entry.ctx, done);
    else done();
  });
  app.addHook('onError', (request, _reply, error, done) => {
    spans.get(request)?.span.recordException(error);
    done();
  });
  app.addHook('onResponse', (request, reply, done) => {
    endSpan(request, reply.statusCode);
    done();
  });
  app.addHook('onRequestAbort', (request, done) => {
    endSpan(request, undefined);
    done();
  });
}

function endSpan(request: FastifyRequest, statusCode: number | undefined): void {
  const entry = spans.get(request);
  if (!entry) return;
  spans.delete(request);
  if (statusCode === undefined) {
    entry.span.setStatus({ code: SpanStatusCode.ERROR, message: 'request aborted by the client' });
  } else {
    entry.span.setAttribute('http.response.status_code', statusCode);
    if (statusCode >= 500) entry.span.setStatus({ code: SpanStatusCode.ERROR });
  }
  entry.span.end();
}
