/**
 * Workflow interceptor modules that go into the workflow bundle. A worker given a source path adds them itself
 * (`interceptors.workflowModules`); whoever prebuilds a bundle (`bundleWorkflowCode`) must pass the same list as
 * `workflowInterceptorModules`, for the tracing setting the workers will run with.
 */

/**
 * The OTel workflow interceptors module of @temporalio/interceptors-opentelemetry (spans of the workflow and its
 * calls).
 */
export const OTEL_WORKFLOW_INTERCEPTORS =
  require.resolve('@temporalio/interceptors-opentelemetry/lib/workflow-interceptors');

/** Always the log context (order id on workflow and activity log lines), plus OpenTelemetry's when tracing is on. */
export function workflowInterceptorModules(options: { tracing: boolean }): string[] {
  const modules = [require.resolve('../workflows/log-context')];
  if (options.tracing) modules.push(OTEL_WORKFLOW_INTERCEPTORS);
  return modules;
}
