/** Builds the order-payment worker: workflows from src/workflows, activities from the factory. */
import {
  OpenTelemetryActivityInboundInterceptor,
  OpenTelemetryActivityOutboundInterceptor,
  makeWorkflowExporter,
} from '@temporalio/interceptors-opentelemetry';
import {
  type NativeConnection,
  Worker,
  type ActivityInterceptorsFactory,
  type WorkerOptions,
} from '@temporalio/worker';
import type { Knex } from 'knex';
import { createActivities } from '../activities';
import { type Config, DEFAULT_WORKFLOW_TASK_POLLERS } from '../config';
import type { Tracing } from '../observability/tracing';
import type { ProviderRegistry } from '../providers/types';
import { connectWorkerTemporal } from '../temporal/connection';
import { logContextInterceptor } from './log-context';
import { metricsInterceptor } from './metrics';
import { workflowInterceptorModules } from './workflow-modules';

export { OTEL_WORKFLOW_INTERCEPTORS, workflowInterceptorModules } from './workflow-modules';

/** Where the workflow code comes from: a prebuilt bundle (tests, production) or the source path (dev). */
export type WorkflowSource = { workflowBundle: { code: string } | { codePath: string } } | { workflowsPath: string };

/** Options of createWorker. */
export interface CreateWorkerOptions {
  config: Pick<Config, 'temporalAddress' | 'temporalNamespace' | 'taskQueue'> &
    Partial<
      Pick<Config, 'temporalTls' | 'temporalApiKey' | 'workflowCacheSize' | 'workflowTaskPollers' | 'pointsCurrency'>
    >;
  db: Knex;
  providers: ProviderRegistry;
  /** Reconciliation's clock (whether a bill day has ended); default Date.now (tests inject one). */
  now?: () => number;
  connection?: NativeConnection;
  /**
   * A prebuilt bundle must have been built with `workflowInterceptorModules({ tracing })` for the same tracing
   * setting (the worker cannot add workflow interceptors to a bundle); a source path gets them here.
   */
  workflows?: WorkflowSource;
  tuning?: Partial<
    Pick<
      WorkerOptions,
      'maxConcurrentActivityTaskExecutions' | 'maxConcurrentWorkflowTaskExecutions' | 'maxCachedWorkflows'
    >
  >;
  /**
   * OpenTelemetry (createTracing(config, 'payflow-worker')); undefined = off: no OTel interceptor, module or sink at
   * all.
   */
  tracing?: Tracing;
}

/**
 * Workflow-task polls autoscaled on the server's hints, from 1 up to `maximum` (WORKFLOW_TASK_POLLERS, which says
 * why); the SDK's default is a fixed 10, 2 of them for new workflows.
 */
export function workflowTaskPollerBehavior(
  maximum = DEFAULT_WORKFLOW_TASK_POLLERS,
): NonNullable<WorkerOptions['workflowTaskPollerBehavior']> {
  // The SDK starts at 5 polls unless told otherwise, and refuses an initial count above the maximum.
  return { type: 'autoscaling', maximum, initial: Math.min(5, maximum) };
}

/** The worker's options (everything but the connection), built without connecting anywhere. */
export function buildWorkerOptions(options: Omit<CreateWorkerOptions, 'connection'>): WorkerOptions {
  const { tracing } = options;
  const activityInterceptors: ActivityInterceptorsFactory[] = [logContextInterceptor, metricsInterceptor];
  if (tracing) {
    // Outermost, so the activity's span covers the other interceptors and its logs carry trace_id / span_id.
    activityInterceptors.unshift((ctx) => ({
      inbound: new OpenTelemetryActivityInboundInterceptor(ctx, { tracer: tracing.tracer }),
      outbound: new OpenTelemetryActivityOutboundInterceptor(ctx),
    }));
  }
  return {
    namespace: options.config.temporalNamespace,
    taskQueue: options.config.taskQueue,
    ...(options.workflows ?? { workflowsPath: require.resolve('../workflows') }),
    activities: createActivities({
      db: options.db,
      providers: options.providers,
      now: options.now,
      pointsCurrency: options.config.pointsCurrency,
    }),
    interceptors: {
      activity: activityInterceptors,
      workflowModules: workflowInterceptorModules({ tracing: tracing !== undefined }),
    },
    // Workflow spans are made inside the workflow sandbox and leave it through this sink, to the same processor.
    ...(tracing ? { sinks: { exporter: makeWorkflowExporter(tracing.spanProcessor, tracing.resource) } } : {}),
    maxConcurrentActivityTaskExecutions: 100,
    workflowTaskPollerBehavior: workflowTaskPollerBehavior(options.config.workflowTaskPollers),
    // Sized on purpose (WORKFLOW_CACHE_SIZE), not left to the SDK's default, which follows the heap limit.
    ...(options.config.workflowCacheSize !== undefined ? { maxCachedWorkflows: options.config.workflowCacheSize } : {}),
    ...options.tuning,
  };
}

/** Creates (but does not run) a worker for the order task queue. */
export async function createWorker(options: CreateWorkerOptions): Promise<Worker> {
  const connection = options.connection ?? (await connectWorkerTemporal(options.config));
  return Worker.create({ ...buildWorkerOptions(options), connection });
}
