/**
 * The namespace and search-attribute setup of a self-hosted Temporal server, which creates no namespace of its own:
 * registers the namespace when missing, then the project's search attributes, retrying while the new namespace is not
 * yet visible to the operator API ("not found" for a few seconds after it was registered). Used by
 * `npm start -- --cluster`, the cluster tests, and docker-compose.yml's `migrate` service (through
 * src/ops/register-search-attributes.ts), so both set up the same things.
 */
import { Client, Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { ensureSearchAttributes } from '../temporal/connection';
import { type Config, temporalConnectionOptions } from '../config';
import { SEARCH_ATTRIBUTES } from '../contracts/search-attributes';

/** Retention of closed workflows in a namespace the tooling creates. */
export const NAMESPACE_RETENTION_HOURS = 72;

const GRPC_NOT_FOUND = 5;
const GRPC_ALREADY_EXISTS = 6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Registers `namespace` (when missing) and the search attributes (when missing), retrying for up to `timeoutMs`.
 * Resolves with what it did, for the caller's progress line.
 */
export async function ensureNamespace(
  config: Pick<Config, 'temporalAddress' | 'temporalNamespace' | 'temporalTls' | 'temporalApiKey'>,
  options: { timeoutMs?: number; log?: (line: string) => void } = {},
): Promise<{ createdNamespace: boolean; attempts: number }> {
  const log = options.log ?? (() => undefined);
  const connection = await Connection.connect({ ...temporalConnectionOptions(config), connectTimeout: '10s' });
  const namespace = config.temporalNamespace;
  let createdNamespace = false;
  let attempts = 0;
  try {
    const exists = await connection.workflowService.describeNamespace({ namespace }).then(
      () => true,
      (err: unknown) => {
        if ((err as { code?: number }).code === GRPC_NOT_FOUND) return false;
        throw err;
      },
    );
    if (!exists) {
      try {
        await connection.workflowService.registerNamespace({
          namespace,
          workflowExecutionRetentionPeriod: msToTs(`${NAMESPACE_RETENTION_HOURS}h`),
          description: 'payflow orders',
        });
        createdNamespace = true;
        log(`namespace "${namespace}" registered (retention ${NAMESPACE_RETENTION_HOURS} h)`);
      } catch (err) {
        // Registered by someone else in the meantime.
        if ((err as { code?: number }).code !== GRPC_ALREADY_EXISTS) throw err;
      }
    }
    const client = new Client({ connection, namespace });
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    for (;;) {
      attempts++;
      try {
        await ensureSearchAttributes(client);
        const listed = await connection.operatorService.listSearchAttributes({ namespace });
        const missing = SEARCH_ATTRIBUTES.filter((a) => !(a.name in (listed.customAttributes ?? {})));
        if (missing.length === 0) break;
        throw new Error(`search attributes not registered yet: ${missing.map((a) => a.name).join(', ')}`);
      } catch (err) {
        if (Date.now() > deadline)
          throw new Error(
            `search attributes of namespace "${namespace}" could not be registered: ${(err as Error).message}`,
          );
        if (attempts === 1)
          log(
            `namespace "${namespace}" not ready for search attributes yet (${(err as Error).message.split('\n')[0]}); retrying`,
          );
        await sleep(1000);
      }
    }
    log(`all ${SEARCH_ATTRIBUTES.length} search attributes in place in "${namespace}" (${attempts} attempt(s))`);
    return { createdNamespace, attempts };
  } finally {
    await connection.close();
  }
}
