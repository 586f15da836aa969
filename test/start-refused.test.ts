/**
 * A start that Temporal refuses outright (the namespace does not exist, a search attribute it does not know, no
 * permission): no workflow was started, and none will be until a setting changes. The API used to answer 500 and
 * keep the units reserved until the orphan sweeper's grace had passed, and a retry with the same Idempotency-Key was
 * then refused for good (409 RESERVATION_RELEASED). Now: 503 with Retry-After; an unkeyed order's units come back at
 * once (its id was never handed out); a keyed order's stay reserved for its retry (up to RESERVATION_GRACE), which
 * joins them once a server accepts the start.
 */
import { randomBytes } from 'node:crypto';
import { WithStartWorkflowOperation } from '@temporalio/client';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { orderIdForIdempotencyKey } from '../src/client/orders-service';
import { paymentReadyUpdate } from '../src/contracts/order-workflow';
import { isTemporalRefusal } from '../src/temporal/calls';
import { freePort } from '../tools/processes';
import { freshDatabase, systemEnv } from './support/env';
import { type SpawnedApi, spawnApi } from './support/spawned-api';
import { type TestSystem, createProduct, startSystem, stockOf, userId, waitFor } from './support/system';

jest.setTimeout(120_000);

let sys: TestSystem;
let api: SpawnedApi | undefined;
let databaseUrl: string;

beforeAll(async () => {
  // A database of the suite's own: the second API's inbox and sweeper work on every row of theirs.
  databaseUrl = await freshDatabase('start_refused');
  sys = await startSystem({ DATABASE_URL: databaseUrl });
}, 60_000);

afterAll(async () => {
  await api?.kill('SIGKILL');
  await sys?.stop();
});

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const r = await fetch(`${url}/orders`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: r.status, retryAfter: r.headers.get('retry-after'), body: (await r.json()) as any };
}

test('a start Temporal refuses answers 503 with Retry-After; unkeyed units come back at once, keyed ones wait for the retry', async () => {
  const sku = await createProduct(sys, { stock: 3, price: 1500 });

  // A second API whose namespace does not exist on the server (a typo in TEMPORAL_NAMESPACE, a namespace not created
  // yet): every start is refused with NamespaceNotFound.
  const apiPort = await freePort();
  const namespace = `missing-${randomBytes(4).toString('hex')}`;
  const env = systemEnv(
    { apiPort, sandboxPort: Number(new URL(sys.sandboxUrl).port), taskQueue: sys.config.taskQueue },
    { DATABASE_URL: databaseUrl, TEMPORAL_NAMESPACE: namespace, RESERVATION_GRACE: '10m' },
  );
  api = await spawnApi(env, apiPort, 'the API on a missing namespace to answer');
  const { url } = api;

  // Unkeyed: refused, nothing kept.
  const buyer = userId();
  const unkeyed = await post(url, { userId: buyer, items: [{ sku, quantity: 1 }] });
  expect(unkeyed.status).toBe(503);
  expect(unkeyed.retryAfter).toBe('1');
  expect(unkeyed.body.error).toBe('SERVICE_UNAVAILABLE');
  expect(unkeyed.body.orderId).toBeUndefined();
  expect((await stockOf(sys, sku)).available).toBe(3);
  const fences = (await sys.db('tcc_fence').where({ participant: 'stock', resource: sku }).select('status')) as {
    status: string;
  }[];
  expect(fences.map((f) => f.status)).toEqual(['CANCELLED']);

  // Keyed: refused, the unit kept for the key.
  const key = `k-${randomBytes(6).toString('hex')}`;
  const request = { userId: buyer, items: [{ sku, quantity: 1 }] };
  const keyed = await post(url, request, { 'idempotency-key': key });
  expect(keyed.status).toBe(503);
  expect(keyed.retryAfter).toBe('1');
  expect(keyed.body.error).toBe('SERVICE_UNAVAILABLE');
  expect(keyed.body.message).toMatch(/Idempotency-Key/);
  expect((await stockOf(sys, sku)).available).toBe(2);
  const orderId = orderIdForIdempotencyKey(buyer, key);
  const held = await sys.db('tcc_fence').where({ xid: orderId, participant: 'stock' }).first('status');
  expect(held?.status).toBe('TRIED');
  // The same key again on the misconfigured API: refused again, still one unit held.
  expect((await post(url, request, { 'idempotency-key': key })).status).toBe(503);
  expect((await stockOf(sys, sku)).available).toBe(2);
  // The operator is told what to fix.
  await waitFor(async () => api!.output().includes('Temporal refused to start an order workflow'), {
    what: 'the error log line naming the refusal',
  });

  // The retry reaches an API whose server accepts the start: the order is the key's, on the unit already held.
  const retried = await sys.http('POST', '/orders', request, { 'idempotency-key': key });
  expect(retried.status).toBe(201);
  expect(retried.body.orderId).toBe(orderId);
  expect((await stockOf(sys, sku)).available).toBe(2);
});

test('a search attribute the namespace does not know is a refused start (isTemporalRefusal), unlike a deadline', async () => {
  const NotRegistered = defineSearchAttributeKey(
    `PayflowNotRegistered${randomBytes(3).toString('hex')}`,
    SearchAttributeType.KEYWORD,
  );
  const start = new WithStartWorkflowOperation('orderLifecycleV2', {
    workflowId: `refused-${randomBytes(6).toString('hex')}`,
    taskQueue: `nowhere-${randomBytes(4).toString('hex')}`,
    args: [],
    workflowIdConflictPolicy: 'USE_EXISTING',
    typedSearchAttributes: [{ key: NotRegistered, value: 'x' }],
  });
  const err = await sys.client.workflow
    .executeUpdateWithStart(paymentReadyUpdate, { updateId: 'payment-ready', startWorkflowOperation: start })
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  expect(err).toBeDefined();
  expect(isTemporalRefusal(err)).toBe(true);
  expect(
    await start.workflowHandle().then(
      () => 'started',
      () => 'not started',
    ),
  ).toBe('not started');
  // A start that may have reached the server (its deadline passed) is not a refusal.
  const late = new WithStartWorkflowOperation('orderLifecycleV2', {
    workflowId: `late-${randomBytes(6).toString('hex')}`,
    taskQueue: `nowhere-${randomBytes(4).toString('hex')}`,
    args: [],
    workflowIdConflictPolicy: 'USE_EXISTING',
  });
  const deadline = await sys.client
    .withDeadline(Date.now() + 1, () =>
      sys.client.workflow.executeUpdateWithStart(paymentReadyUpdate, {
        updateId: 'payment-ready',
        startWorkflowOperation: late,
      }),
    )
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  expect(deadline).toBeDefined();
  expect(isTemporalRefusal(deadline)).toBe(false);
  // Nothing runs on its behalf for long on the shared server.
  await sys.client.workflow
    .getHandle(late.options.workflowId)
    .terminate('start-refused test')
    .catch(() => undefined);
});
