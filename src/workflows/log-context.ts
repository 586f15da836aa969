/**
 * Workflow interceptors (not a workflow): the order id on every workflow log line, and passed on to every
 * activity the workflow schedules in the `payflow-order-id` header, so activity log lines carry it too (also
 * for a latePayment, whose id cannot be split into provider, order and trade). Loaded into the workflow
 * bundle through the worker's `interceptors.workflowModules` / `bundleWorkflowCode({ workflowInterceptorModules })`
 * (see workflowInterceptorModules in src/workers/worker.ts). Deterministic: reads only the workflow's own input.
 */
import {
  type Headers,
  type WorkflowInterceptorsFactory,
  defaultPayloadConverter,
  workflowInfo,
} from '@temporalio/workflow';
import { ORDER_ID_HEADER, orderIdFromWorkflowId, orderIdOfWorkflow } from '../contracts/log-context';

export const interceptors: WorkflowInterceptorsFactory = () => {
  let orderId: string | undefined;
  const withOrderHeader = (headers: Headers): Headers =>
    orderId === undefined || headers[ORDER_ID_HEADER]
      ? headers
      : { ...headers, [ORDER_ID_HEADER]: defaultPayloadConverter.toPayload(orderId) };
  return {
    inbound: [
      {
        execute(input, next) {
          const info = workflowInfo();
          orderId = orderIdOfWorkflow(info.workflowType, info.workflowId, input.args[0]);
          return next(input);
        },
      },
    ],
    outbound: [
      {
        getLogAttributes(input, next) {
          const id =
            orderId ?? orderIdFromWorkflowId(typeof input.workflowId === 'string' ? input.workflowId : undefined);
          return next(id === undefined ? input : { ...input, orderId: id });
        },
        scheduleActivity(input, next) {
          return next({ ...input, headers: withOrderHeader(input.headers) });
        },
        scheduleLocalActivity(input, next) {
          return next({ ...input, headers: withOrderHeader(input.headers) });
        },
      },
    ],
  };
};
