/** The Temporal client side: connection, search-attribute registration, and the order workflow calls the API makes. */
import { Client, type ClientInterceptors, Connection } from '@temporalio/client';
import { OpenTelemetryWorkflowClientInterceptor } from '@temporalio/interceptors-opentelemetry';
import { temporal } from '@temporalio/proto';
import { type Config, type TemporalEndpoint, temporalConnectionOptions } from '../config';
import { SEARCH_ATTRIBUTES } from '../contracts/search-attributes';
import type { Tracing } from '../observability/tracing';

/**
 * The client's interceptors: with tracing on, OpenTelemetry's, which open a span around every workflow start,
 * update, update-with-start and signal (a child of the active span, e.g. the HTTP request's) and pass its
 * context to the workflow in the Temporal headers; with tracing off, none.
 */
export function clientInterceptors(tracing: Tracing | undefined): ClientInterceptors | undefined {
  return tracing ? { workflow: [new OpenTelemetryWorkflowClientInterceptor({ tracer: tracing.tracer })] } : undefined;
}

/** Connects a client to the configured Temporal frontend (traced when `tracing` is given). */
export async function connectTemporal(config: TemporalEndpoint & Pick<Config, 'temporalNamespace'>, options: { tracing?: Tracing } = {}): Promise<Client> {
  const connection = await Connection.connect({ ...temporalConnectionOptions(config), connectTimeout: '10s' });
  const interceptors = clientInterceptors(options.tracing);
  return new Client({ connection, namespace: config.temporalNamespace, ...(interceptors ? { interceptors } : {}) });
}

const TYPE_BY_NAME = {
  Keyword: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  Int: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_INT,
  Bool: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
  Datetime: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
} as const;

/** Registers the project's search attributes when the server lacks them (a server not started by our tooling). */
export async function ensureSearchAttributes(client: Client): Promise<void> {
  const existing = await client.connection.operatorService.listSearchAttributes({ namespace: client.options.namespace });
  const known = new Set(Object.keys(existing.customAttributes ?? {}));
  const missing = SEARCH_ATTRIBUTES.filter((a) => !known.has(a.name));
  if (missing.length === 0) return;
  await client.connection.operatorService.addSearchAttributes({
    namespace: client.options.namespace,
    searchAttributes: Object.fromEntries(missing.map((a) => [a.name, TYPE_BY_NAME[a.type]])),
  });
}

/** gRPC status codes the client surfaces (from @grpc/grpc-js's `status`). */
const GRPC_DEADLINE_EXCEEDED = 4;
const GRPC_UNAVAILABLE = 14;

/** The gRPC status code of a Temporal client error, looking through the SDK's wrappers (ServiceError's cause). */
export function grpcCodeOf(err: unknown): number | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'number') return e.code;
  }
  return undefined;
}

/** True when a Temporal call failed because the server could not be reached in time (refused, reset, black hole). */
export function isTemporalUnreachable(err: unknown): boolean {
  const code = grpcCodeOf(err);
  return code === GRPC_UNAVAILABLE || code === GRPC_DEADLINE_EXCEEDED;
}

/**
 * Runs `fn`'s Temporal calls under a deadline of `timeoutMs` from now. Without one, a call to an unreachable server
 * waits through the client's own gRPC retries (tens of seconds); with one it fails with DEADLINE_EXCEEDED in time for
 * the caller to record the failure and move on.
 */
export function withTemporalDeadline<R>(client: Client, timeoutMs: number, fn: () => Promise<R>): Promise<R> {
  return client.withDeadline(Date.now() + timeoutMs, fn);
}
