/**
 * The per-order budget of issue #16 (README, "What one order costs"), read from a fresh happy-path history: an order
 * placed through the API, paid on the sandbox (the callback arrives before the first query), through its cooling-off
 * window to fulfilment. Fails when the order workflow grows past the budget: every event costs the server a write and
 * every task a round trip, on every order.
 */
import { temporal } from '@temporalio/proto';
import { ORDER_WORKFLOW_TYPE, orderWorkflowId } from '../src/contracts/order';
import { historyCost } from '../tools/history-cost';
import { createProduct, placeOrder, startSystem, type TestSystem, waitForStatus } from './support/system';

/** The budget: at most this much per order on the happy path with cooling-off on. */
const BUDGET = { events: 40, workflowTasks: 6, activities: 4, upserts: 3 };

let sys: TestSystem;
let events: temporal.api.history.v1.IHistoryEvent[];

beforeAll(async () => {
  // Cooling-off on (a short window), and queries far off, so the callback is what confirms the payment.
  sys = await startSystem({
    COOLING_OFF_PERIOD: '1s',
    QUERY_FIRST_DELAY: '5m',
    QUERY_MAX_INTERVAL: '5m',
    PAYMENT_TIMEOUT: '10m',
  });
  const sku = await createProduct(sys, { price: 1999, stock: 5 });
  const order = await placeOrder(sys, sku);
  expect((await sys.sandbox('POST', `/v1/payments/${order.orderId}/pay`, {})).status).toBe(200);
  await waitForStatus(sys, order.orderId, ['PAID']);
  const handle = sys.client.workflow.getHandle(orderWorkflowId(order.orderId));
  expect(await handle.result()).toMatchObject({ status: 'PAID' });
  events = (await handle.fetchHistory()).events ?? [];
});

afterAll(async () => {
  await sys?.stop();
});

test('the happy path is one orderLifecycleV2 execution that reached fulfilment through its cooling-off timer', () => {
  expect(events[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name).toBe(ORDER_WORKFLOW_TYPE);
  const cost = historyCost(events);
  expect(cost.activityTypes).toEqual(['openOrderWithPayment', 'settlePaid', 'handOff']);
  expect(cost.timersFired).toBe(1); // the cooling-off window
  expect(events.at(-1)?.eventType).toBe(temporal.api.enums.v1.EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED);
});

test(`the happy path stays within the budget: at most ${BUDGET.events} events, ${BUDGET.workflowTasks} workflow tasks, ${BUDGET.activities} activities, ${BUDGET.upserts} upserts`, () => {
  const cost = historyCost(events);
  const seen = {
    events: cost.events,
    workflowTasks: cost.workflowTasks,
    activities: cost.activities,
    upserts: cost.upserts,
  };
  for (const key of Object.keys(BUDGET) as (keyof typeof BUDGET)[]) {
    expect({ [key]: seen[key] <= BUDGET[key] ? 'within' : `${seen[key]} > ${BUDGET[key]}` }).toEqual({
      [key]: 'within',
    });
  }
});
