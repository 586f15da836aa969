/** The Temporal client side: connection, search-attribute registration, and the order workflow calls the API makes. */
import { Client, Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { Config } from '../config';
import { SEARCH_ATTRIBUTES } from '../contracts/search-attributes';

/** Connects a client to the configured Temporal frontend. */
export async function connectTemporal(config: Pick<Config, 'temporalAddress' | 'temporalNamespace'>): Promise<Client> {
  const connection = await Connection.connect({ address: config.temporalAddress, connectTimeout: '10s' });
  return new Client({ connection, namespace: config.temporalNamespace });
}

const TYPE_BY_NAME = {
  Keyword: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  Int: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_INT,
  Bool: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
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
