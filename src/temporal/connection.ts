/**
 * Every connection a process of this project makes to Temporal, and the registration of the project's search
 * attributes: the API, the worker and the tools all come here, so TLS, API keys, tracing and the attribute list are
 * set in one place. (The deadline helpers for calls made on those connections are in ./calls.ts.)
 */
import { Client, type ClientInterceptors, Connection, type ConnectionOptions } from '@temporalio/client';
import { OpenTelemetryWorkflowClientInterceptor } from '@temporalio/interceptors-opentelemetry';
import { temporal } from '@temporalio/proto';
import type { NativeConnection } from '@temporalio/worker';
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

/**
 * Connects a client to the configured Temporal frontend (traced when `tracing` is given). With `lazy`, nothing is
 * dialled until the first call (each call then tries again until one connects): the API starts, and takes callbacks,
 * while Temporal is down.
 */
export async function connectTemporal(
  config: TemporalEndpoint & Pick<Config, 'temporalNamespace'>,
  options: { tracing?: Tracing; lazy?: boolean } = {},
): Promise<Client> {
  const connectionOptions: ConnectionOptions = { ...temporalConnectionOptions(config), connectTimeout: '10s' };
  const connection = options.lazy ? Connection.lazy(connectionOptions) : await Connection.connect(connectionOptions);
  const interceptors = clientInterceptors(options.tracing);
  return new Client({ connection, namespace: config.temporalNamespace, ...(interceptors ? { interceptors } : {}) });
}

/**
 * Connects a worker's native connection to the configured Temporal frontend. The worker package is loaded here, on
 * first use, so that processes that only need a client (the API) never load the worker's native runtime.
 */
export async function connectWorkerTemporal(config: TemporalEndpoint): Promise<NativeConnection> {
  const { NativeConnection } = await import('@temporalio/worker');
  return NativeConnection.connect(temporalConnectionOptions(config));
}

const TYPE_BY_NAME = {
  Keyword: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  Int: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_INT,
  Bool: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
  Datetime: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
} as const;

/** Registers the project's search attributes when the server lacks them (a server not started by our tooling). */
export async function ensureSearchAttributes(client: Client): Promise<void> {
  const existing = await client.connection.operatorService.listSearchAttributes({
    namespace: client.options.namespace,
  });
  const known = new Set(Object.keys(existing.customAttributes ?? {}));
  const missing = SEARCH_ATTRIBUTES.filter((a) => !known.has(a.name));
  if (missing.length === 0) return;
  await client.connection.operatorService.addSearchAttributes({
    namespace: client.options.namespace,
    searchAttributes: Object.fromEntries(missing.map((a) => [a.name, TYPE_BY_NAME[a.type]])),
  });
}

/** The same registration for a dev server our tooling starts: `--search-attribute NAME=Type` per attribute. */
export function searchAttributeFlags(): string[] {
  return SEARCH_ATTRIBUTES.flatMap(({ name, type }) => ['--search-attribute', `${name}=${type}`]);
}
