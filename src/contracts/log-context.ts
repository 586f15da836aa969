/**
 * Which order a workflow or an activity works for, so that every log line can carry `orderId` beside the SDK's
 * `workflowId`. Shared by the workflow interceptors (src/workflows/log-context.ts, in the workflow bundle) and
 * the worker's activity interceptor (src/workers/log-context.ts). Pure functions: safe for workflow code.
 */

/** Activity header in which a workflow passes its order id to the activities it schedules. */
export const ORDER_ID_HEADER = 'payflow-order-id';

/** The order of an order workflow id (`order-<orderId>`), else undefined. */
export function orderIdFromWorkflowId(workflowId: string | undefined): string | undefined {
  return workflowId?.startsWith('order-') && workflowId.length > 'order-'.length
    ? workflowId.slice('order-'.length)
    : undefined;
}

function stringField(value: unknown, field: string): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = (value as Record<string, unknown>)[field];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * The order a workflow run works for: from its id (`order-<orderId>`), else from its input (`orderId`, or
 * `outTradeNo` of a latePayment, whose id `late-payment-<provider>-<orderId>-<trade>` cannot be split safely
 * because order ids may contain `-`). Reconciliation runs have none.
 */
export function orderIdOfWorkflow(workflowType: string, workflowId: string, firstArg: unknown): string | undefined {
  return (
    orderIdFromWorkflowId(workflowId) ??
    stringField(firstArg, 'orderId') ??
    (workflowType === 'latePayment' ? stringField(firstArg, 'outTradeNo') : undefined)
  );
}

/** The order of an activity input object (`{ orderId, ... }`), else undefined. */
export function orderIdOfActivityInput(firstArg: unknown): string | undefined {
  return stringField(firstArg, 'orderId');
}
