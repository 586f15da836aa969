/**
 * The system under test of `npm run bench`: sandbox provider, API and worker in one process, configured entirely
 * from the environment the benchmark hands it. Runs in a child process so that the load generator never shares its
 * event loop. Stops on SIGTERM/SIGINT, or when the parent's IPC channel closes (the benchmark died), so it never
 * outlives the run. With BENCH_SYSTEM_API=off it runs the sandbox and the worker only, and the benchmark runs the API
 * (src/client/main.ts) as a process of its own that it can kill.
 *
 * With the API in this process, the API is the production one (buildApi) on a Temporal client of its own that
 * carries one bench-only client interceptor, and a few bench-only routes under /bench (tools/bench-routes.ts):
 *  - POST /bench/order-workflow-type {type}: the workflow type the API's update-with-start starts, `orderLifecycleV2`
 *    (what the API starts) or a previous type kept registered for draining (`orderLifecycle`, `orderPayment`). The interceptor
 *    swaps only the type name: same input, same admission (Try before the start), same MySQL, provider and callbacks.
 *  - the reference workflow's start and signal, and GET /bench/stats (memory, the worker's workflow cache).
 * With BENCH_REFERENCE=on a second worker polls `<TASK_QUEUE>-reference` with the bench's reference workflow
 * (tools/bench-reference-workflow.ts), bundled apart from the production workflows.
 */
