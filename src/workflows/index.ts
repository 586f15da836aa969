/** Workflow entry point for the worker bundle: exports every workflow type. */
export { orderPayment } from './order-payment';
export { latePayment } from './late-payment';
export { reconciliation, scheduledReconciliation } from './reconciliation';
