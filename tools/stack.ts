/**
 * Runs the application's three parts in one process (sandbox provider, HTTP API, worker) against an
 * already-running Temporal server and MySQL. Used by `npm start`, the benchmark and the test harness;
 * production runs the API and the worker as separate processes (`npm run api`, `npm run worker`).
 */
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import type { Knex } from 'knex';
import { type Api, buildApi } from '../src/client/app';
import type { Config } from '../src/config';
import { createDb } from '../src/db/knex';
import type { Logger } from '../src/observability/logger';
import { type Tracing, type TracingOverrides, createTracing } from '../src/observability/tracing';
import { createProviders } from '../src/providers';
import { type SandboxServer, createSandboxServer } from '../src/sandbox-provider/server';
import { connectTemporal, connectWorkerTemporal, ensureSearchAttributes } from '../src/temporal/connection';
import { type WorkflowSource, createWorker } from '../src/workers/worker';

/** A running stack. */
export interface Stack {
  config: Config;
  db: Knex;
  client: Client;
  api: Api;
  sandbox?: SandboxServer;
  worker: Worker;
  /** OpenTelemetry of each part; both undefined when tracing is off. */
  tracing: { api?: Tracing; worker?: Tracing };
  /** Stops the worker (as a crash or a deploy would) and starts a fresh one on the same task queue. */
  restartWorker(): Promise<void>;
  /** Stops worker, API, sandbox and connections, in that order. */
  stop(): Promise<void>;
}

/** Options of startStack. */
export interface StackOptions {
  config: Config;
  /** Start the sandbox provider in this process on config.sandboxPort (default true). */
  sandbox?: boolean;
  workflows?: WorkflowSource;
  /** The API's logger: the process's pino logger (the one the Temporal runtime logs to), or false for none. */
  logger?: boolean | Logger;
  /** Tracing overrides (tests inject an in-memory exporter); otherwise tracing follows OTEL_EXPORTER_OTLP_ENDPOINT. */
  tracing?: TracingOverrides;
  dbPoolMax?: number;
  /** Temporal address for the API's client when it differs from the worker's (tests put a proxy there). */
  clientTemporalAddress?: string;
  /**
   * Serve the API in this process (default true); false: sandbox and worker only, the API runs elsewhere (bench
   * --kill-api-at).
   */
  api?: boolean;
  /**
   * Close the client's Temporal connection on stop (default true). Test processes leave it to the end of the process:
   * a call an abandoned activity or a shut-down API still holds may be retried by the client's gRPC retry timer after
   * stop, and a channel closed under that timer throws from the timer ("Channel has been shut down"), failing a suite
   * whose tests all passed.
   */
  closeClientOnStop?: boolean;
  /** Reconciliation's clock for the API and the worker (whether a bill day has ended); default Date.now. */
  now?: () => number;
}

/** Starts the sandbox (optional), the API and a worker; resolves when all listen/poll. */
export function startStack(options: StackOptions & { api?: true }): Promise<Stack>;
/** Without the API: the sandbox (optional) and a worker. */
export function startStack(options: StackOptions & { api: false }): Promise<Omit<Stack, 'api'>>;
export async function startStack(options: StackOptions): Promise<Omit<Stack, 'api'> & { api?: Api }> {
  const { config } = options;
  let sandbox: SandboxServer | undefined;
  if (options.sandbox !== false) {
    sandbox = createSandboxServer({
      secret: config.sandboxSecret,
      publicUrl: config.sandboxPublicUrl,
      notifySchedule: config.sandboxNotifySchedule,
      logger: false,
      // The stand-in of the shop's systems the outbox relay delivers to in development (npm start).
      ...(config.production ? {} : { shopOutboxSecret: config.outbox.secret }),
    });
    await sandbox.app.listen({ host: config.host, port: config.sandboxPort });
  }
  const db = createDb(config.databaseUrl, { poolMax: options.dbPoolMax ?? 20 });
  // Off (undefined) unless an OTLP endpoint is configured or a test injects an exporter.
  const tracing = {
    api: createTracing(config, 'payflow-api', options.tracing),
    worker: createTracing(config, 'payflow-worker', options.tracing),
  };
  const client = await connectTemporal(
    { ...config, temporalAddress: options.clientTemporalAddress ?? config.temporalAddress },
    { tracing: tracing.api },
  );
  await ensureSearchAttributes(client);
  const providers = createProviders(config, { db });
  // The worker first (bundling takes seconds), so that /healthz answers only once orders can be processed.
  const connection = await connectWorkerTemporal(config);
  let worker = await createWorker({
    config,
    db,
    providers,
    now: options.now,
    connection,
    workflows: options.workflows,
    tracing: tracing.worker,
  });
  let running = worker.run();
  const api =
    options.api === false
      ? undefined
      : buildApi({ config, db, client, providers, logger: options.logger, tracing: tracing.api, now: options.now });
  await api?.app.listen({ host: config.host, port: config.port });
  let stopped: Promise<void> | undefined;
  return {
    config,
    db,
    client,
    api,
    sandbox,
    tracing,
    get worker() {
      return worker;
    },
    async restartWorker() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.catch(() => undefined);
      worker = await createWorker({
        config,
        db,
        providers,
        now: options.now,
        connection,
        workflows: options.workflows,
        tracing: tracing.worker,
      });
      running = worker.run();
    },
    stop() {
      stopped ??= (async () => {
        // The API first, so no new work arrives; then the worker finishes what it has.
        await api?.close();
        if (worker.getState() === 'RUNNING') worker.shutdown();
        await running.catch(() => undefined);
        await connection.close();
        await sandbox?.close();
        if (options.closeClientOnStop ?? true) await client.connection.close();
        await db.destroy();
        await tracing.api?.shutdown();
        await tracing.worker?.shutdown();
      })();
      return stopped;
    },
  };
}
