/**
 * The API's error mapping: transient dependency failures answer 503 with Retry-After, real faults 500, both in the
 * error shape.
 */
import Fastify from 'fastify';
import { ApiError, installErrorHandling } from '../src/client/errors';

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
