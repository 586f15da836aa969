/**
 * Structured logs end to end: the API, the Temporal SDK, activities and workflows write JSON lines through one
 * pino logger (captured here), and every activity and workflow line names its order and its workflow.
 * Real dev server, real MySQL, the real sandbox over HTTP.
 */
import { latePaymentWorkflowId } from '../src/contracts/order';
import { ConfigError, loadConfig } from '../src/config';
import { createLogger } from '../src/observability/logger';
import { createProduct, startSystem, type TestSystem, userId, waitFor, waitForStatus } from './support/system';

type Line = Record<string, any>;

/** A pino destination that keeps every line, parsed (a line that is not JSON fails the test). */
const lines: Line[] = [];
const capture = {
  write(chunk: string) {
    for (const text of chunk.split('\n')) if (text.trim()) lines.push(JSON.parse(text) as Line);
  },
};

let sys: TestSystem;

beforeAll(async () => {
  // debug: the SDK's own lifecycle lines ("Activity started", "Workflow completed", ...) are checked too.
  sys = await startSystem(
    { LOG_LEVEL: 'debug', QUERY_FIRST_DELAY: '10m', QUERY_MAX_INTERVAL: '10m' },
    { logDestination: capture },
  );
}, 90_000);

afterAll(async () => {
  await sys?.stop();
});

const linesOf = (workflowId: string) => lines.filter((l) => l.workflowId === workflowId);

/** Places an order, pays it on the sandbox and waits until its workflow has finished. */
async function paidOrder(): Promise<{ orderId: string; workflowId: string }> {
  const sku = await createProduct(sys, { price: 1500, stock: 5 });
  const created = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] });
  expect(created.status).toBe(201);
  const orderId: string = created.body.orderId;
  expect((await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {})).status).toBe(200);
  await waitForStatus(sys, orderId, ['PAID']);
  const workflowId = `order-${orderId}`;
  await sys.client.workflow.getHandle(workflowId).result();
  return { orderId, workflowId };
}

