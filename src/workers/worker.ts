/** Builds the order-payment worker: workflows from src/workflows, activities from the factory. */
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Knex } from 'knex';
import { createActivities } from '../activities';
import type { ProviderRegistry } from '../activities/payments';
import type { Config } from '../config';
import { metricsInterceptor } from './metrics';

/** Where the workflow code comes from: a prebuilt bundle (tests, production) or the source path (dev). */
export type WorkflowSource = { workflowBundle: { code: string } | { codePath: string } } | { workflowsPath: string };

/** Options of createWorker. */
export interface CreateWorkerOptions {
  config: Pick<Config, 'temporalAddress' | 'temporalNamespace' | 'taskQueue'>;
  db: Knex;
  providers: ProviderRegistry;
  connection?: NativeConnection;
  workflows?: WorkflowSource;
  tuning?: Partial<Pick<WorkerOptions, 'maxConcurrentActivityTaskExecutions' | 'maxConcurrentWorkflowTaskExecutions' | 'maxCachedWorkflows'>>;
}

/** Creates (but does not run) a worker for the order task queue. */
export async function createWorker(options: CreateWorkerOptions): Promise<Worker> {
  const connection = options.connection ?? (await NativeConnection.connect({ address: options.config.temporalAddress }));
  return Worker.create({
    connection,
    namespace: options.config.temporalNamespace,
    taskQueue: options.config.taskQueue,
    ...(options.workflows ?? { workflowsPath: require.resolve('../workflows') }),
    activities: createActivities({ db: options.db, providers: options.providers }),
    interceptors: { activity: [metricsInterceptor] },
    maxConcurrentActivityTaskExecutions: 100,
    ...options.tuning,
  });
}
