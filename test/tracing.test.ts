/**
 * OpenTelemetry tracing end to end, with an in-memory exporter in place of OTLP: one trace from the HTTP request
 * through the Temporal client's update-with-start into the workflow and its activities; an incoming
 * `traceparent` is continued; and with tracing off nothing of OTel is installed. Real dev server, real MySQL,
 * the real sandbox over HTTP.
 */
import { SpanKind } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { Knex } from 'knex';
import { clientInterceptors } from '../src/temporal/connection';
import { ConfigError, loadConfig } from '../src/config';
import { createTracing } from '../src/observability/tracing';
import { logContextInterceptor } from '../src/workers/log-context';
import { metricsInterceptor } from '../src/workers/metrics';
import { OTEL_WORKFLOW_INTERCEPTORS, buildWorkerOptions, workflowInterceptorModules } from '../src/workers/worker';
import { createProduct, startSystem, type TestSystem, userId, waitFor, waitForStatus } from './support/system';

const exporter = new InMemorySpanExporter();
let sys: TestSystem;

beforeAll(async () => {
  // The workers trace, so their bundle carries OpenTelemetry's workflow interceptors (the shared test bundle does not).
  const { code } = await bundleWorkflowCode({
    workflowsPath: require.resolve('../src/workflows'),
    workflowInterceptorModules: workflowInterceptorModules({ tracing: true }),
    logger: { trace() {}, debug() {}, info() {}, warn() {}, error: console.error, log() {} } as never,
  });
  sys = await startSystem(
    { QUERY_FIRST_DELAY: '10m', QUERY_MAX_INTERVAL: '10m' },
    { tracing: { exporter }, workflows: { workflowBundle: { code } } },
  );
}, 180_000);

afterAll(async () => {
  await sys?.stop();
});

const spans = () => exporter.getFinishedSpans();
const byId = (all: ReadableSpan[]) => new Map(all.map((s) => [s.spanContext().spanId, s]));

/** The span's ancestors, nearest first (as far as exported spans reach). */
function ancestors(span: ReadableSpan, all: ReadableSpan[]): ReadableSpan[] {
  const index = byId(all);
  const chain: ReadableSpan[] = [];
  for (
    let parent = span.parentSpanId ? index.get(span.parentSpanId) : undefined;
    parent;
    parent = parent.parentSpanId ? index.get(parent.parentSpanId) : undefined
  ) {
    chain.push(parent);
  }
  return chain;
}

describe('with tracing on', () => {
  test('POST /orders is one trace: HTTP request -> update-with-start -> workflow -> activities', async () => {
    const sku = await createProduct(sys, { price: 990, stock: 3 });
    const created = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] });
    expect(created.status).toBe(201);
    const orderId: string = created.body.orderId;
    await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    await waitForStatus(sys, orderId, ['PAID']);
    await sys.client.workflow.getHandle(`order-${orderId}`).result();

    // Workflow spans leave the sandbox through the exporter sink once they end (RunWorkflow: when the workflow
    // completes).
    const http = await waitFor(
      async () => spans().find((s) => s.name === 'POST /orders' && s.attributes['payflow.order_id'] === orderId),
      { what: 'the HTTP span' },
    );
    const traceId = http.spanContext().traceId;
    const run = await waitFor(
      async () => spans().find((s) => s.name === 'RunWorkflow:orderLifecycleV2' && s.spanContext().traceId === traceId),
      {
        what: 'the RunWorkflow span in the same trace',
      },
    );
    const trace = spans().filter((s) => s.spanContext().traceId === traceId);

    // The request span is the root, a server span of the API.
    expect(http.kind).toBe(SpanKind.SERVER);
    expect(http.parentSpanId).toBeUndefined();
    expect(http.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/orders',
      'http.response.status_code': 201,
    });
    expect(http.resource.attributes['service.name']).toBe('payflow-api');

    // The client's update-with-start is its child, and the workflow run follows from it.
    const start = trace.find((s) => s.name === 'UpdateWithStartWorkflow:paymentReady');
    expect(start).toBeDefined();
    expect(start!.parentSpanId).toBe(http.spanContext().spanId);
    expect(start!.attributes.temporalWorkflowId).toBe(`order-${orderId}`);
    expect(ancestors(run, trace)).toContain(start);
    expect(ancestors(run, trace)).toContain(http);
    expect(run.resource.attributes['service.name']).toBe('payflow-worker');

    // Activities: scheduled by the workflow (StartActivity) and executed on the worker (RunActivity), under the run.
    for (const activity of ['openOrderWithPayment', 'settlePaid']) {
      const executed = trace.find((s) => s.name === `RunActivity:${activity}`);
      expect(executed).toBeDefined();
      const chain = ancestors(executed!, trace);
      expect(chain[0]?.name).toBe(`StartActivity:${activity}`);
      expect(chain).toContain(run);
      expect(chain).toContain(http);
      expect(executed!.attributes.temporalWorkflowId).toBe(`order-${orderId}`);
      expect(executed!.resource.attributes['service.name']).toBe('payflow-worker');
    }
    // The early-return update handler is traced in the same trace too.
    expect(trace.some((s) => s.name === 'HandleUpdate:paymentReady')).toBe(true);
  });

  test("an incoming traceparent is continued: the request span is the caller's child", async () => {
    const sku = await createProduct(sys, { price: 500, stock: 1 });
    const { orderId } = (await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] }))
      .body as { orderId: string };
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const callerSpanId = '00f067aa0ba902b7';
    const r = await sys.http('GET', `/orders/${orderId}`, undefined, {
      traceparent: `00-${traceId}-${callerSpanId}-01`,
    });
    expect(r.status).toBe(200);

    const get = await waitFor(async () =>
      spans().find((s) => s.name === 'GET /orders/:orderId' && s.spanContext().traceId === traceId),
    );
    expect(get.parentSpanId).toBe(callerSpanId);
    expect(get.attributes).toMatchObject({ 'payflow.order_id': orderId, 'http.response.status_code': 200 });
  });
});

