/**
 * Bench-only routes of the system under test (tools/bench-system.ts), under /bench on the API's port. Never
 * registered by the production API (src/client/app.ts).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { type Client, WithStartWorkflowOperation } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { ORDER_WORKFLOW_TYPES } from '../src/contracts/order-workflow';
import type { benchReference } from './bench-reference-workflow';
import { referencePaidSignal, referenceReadyUpdate } from './bench-reference-workflow';

/** The order workflow types the API's start can be sent as: what the API starts, and the previous types. */
export { ORDER_WORKFLOW_TYPES };
export type OrderWorkflowType = (typeof ORDER_WORKFLOW_TYPES)[number];

/** What the routes change and read. */
export interface BenchRoutesState {
  orderWorkflowType: OrderWorkflowType;
  referenceTaskQueue: string;
  /** The production worker (its workflow cache). */
  worker: Worker;
  referenceWorker?: Worker;
}

/** The reference workflow's id for a bench id. */
export const referenceWorkflowId = (id: string) => `bench-reference-${id}`;

const START_TIMEOUT_MS = 30_000;

function workerStats(worker: Worker | undefined) {
  if (!worker) return null;
  const status = worker.getStatus();
  return {
    state: worker.getState(),
    numCachedWorkflows: status.numCachedWorkflows,
    maxCachedWorkflows: worker.options.maxCachedWorkflows,
    reuseV8Context: worker.options.reuseV8Context ?? null,
    maxConcurrentWorkflowTaskExecutions: worker.options.maxConcurrentWorkflowTaskExecutions ?? null,
    numInFlightActivities: status.numInFlightActivities,
    numInFlightLocalActivities: status.numInFlightLocalActivities,
  };
}

export function registerBenchRoutes(app: FastifyInstance, deps: { client: Client; state: BenchRoutesState }): void {
  const { client, state } = deps;

  app.post<{ Body: { type?: string } }>('/bench/order-workflow-type', async (request, reply) => {
    const type = request.body?.type;
    if (!ORDER_WORKFLOW_TYPES.includes(type as OrderWorkflowType))
      return reply.code(422).send({ error: 'UNKNOWN_TYPE', types: ORDER_WORKFLOW_TYPES });
    state.orderWorkflowType = type as OrderWorkflowType;
    return { type: state.orderWorkflowType };
  });

  app.post<{ Body: { id?: string; local?: boolean } }>('/bench/reference', async (request, reply) => {
    if (!state.referenceWorker)
      return reply
        .code(409)
        .send({ error: 'REFERENCE_OFF', message: 'the system was started without BENCH_REFERENCE=on' });
    const id = String(request.body?.id ?? '');
    if (!/^[A-Za-z0-9_-]{1,48}$/.test(id)) return reply.code(422).send({ error: 'BAD_ID' });
    const startOp = new WithStartWorkflowOperation<typeof benchReference>('benchReference', {
      workflowId: referenceWorkflowId(id),
      taskQueue: state.referenceTaskQueue,
      args: [{ id, local: request.body?.local !== false }],
      workflowIdConflictPolicy: 'USE_EXISTING',
    });
    const body = await client.withDeadline(Date.now() + START_TIMEOUT_MS, () =>
      client.workflow.executeUpdateWithStart(referenceReadyUpdate, { startWorkflowOperation: startOp }),
    );
    return reply.code(201).send({ ...body, workflowId: referenceWorkflowId(id) });
  });

  app.post<{ Params: { id: string } }>('/bench/reference/:id/pay', async (request) => {
    await client.withDeadline(Date.now() + START_TIMEOUT_MS, () =>
      client.workflow.getHandle(referenceWorkflowId(request.params.id)).signal(referencePaidSignal),
    );
    return { ok: true };
  });

  /**
   * A full GC on demand (`?gc=1`), so that the heap figures are what is retained, not garbage waiting for collection.
   */
  let gc: (() => void) | undefined;
  app.get<{ Querystring: { gc?: string } }>('/bench/stats', async (request) => {
    if (request.query.gc === '1') {
      if (!gc) {
        setFlagsFromString('--expose-gc');
        gc = runInNewContext('gc') as () => void;
      }
      gc();
    }
    const m = process.memoryUsage();
    const mb = (n: number) => Math.round((n / 2 ** 20) * 10) / 10;
    return {
      pid: process.pid,
      gc: request.query.gc === '1',
      memoryMb: {
        rss: mb(m.rss),
        heapUsed: mb(m.heapUsed),
        heapTotal: mb(m.heapTotal),
        external: mb(m.external),
        arrayBuffers: mb(m.arrayBuffers),
      },
      orderWorkflowType: state.orderWorkflowType,
      worker: workerStats(state.worker),
      referenceWorker: workerStats(state.referenceWorker),
    };
  });
}