import { ORDER_WORKFLOW_TYPE } from '../src/contracts/order-workflow';
import { Client, type WorkflowClientInterceptor } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import { buildApi } from '../src/client/app';
import { loadConfigOrExit } from '../src/config';
import { createLogger } from '../src/observability/logger';
import { createProviders } from '../src/providers';
import { connectTemporal, connectWorkerTemporal } from '../src/temporal/connection';
import { installTemporalRuntime } from '../src/workers/telemetry';
import { createWorker, workflowTaskPollerBehavior } from '../src/workers/worker';
import { ensureReferenceTable, referenceActivities } from './bench-reference-activities';
import { type BenchRoutesState, ORDER_WORKFLOW_TYPES, registerBenchRoutes } from './bench-routes';
import { startStack } from './stack';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  // One JSON logger for the API, the worker and the SDK, at warn unless LOG_LEVEL says otherwise: the log of a
  // benchmark run should hold only what went wrong.
  const logger = createLogger({
    level: process.env.LOG_LEVEL ? config.logLevel : 'warn',
    format: config.logFormat,
    name: 'payflow-bench-system',
  });
  installTemporalRuntime({ logger });
  const poolMax = Number(process.env.BENCH_DB_POOL_MAX ?? 20);
  const withApi = process.env.BENCH_SYSTEM_API !== 'off';
  const dbPoolMax = Number.isInteger(poolMax) && poolMax > 0 ? poolMax : 20;
  // Sandbox and the production worker (the API is built below, on a client of its own).
  const stack = await startStack({ config, logger, dbPoolMax, api: false });
  /**
   * Stopped in this order: the API (no new work), the worker replaced below, the production stack, the reference
   * worker, the API's connection.
   */
  let stopApi: (() => Promise<void>) | undefined;
  const beforeStack: (() => Promise<void>)[] = [];
  const afterStack: (() => Promise<void>)[] = [];
  let worker = stack.worker;
  // BENCH_MAX_CACHED_WORKFLOWS (bench --open --cache N): the production worker's options with this one workflow-cache
  // size instead of the SDK default. The stack's worker is stopped and replaced by one created the same way
  // (createWorker),
  // on a connection of its own; production settings are not changed.
  const maxCached = process.env.BENCH_MAX_CACHED_WORKFLOWS ? Number(process.env.BENCH_MAX_CACHED_WORKFLOWS) : undefined;
  if (maxCached !== undefined) {
    if (!Number.isInteger(maxCached) || maxCached < 0)
      throw new Error(
        `BENCH_MAX_CACHED_WORKFLOWS must be a whole number, got ${process.env.BENCH_MAX_CACHED_WORKFLOWS}`,
      );
    stack.worker.shutdown();
    const connection = await connectWorkerTemporal(config);
    const replaced = await createWorker({
      config,
      db: stack.db,
      providers: createProviders(config, { db: stack.db }),
      connection,
      tuning: { maxCachedWorkflows: maxCached },
    });
    const running = replaced.run();
    worker = replaced;
    beforeStack.push(async () => {
      if (replaced.getState() === 'RUNNING') replaced.shutdown();
      await running.catch(() => undefined);
      await connection.close();
    });
    console.log(
      `[bench-system] production worker replaced: maxCachedWorkflows ${replaced.options.maxCachedWorkflows} (BENCH_MAX_CACHED_WORKFLOWS)`,
    );
  }

  if (withApi) {
    const state: BenchRoutesState = {
      orderWorkflowType: ORDER_WORKFLOW_TYPE,
      referenceTaskQueue: `${config.taskQueue}-reference`,
      worker,
    };
    // The API starts ORDER_WORKFLOW_TYPE; for the bench's earlier phases the start is sent as a previous type instead.
    const swapType: WorkflowClientInterceptor = {
      async startUpdateWithStart(input, next) {
        const swapped = input.workflowType === ORDER_WORKFLOW_TYPE && state.orderWorkflowType !== ORDER_WORKFLOW_TYPE;
        return next(swapped ? { ...input, workflowType: state.orderWorkflowType } : input);
      },
    };
    const client = await connectTemporal(config);
    const apiClient = new Client({
      connection: client.connection,
      namespace: config.temporalNamespace,
      interceptors: { workflow: [swapType] },
    });
    if (process.env.BENCH_REFERENCE === 'on') {
      await ensureReferenceTable(stack.db);
      const connection = await connectWorkerTemporal(config);
      const worker = await Worker.create({
        connection,
        namespace: config.temporalNamespace,
        taskQueue: state.referenceTaskQueue,
        workflowsPath: require.resolve('./bench-reference-workflow'),
        activities: referenceActivities(stack.db),
        maxConcurrentActivityTaskExecutions: 100,
        // The production worker's polling, so the comparison is of the workflows alone.
        workflowTaskPollerBehavior: workflowTaskPollerBehavior(config.workflowTaskPollers),
      });
      const running = worker.run();
      state.referenceWorker = worker;
      afterStack.push(async () => {
        if (worker.getState() === 'RUNNING') worker.shutdown();
        await running.catch(() => undefined);
        await connection.close();
      });
    }
    const api = buildApi({
      config,
      db: stack.db,
      client: apiClient,
      providers: createProviders(config, { db: stack.db }),
      logger,
    });
    registerBenchRoutes(api.app, { client: apiClient, state });
    await api.app.listen({ host: config.host, port: config.port });
    stopApi = () => api.close();
    afterStack.push(() => client.connection.close());
    console.log(
      `[bench-system] order workflow types: ${ORDER_WORKFLOW_TYPES.join(', ')}; reference worker ${state.referenceWorker ? `on "${state.referenceTaskQueue}"` : 'off'}`,
    );
  }
  console.log(
    `[bench-system] ${withApi ? `API on ${config.publicBaseUrl}, ` : ''}sandbox on ${config.sandboxUrl}, worker polling "${config.taskQueue}"`,
  );
  // The API answers /healthz before the worker has bundled the workflow code; this says the worker polls too.
  process.send?.({ type: 'ready' });

  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`[bench-system] stopping (${why})`);
    try {
      // The API first, so no new work arrives; then the workers finish what they have.
      await stopApi?.();
      for (const s of beforeStack) await s();
      await stack.stop();
      for (const s of afterStack) await s();
    } catch (err) {
      console.error(`[bench-system] stop failed: ${(err as Error).stack ?? String(err)}`);
    }
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  if (process.connected) process.on('disconnect', () => void stop('parent went away'));
}

main().catch((err: unknown) => {
  console.error(`[bench-system] ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
