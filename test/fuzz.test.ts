/**
 * Property-based fuzzing of every HTTP input (fast-check): order bodies, callback bodies and headers,
 * admin bodies, path parameters. Properties: never a 5xx, always the documented error shape on 4xx,
 * and never a state change from a rejected input. FUZZ_RUNS scales it (default keeps CI quick).
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { signSandboxPayload } from '../src/providers/sandbox-signature';
import { freshDatabase } from './support/env';
import { createProduct, startSystem, type TestSystem } from './support/system';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
// Each property sends RUNS requests (plus state checks); allow for that on a busy 2-core machine.
jest.setTimeout(60_000 + RUNS * 150);
let sys: TestSystem;
let sku: string;
let totalRequests = 0;

beforeAll(async () => {
  // A database of its own: the no-state-change check fingerprints whole tables, which parallel suites would touch.
  sys = await startSystem({ DATABASE_URL: await freshDatabase('fuzz') });
  sku = await createProduct(sys, { stock: 1000 });
}, 60_000);

afterAll(async () => {
  console.log(`fuzz: ${totalRequests} requests sent`);
  await sys?.stop();
});

/** A fingerprint of every table a rejected request must not touch. */
async function stateFingerprint(): Promise<string> {
  const parts = await Promise.all(
    ['orders', 'order_lines', 'stock', 'products', 'notification_inbox', 'tcc_fence', 'payments', 'refunds'].map(async (t) => {
      const [row] = (await sys.db(t).count({ n: '*' })) as [{ n: number }];
      return `${t}:${row.n}`;
    }),
  );
  const stock = await sys.db('stock').orderBy('sku').select('sku', 'available', 'reserved', 'sold');
  return createHash('sha256').update(parts.join(',') + JSON.stringify(stock)).digest('hex');
}

async function send(method: string, path: string, body: string | undefined, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  totalRequests++;
  const response = await fetch(`${sys.apiUrl}${path}`, { method, headers, body });
  return { status: response.status, text: await response.text() };
}

function expectErrorShape(r: { status: number; text: string }) {
  expect(r.status).toBeGreaterThanOrEqual(400);
  expect(r.status).toBeLessThan(500);
  const body = JSON.parse(r.text) as { error?: unknown; message?: unknown };
  expect(typeof body.error).toBe('string');
  expect(typeof body.message).toBe('string');
}

const jsonish = fc.oneof(
  fc.json(),
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc
    .record(
      {
        userId: fc.oneof(fc.string(), fc.integer(), fc.constant(null)),
        items: fc.oneof(
          fc.array(fc.record({ sku: fc.oneof(fc.string(), fc.constant('no-such-sku-fuzz')), quantity: fc.oneof(fc.integer(), fc.double(), fc.string()) }, { requiredKeys: [] }), { maxLength: 5 }),
          fc.anything(),
        ),
        provider: fc.oneof(fc.string(), fc.constant('sandbox')),
        price: fc.integer(),
      },
      { requiredKeys: [] },
    )
    .map((v) => JSON.stringify(v)),
);

test('fuzzed order bodies never cause a 5xx or a state change', async () => {
  await fc.assert(
    fc.asyncProperty(jsonish, fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded'), async (body, contentType) => {
      const before = await stateFingerprint();
      const r = await send('POST', '/orders', body, { 'content-type': contentType });
      expect(r.status).toBeLessThan(500);
      if (r.status >= 400) expectErrorShape(r);
      expect(r.status).not.toBe(201); // no fuzzed body names a real SKU
      expect(await stateFingerprint()).toBe(before);
    }),
    { numRuns: RUNS },
  );
});

test('fuzzed callbacks (bodies, signatures, timestamps, encodings, sizes) are refused without state change', async () => {
  const secret = sys.config.sandboxSecret;
  const signature = fc.oneof(
    fc.string({ maxLength: 200 }),
    fc.tuple(fc.integer({ min: 0, max: 2 ** 40 }), fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), maxLength: 70 })).map(([t, h]) => `t=${t},v1=${h}`),
    fc.constant(undefined),
  );
  const body = fc.oneof(
    jsonish,
    fc.string({ unit: 'binary', minLength: 60_000, maxLength: 70_000 }),
    fc.record({ id: fc.string(), type: fc.string(), data: fc.anything() }).map((v) => JSON.stringify(v)),
  );
  await fc.assert(
    fc.asyncProperty(body, signature, fc.boolean(), async (raw, sig, staleSigned) => {
      const before = await stateFingerprint();
      // Some cases carry a valid HMAC with a stale timestamp: still refused.
      const header = staleSigned ? signSandboxPayload(secret, raw, Math.floor(Date.now() / 1000) - 10_000) : sig;
      const r = await send('POST', '/callbacks/sandbox', raw, { 'content-type': 'application/json', ...(header === undefined ? {} : { 'sandbox-signature': header }) });
      expect(r.status).toBeLessThan(500);
      expectErrorShape(r);
      expect(await stateFingerprint()).toBe(before);
    }),
    { numRuns: RUNS },
  );
});

test('correctly signed but malformed notifications are refused without state change', async () => {
  const secret = sys.config.sandboxSecret;
  await fc.assert(
    fc.asyncProperty(jsonish, async (raw) => {
      const before = await stateFingerprint();
      const r = await send('POST', '/callbacks/sandbox', raw, { 'content-type': 'application/json', 'sandbox-signature': signSandboxPayload(secret, raw, Math.floor(Date.now() / 1000)) });
      expect(r.status).toBeLessThan(500);
      expectErrorShape(r);
      expect(await stateFingerprint()).toBe(before);
    }),
    { numRuns: RUNS },
  );
});

test('fuzzed admin requests without the token are refused; with it, invalid bodies change nothing', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(fc.string({ maxLength: 80 }), fc.constant(sku)),
      jsonish,
      fc.oneof(fc.constant(undefined), fc.string({ maxLength: 60 }), fc.constant(`Bearer ${sys.config.adminToken}`)),
      async (pathSku, body, auth) => {
        const before = await stateFingerprint();
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (auth !== undefined) headers.authorization = auth.replace(/[^\x20-\x7e]/g, '');
        const r = await send('PUT', `/admin/products/${encodeURIComponent(pathSku)}`, body, headers);
        expect(r.status).toBeLessThan(500);
        if (r.status >= 400) {
          expectErrorShape(r);
          expect(await stateFingerprint()).toBe(before);
        }
      },
    ),
    { numRuns: RUNS },
  );
});

test('fuzzed path parameters never cause a 5xx', async () => {
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.string({ maxLength: 120 }), fc.constantFrom('valueOf', '__proto__', 'constructor', 'toString', 'hasOwnProperty')), fc.constantFrom('GET /orders/', 'POST /orders/cancel', 'GET /admin/products/', 'POST /callbacks/'), async (param, route) => {
      const [method, prefix] = route.split(' ') as [string, string];
      const path = prefix === '/orders/cancel' ? `/orders/${encodeURIComponent(param)}/cancel` : `${prefix}${encodeURIComponent(param)}`;
      const before = await stateFingerprint();
      const r = await send(method, path, method === 'POST' ? '{}' : undefined, { 'content-type': 'application/json', authorization: `Bearer ${sys.config.adminToken}` });
      expect(r.status).toBeLessThan(500);
      if (r.status >= 400) expectErrorShape(r);
      expect(await stateFingerprint()).toBe(before);
    }),
    { numRuns: RUNS },
  );
});