describe('with tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT)', () => {
  const off = loadConfig({});

  test('no tracer, no client interceptor, and worker options without any OTel interceptor, module or sink', () => {
    expect(off.tracing).toEqual({ otlpTracesUrl: undefined, serviceName: undefined });
    expect(createTracing(off, 'payflow-worker')).toBeUndefined();
    expect(clientInterceptors(undefined)).toBeUndefined();

    const options = buildWorkerOptions({ config: off, db: {} as Knex, providers: {} });
    expect(options.interceptors?.activity).toEqual([logContextInterceptor, metricsInterceptor]);
    expect(options.interceptors?.workflowModules).toEqual(workflowInterceptorModules({ tracing: false }));
    expect(options.interceptors?.workflowModules).not.toContain(OTEL_WORKFLOW_INTERCEPTORS);
    expect(options.sinks).toBeUndefined();
  });

  test('whereas the traced worker of this suite has them all', () => {
    const options = buildWorkerOptions({ config: off, db: {} as Knex, providers: {}, tracing: sys.tracing.worker });
    expect(options.interceptors?.activity).toHaveLength(3);
    expect(options.interceptors?.workflowModules).toContain(OTEL_WORKFLOW_INTERCEPTORS);
    expect(options.sinks).toHaveProperty('exporter');
    expect(clientInterceptors(sys.tracing.api)?.workflow).toHaveLength(1);
  });
});

describe('tracing configuration', () => {
  test('OTEL_EXPORTER_OTLP_ENDPOINT turns it on (traces to <endpoint>/v1/traces); OTEL_SERVICE_NAME names the service', async () => {
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' }).tracing).toEqual({
      otlpTracesUrl: 'http://collector:4318/v1/traces',
      serviceName: undefined,
    });
    expect(
      loadConfig({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://otel.example.com/custom/traces',
      }).tracing.otlpTracesUrl,
    ).toBe('https://otel.example.com/custom/traces');

    const on = loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_SERVICE_NAME: 'payflow-eu' });
    const tracing = createTracing(on, 'payflow-api');
    expect(tracing?.serviceName).toBe('payflow-eu');
    const unnamed = createTracing({ tracing: { ...on.tracing, serviceName: undefined } }, 'payflow-api');
    expect(unnamed?.serviceName).toBe('payflow-api');
    // Nothing was recorded, so nothing is sent.
    await tracing?.shutdown();
    await unnamed?.shutdown();
  });

  test('a bad value stops start-up with one line naming the variable', () => {
    const messageOf = (env: Record<string, string>) => {
      try {
        loadConfig(env);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error('expected a ConfigError');
    };
    expect(messageOf({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' })).toBe(
      'Invalid configuration: OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318": must be an http(s) URL',
    );
    expect(messageOf({ OTEL_SERVICE_NAME: 'pay flow' })).toBe(
      'Invalid configuration: OTEL_SERVICE_NAME="pay flow": must be 1-255 characters without spaces',
    );
  });
});
