/**
 * The API's error mapping: transient dependency failures answer 503 with Retry-After, real faults 500, both in the
 * error shape; what a dependency said reaches the logs, never a public body.
 */
import { Client, Connection } from '@temporalio/client';
import Fastify from 'fastify';
import { buildApi } from '../src/client/app';
import { ApiError, installErrorHandling } from '../src/client/errors';
import { loadConfig } from '../src/config';
import { createDb } from '../src/db/knex';
import { createLogger } from '../src/observability/logger';
import { systemEnv, TEST_ENV } from './support/env';
import { statementsOf } from './support/statements';

const app = Fastify({ logger: false });
installErrorHandling(app);
const failures: Record<string, () => Error> = {
  'mysql-connection-lost': () =>
    Object.assign(new Error('select 1 - Connection lost: The server closed the connection.'), {
      code: 'PROTOCOL_CONNECTION_LOST',
      fatal: true,
    }),
  'mysql-refused': () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:3306'), { code: 'ECONNREFUSED' }),
  'pool-timeout': () => Object.assign(new Error('Knex: Timeout acquiring a connection'), { name: 'KnexTimeoutError' }),
  'temporal-unavailable': () => Object.assign(new Error('14 UNAVAILABLE: Connection dropped'), { code: 14 }),
  // A workflow's limit of updates in flight (or a namespace rate limit): the SDK wraps the gRPC error.
  'temporal-busy': () =>
    Object.assign(new Error('workflow update failed'), {
      cause: Object.assign(new Error('8 RESOURCE_EXHAUSTED: limit on number of concurrent in-flight updates'), {
        code: 8,
      }),
    }),
  bug: () => new TypeError("Cannot read properties of undefined (reading 'x')"),
  business: () => new ApiError(409, 'OUT_OF_STOCK', 'not enough stock for a'),
};
app.get('/fail/:kind', async (request) => {
  throw failures[(request.params as { kind: string }).kind]!();
});

let base: string;
beforeAll(async () => {
  base = await app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(() => app.close());

async function get(path: string) {
  const r = await fetch(`${base}${path}`);
  return {
    statusCode: r.status,
    headers: { 'retry-after': r.headers.get('retry-after') },
    body: (await r.json()) as Record<string, unknown>,
  };
}

test.each(['mysql-connection-lost', 'mysql-refused', 'pool-timeout', 'temporal-unavailable', 'temporal-busy'])(
  '%s answers 503 SERVICE_UNAVAILABLE with Retry-After',
  async (kind) => {
    const r = await get(`/fail/${kind}`);
    expect(r.statusCode).toBe(503);
    expect(r.headers['retry-after']).toBe('1');
    expect(r.body).toMatchObject({ error: 'SERVICE_UNAVAILABLE' });
  },
);

test('a bug answers 500 INTERNAL without leaking its message; a business error keeps its own status', async () => {
  const bug = await get('/fail/bug');
  expect(bug.statusCode).toBe(500);
  expect(bug.body).toEqual({ error: 'INTERNAL', message: 'internal error; it has been logged' });
  const business = await get('/fail/business');
  expect(business.statusCode).toBe(409);
  expect(business.body).toEqual({ error: 'OUT_OF_STOCK', message: 'not enough stock for a' });
});

test('/healthz names a failing dependency "unreachable" and logs what it said, without showing it to anyone who asks', async () => {
  // A database that refuses the API's credentials and a Temporal frontend that is not there.
  const url = new URL(TEST_ENV.databaseUrl);
  url.username = 'payflow_no_such_user';
  url.password = 'wrong-password';
  const db = createDb(url.toString(), { poolMax: 1 });
  const connection = Connection.lazy({ address: '127.0.0.1:1' });
  const logged: string[] = [];
  const api = buildApi({
    config: loadConfig(
      systemEnv({ apiPort: 0, sandboxPort: 1, taskQueue: 'healthz-test' }, { TEMPORAL_CALL_TIMEOUT: '2s' }),
    ),
    db,
    client: new Client({ connection }),
    providers: {},
    logger: createLogger({ level: 'warn', destination: { write: (line: string) => void logged.push(line) } }),
  });
  try {
    const r = await fetch(`${await api.app.listen({ port: 0, host: '127.0.0.1' })}/healthz`);
    const body = await r.text();
    expect(r.status).toBe(503);
    expect(JSON.parse(body)).toEqual({ status: 'degraded', checks: { mysql: 'unreachable', temporal: 'unreachable' } });
    expect(body).not.toMatch(/denied|payflow_no_such_user|127\.0\.0\.1|UNAVAILABLE|DEADLINE|ECONNREFUSED/i);
    // The detail is for operators: in the log, with the dependency it came from.
    const mysql = logged.find((l) => /healthz/.test(l) && /"dependency":"mysql"/.test(l));
    expect(mysql).toMatch(/Access denied for user 'payflow_no_such_user'/);
    expect(logged.some((l) => /healthz/.test(l) && /"dependency":"temporal"/.test(l))).toBe(true);
  } finally {
    await api.close();
    await db.destroy();
    await connection.close().catch(() => undefined);
  }
}, 30_000);

test('with METRICS_PORT, /metrics is served on a listener of its own and not on the API port; scrapes at once share the refresh of the ops gauges in flight', async () => {
  const db = createDb(TEST_ENV.databaseUrl, { poolMax: 2 });
  const connection = Connection.lazy({ address: '127.0.0.1:1' });
  const api = buildApi({
    config: loadConfig(
      systemEnv(
        { apiPort: 0, sandboxPort: 1, taskQueue: 'metrics-port-test' },
        { TEMPORAL_CALL_TIMEOUT: '1s', METRICS_PORT: '9466' },
      ),
    ),
    db,
    client: new Client({ connection }),
    providers: {},
    logger: false,
  });
  try {
    expect(api.metricsApp).toBeDefined();
    const apiUrl = await api.app.listen({ port: 0, host: '127.0.0.1' });
    const metricsUrl = await api.metricsApp!.listen({ port: 0, host: '127.0.0.1' });
    // The port buyers reach does not answer it (the error handler's 404 for an unknown route).
    expect((await fetch(`${apiUrl}/metrics`)).status).toBe(404);
    const scrape = async () => {
      const r = await fetch(`${metricsUrl}/metrics`);
      return { status: r.status, body: await r.text() };
    };
    // A refresh of the ops gauges starts with the count of orders in review; the API's own sweeps (inbox, reservations)
    // share the pool, so the refreshes are told by that statement, not by the number of statements.
    const refreshes = (sql: string[]) =>
      sql.filter((q) => /count\(\*\) as `n` from `orders` where `status` = \?$/i.test(q)).length;
    expect(refreshes(await statementsOf(db, async () => expect((await scrape()).status).toBe(200)))).toBe(1);
    // Ten at once share the refresh in flight (its Temporal count waits for the unreachable server's deadline): one,
    // two at most if a request arrives after it ended; before the fix each request ran its own.
    const ten = await statementsOf(db, async () => {
      const answers = await Promise.all(Array.from({ length: 10 }, scrape));
      expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200));
      expect(answers[9]!.body).toMatch(/payflow_/);
    });
    expect(refreshes(ten)).toBeGreaterThanOrEqual(1);
    expect(refreshes(ten)).toBeLessThanOrEqual(2);
  } finally {
    await api.close();
    await db.destroy();
    await connection.close().catch(() => undefined);
  }
}, 30_000);
