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

test.each(['mysql-connection-lost', 'mysql-refused', 'pool-timeout', 'temporal-unavailable'])(
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
