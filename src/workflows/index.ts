/** Workflow entry point for the worker bundle: exports every workflow type. */
export { orderLifecycleV2, orderLifecycle } from './order';
/** The previous order workflow type, kept for executions started before orderLifecycle (drained, then removed). */
export { orderPayment } from './order-payment';
export { latePayment } from './late-payment';
export { reconciliation, scheduledReconciliation } from './reconciliation';
export { failedRefundReview } from './failed-refund-review';
