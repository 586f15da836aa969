/**
 * An API process started while Temporal is down (a replica restarted during an outage: a deploy, an OOM kill, a
 * node drain) must still take the providers' callbacks: it stores each one in the inbox and acknowledges it, and the
 * inbox hands it to the order's workflow once Temporal answers. It used to connect to Temporal before listening and
 * exit when it could not, so every replica that restarted during an outage crash-looped and no callback was stored.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { signSandboxPayload } from '../src/providers/sandbox-signature';
import { freePort } from '../tools/processes';
import { freshDatabase, systemEnv } from './support/env';
import { type TestSystem, createProduct, placeOrder, startSystem, waitFor, waitForStatus } from './support/system';

jest.setTimeout(120_000);

const root = join(__dirname, '..');

let sys: TestSystem;
let api: ChildProcess | undefined;
let output = '';
/** A database of the suite's own: the second API's inbox sweeps every due row, and must not touch other suites'. */
let databaseUrl: string;

beforeAll(async () => {
  databaseUrl = await freshDatabase('no_temporal');
  // No query of the provider before the test ends: only the callback can make the order PAID.
  sys = await startSystem({
    DATABASE_URL: databaseUrl,
    QUERY_FIRST_DELAY: '10m',
    QUERY_MAX_INTERVAL: '10m',
    PAYMENT_TIMEOUT: '15m',
  });
}, 60_000);

afterAll(async () => {
  if (api && api.exitCode === null) api.kill('SIGKILL');
  await sys?.stop();
});

test('an API started while Temporal is down answers, stores and acknowledges a callback; the payment reaches the order once Temporal answers', async () => {
  // The buyer pays; the sandbox's own notifications are dropped, so the only one is sent below.
  await sys.setFaults({ dropNotifications: 1 });
  const sku = await createProduct(sys, { stock: 3, price: 1234 });
  const order = await placeOrder(sys, sku);
  const orderId: string = order.orderId;
  const paid = await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  expect(paid.status).toBe(200);
  const payment = await sys.sandbox('GET', `/v1/payments/${orderId}`);
  expect(payment.body.status).toBe('SUCCESS');

  // A second API process, its Temporal address a port nobody listens on.
  const apiPort = await freePort();
  const sandboxPort = Number(new URL(sys.sandboxUrl).port);
  const env = systemEnv(
    { apiPort, sandboxPort, taskQueue: sys.config.taskQueue },
    {
      DATABASE_URL: databaseUrl,
      TEMPORAL_ADDRESS: '127.0.0.1:1',
      QUERY_FIRST_DELAY: '10m',
      QUERY_MAX_INTERVAL: '10m',
      PAYMENT_TIMEOUT: '15m',
    },
  );
  api = spawn(join(root, 'node_modules', '.bin', 'tsx'), ['src/client/main.ts'], {
    cwd: root,
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const stream of [api.stdout!, api.stderr!]) stream.on('data', (d: Buffer) => (output += d.toString()));
  const url = `http://127.0.0.1:${apiPort}`;
  const health = await waitFor(
    async () => {
      if (api!.exitCode !== null) throw new Error(`the API exited ${api!.exitCode}: ${output.slice(-1500)}`);
      return fetch(`${url}/healthz`).then(
        async (r) => ({ status: r.status, body: (await r.json()) as unknown }),
        () => undefined,
      );
    },
    { timeoutMs: 40_000, what: 'the API without Temporal to answer /healthz' },
  );
  expect(health.status).toBe(503);
  expect(health.body).toMatchObject({ status: 'degraded', checks: { mysql: 'ok', temporal: 'unreachable' } });

  const body = JSON.stringify({
    id: `n-${randomBytes(6).toString('hex')}`,
    type: 'payment.succeeded',
    data: {
      outTradeNo: orderId,
      tradeNo: payment.body.tradeNo,
      amount: payment.body.paidAmount,
      currency: 'CNY',
      merchantId: sys.config.sandboxMerchantId,
      paidAt: new Date().toISOString(),
    },
  });
  const ack = await fetch(`${url}/callbacks/sandbox`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'sandbox-signature': signSandboxPayload(sys.config.sandboxSecret, body, Math.floor(Date.now() / 1000)),
    },
    body,
  });
  expect(ack.status).toBe(200);
  expect(await ack.text()).toBe('success');
  const stored = await sys.db('notification_inbox').where({ out_trade_no: orderId }).first('status');
  expect(stored).toBeDefined();

  // The replica goes away; the inbox of the API that reaches Temporal routes the stored notification.
  api.kill('SIGTERM');
  await new Promise((done) => (api!.exitCode !== null ? done(undefined) : api!.once('exit', done)));
  const view = await waitForStatus(sys, orderId, ['PAID'], 60_000);
  expect(view.status).toBe('PAID');
});