describe('activity and workflow log lines', () => {
  test('carry the order id and the workflow id, as JSON lines through the same logger as the API', async () => {
    const { orderId, workflowId } = await paidOrder();

    // The workflow's own line (workflow `log`, forwarded by the SDK's logger sink after the activation).
    const finished = await waitFor(async () => linesOf(workflowId).find((l) => l.msg === 'order lifecycle finished'), {
      what: 'the workflow log line',
    });
    expect(finished).toMatchObject({
      sdkComponent: 'workflow',
      orderId,
      workflowId,
      workflowType: 'orderLifecycleV2',
      status: 'PAID',
      level: 30,
    });
    expect(typeof finished.runId).toBe('string');
    expect(typeof finished.time).toBe('number');

    // Activity lines written by activity code (Context.current().log).
    const created = linesOf(workflowId).find((l) => l.msg === 'provider payment created');
    expect(created).toMatchObject({
      sdkComponent: 'activity',
      orderId,
      workflowId,
      activityType: 'openOrderWithPayment',
      provider: 'sandbox',
      amount: 1500,
    });
    const paid = linesOf(workflowId).find((l) => l.msg === 'order status changed' && l.to === 'PAID');
    expect(paid).toMatchObject({
      sdkComponent: 'activity',
      orderId,
      workflowId,
      activityType: 'settlePaid',
      from: 'AWAITING_PAYMENT',
    });

    // Every line of this workflow, the SDK's own lifecycle lines included, names the order.
    const all = linesOf(workflowId);
    expect(all.filter((l) => l.msg === 'Activity started').length).toBeGreaterThanOrEqual(2);
    expect(all.some((l) => l.msg === 'Workflow started')).toBe(true);
    expect(all.filter((l) => l.orderId !== orderId)).toEqual([]);
  });

  test("a latePayment's activities name the order although neither its id nor their inputs say which it is", async () => {
    const { orderId } = await paidOrder();
    const { tradeNo } = (await sys.sandbox('GET', `/v1/payments/${orderId}`)).body as { tradeNo: string };
    // The order is PAID by this very trade: the late-payment handler verifies and finds it already confirmed.
    const lateId = `${latePaymentWorkflowId('sandbox', orderId, tradeNo)}-logtest`;
    const result = await sys.client.workflow.execute('latePayment', {
      taskQueue: sys.config.taskQueue,
      workflowId: lateId,
      args: [{ provider: 'sandbox', outTradeNo: orderId, tradeNo }],
    });
    expect(result).toMatchObject({ outcome: 'ALREADY_CONFIRMED' });

    // queryProviderPayment({ provider, outTradeNo }) and getOrderSnapshot(orderId: string) get it from the workflow's
    // header.
    const activities = await waitFor(
      async () => {
        const done = linesOf(lateId).filter((l) => l.msg === 'Activity completed');
        return done.length >= 2 ? done : undefined;
      },
      { what: "the latePayment's activity lines" },
    );
    expect(activities.map((l) => l.activityType)).toEqual(
      expect.arrayContaining(['queryProviderPayment', 'getOrderSnapshot']),
    );
    expect(activities.every((l) => l.orderId === orderId)).toBe(true);
    // The worker's 'Workflow completed' line comes after the result: wait for it, so the checks below cover it.
    await waitFor(async () => linesOf(lateId).find((l) => l.msg === 'Workflow completed'), {
      what: "the latePayment's 'Workflow completed' line",
    });
    // Only the SDK's two "started" lines come before any interceptor has seen the input or the header (and the id
    // late-payment-<provider>-<order>-<trade> is not split, order ids may contain '-'); they still carry workflowId.
    const unnamed = linesOf(lateId).filter((l) => l.orderId !== orderId);
    expect([...new Set(unnamed.map((l) => l.msg))].sort()).toEqual(['Activity started', 'Workflow started']);
    expect(unnamed.every((l) => l.sdkComponent === 'worker' && l.level === 20)).toBe(true);
    expect(
      linesOf(lateId)
        .filter((l) => l.sdkComponent === 'activity' || l.sdkComponent === 'workflow' || l.msg === 'Workflow completed')
        .every((l) => l.orderId === orderId),
    ).toBe(true);
  });
});

describe('API request lines', () => {
  test('carry the order id on routes that have one, and on POST /orders once the order exists', async () => {
    const sku = await createProduct(sys, { price: 700, stock: 2 });
    const created = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] });
    const { orderId } = created.body as { orderId: string };
    await sys.http('GET', `/orders/${orderId}`);

    const completedPost = await waitFor(async () =>
      lines.find((l) => l.msg === 'request completed' && l.orderId === orderId && l.res?.statusCode === 201),
    );
    expect(typeof completedPost.reqId).toBe('string');
    const incomingGet = lines.find((l) => l.msg === 'incoming request' && l.req?.url === `/orders/${orderId}`);
    expect(incomingGet).toMatchObject({ orderId, req: { method: 'GET' } });
    // Logged once the response has been written, which may be after the client has read it.
    const completedGet = await waitFor(
      async () => lines.find((l) => l.msg === 'request completed' && l.reqId === incomingGet?.reqId),
      { what: "the GET's 'request completed' line" },
    );
    expect(completedGet).toMatchObject({ orderId, res: { statusCode: 200 } });
  });
});

describe('LOG_FORMAT', () => {
  test('defaults to json; pretty is accepted (pino-pretty is a devDependency); anything else is a one-line error naming it', () => {
    expect(loadConfig({}).logFormat).toBe('json');
    expect(loadConfig({ LOG_FORMAT: 'pretty' }).logFormat).toBe('pretty');
    expect(() => createLogger({ level: 'silent', format: 'pretty' })).not.toThrow();
    let error: unknown;
    try {
      loadConfig({ LOG_FORMAT: 'xml' });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toBe('Invalid configuration: LOG_FORMAT="xml": must be json or pretty');
  });
});
