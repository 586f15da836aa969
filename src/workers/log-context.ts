/**
 * Activity interceptor that puts the order id on every log line of an activity (`log` / `Context.current().log`
 * and the SDK's own activity lines), beside the SDK's workflowId, runId and activityType. The order id comes
 * from the `payflow-order-id` header the workflow interceptors set (src/workflows/log-context.ts), else from
 * the workflow id (`order-<orderId>`), else from the activity's input (`{ orderId }`).
 */
import { defaultPayloadConverter } from '@temporalio/common';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { ORDER_ID_HEADER, orderIdFromWorkflowId, orderIdOfActivityInput } from '../contracts/log-context';

export const logContextInterceptor: ActivityInterceptorsFactory = (ctx) => {
  // Known before execute, so that the SDK's "Activity started" line carries it too for order workflows.
  let orderId = ctx.info.inWorkflow ? orderIdFromWorkflowId(ctx.info.workflowExecution?.workflowId) : undefined;
  return {
    inbound: {
      execute(input, next) {
        const header = input.headers[ORDER_ID_HEADER];
        let fromHeader: unknown;
        try {
          fromHeader = header ? defaultPayloadConverter.fromPayload(header) : undefined;
        } catch {
          fromHeader = undefined; // a foreign header of that name must never fail the activity
        }
        orderId =
          (typeof fromHeader === 'string' ? fromHeader : undefined) ?? orderId ?? orderIdOfActivityInput(input.args[0]);
        return next(input);
      },
    },
    outbound: {
      getLogAttributes(input, next) {
        return next(orderId === undefined ? input : { ...input, orderId });
      },
    },
  };
};
