/**
 * OpenTelemetry tracing, OFF unless configured: with neither OTEL_EXPORTER_OTLP_ENDPOINT nor
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set (and no exporter injected by a test), createTracing returns undefined
 * and nothing below runs: no tracer provider, no context manager, no interceptors, no HTTP hooks.
 *
 * When on, each part of the system (API, worker) gets its own tracer provider and resource (`service.name` =
 * OTEL_SERVICE_NAME, default payflow-api / payflow-worker) exporting over OTLP/HTTP (protobuf). The span
 * context travels HTTP request -> Temporal client (start / update / signal) -> workflow -> activities through
 * @temporalio/interceptors-opentelemetry, which uses the global W3C propagator and the async-local-storage
 * context manager installed here (once per process, however many parts run in it).
 */
import { type Tracer, context, propagation } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { Resource } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import type { Config } from '../config';

/** A running tracer provider for one part of the system. */
export interface Tracing {
  serviceName: string;
  tracer: Tracer;
  resource: Resource;
  /** Also receives the workflow spans (the worker's exporter sink). */
  spanProcessor: SpanProcessor;
  forceFlush(): Promise<void>;
  /** Flushes and stops exporting; the last user of the process-wide context manager also removes it. */
  shutdown(): Promise<void>;
}

/** Test hook: export to this exporter (synchronously, span by span) instead of OTLP, even without an endpoint. */
export interface TracingOverrides {
  exporter?: SpanExporter;
}

let globalUsers = 0;

function acquireGlobalContext(): void {
  if (globalUsers++ > 0) return;
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
}

function releaseGlobalContext(): void {
  if (--globalUsers > 0) return;
  context.disable();
  propagation.disable();
}

/** Whether tracing is configured (an OTLP endpoint) or forced on by an injected exporter. */
export function tracingEnabled(config: Pick<Config, 'tracing'>, overrides: TracingOverrides = {}): boolean {
  return overrides.exporter !== undefined || config.tracing.otlpTracesUrl !== undefined;
}

/**
 * Starts tracing for one part (`payflow-api`, `payflow-worker` unless OTEL_SERVICE_NAME says otherwise); undefined
 * when off.
 */
export function createTracing(
  config: Pick<Config, 'tracing'>,
  defaultServiceName: string,
  overrides: TracingOverrides = {},
): Tracing | undefined {
  if (!tracingEnabled(config, overrides)) return undefined;
  const serviceName = config.tracing.serviceName ?? defaultServiceName;
  const resource = new Resource({ 'service.name': serviceName });
  const spanProcessor = overrides.exporter
    ? new SimpleSpanProcessor(overrides.exporter)
    : new BatchSpanProcessor(new OTLPTraceExporter({ url: config.tracing.otlpTracesUrl }));
  const provider = new BasicTracerProvider({ resource, spanProcessors: [spanProcessor] });
  acquireGlobalContext();
  let stopped: Promise<void> | undefined;
  return {
    serviceName,
    tracer: provider.getTracer('payflow'),
    resource,
    spanProcessor,
    forceFlush: () => provider.forceFlush(),
    shutdown() {
      stopped ??= provider.shutdown().finally(releaseGlobalContext);
      return stopped;
    },
  };
}
