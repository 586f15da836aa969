/**
 * Runs the application's three parts in one process (sandbox provider, HTTP API, worker) against an
 * already-running Temporal server and MySQL. Used by `npm start`, the benchmark and the test harness;
 * production runs the API and the worker as separate processes (`npm run api`, `npm run worker`).
 */
import type { Client } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import type { Knex } from 'knex';
import { type Api, buildApi } from '../client/app';
import { connectTemporal, ensureSearchAttributes } from '../client/temporal';
import type { Config } from '../config';
import { createDb } from '../db/knex';
import { createProviders } from '../providers';
import { type SandboxServer, createSandboxServer } from '../sandbox-provider/server';
import { type WorkflowSource, createWorker } from '../workers/worker';

/** A running stack. */
export interface Stack {
  config: Config;
  db: Knex;
  client: Client;
  api: Api;
  sandbox?: SandboxServer;
  worker: Worker;
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
  /** false silences the API's and sandbox's request logs. */
  logger?: boolean;
  dbPoolMax?: number;
  /** Temporal address for the API's client when it differs from the worker's (tests put a proxy there). */
  clientTemporalAddress?: string;
}

/** Starts the sandbox (optional), the API and a worker; resolves when all listen/poll. */
export async function startStack(options: StackOptions): Promise<Stack> {
  const { config } = options;
  let sandbox: SandboxServer | undefined;
  if (options.sandbox !== false) {
    sandbox = createSandboxServer({ secret: config.sandboxSecret, publicUrl: config.sandboxPublicUrl, notifySchedule: config.sandboxNotifySchedule, logger: false });
    await sandbox.app.listen({ host: config.host, port: config.sandboxPort });
  }
  const db = createDb(config.databaseUrl, { poolMax: options.dbPoolMax ?? 20 });
  const client = await connectTemporal({ ...config, temporalAddress: options.clientTemporalAddress ?? config.temporalAddress });
  await ensureSearchAttributes(client);
  const providers = createProviders(config, { db });
  // The worker first (bundling takes seconds), so that /healthz answers only once orders can be processed.
  const connection = await NativeConnection.connect({ address: config.temporalAddress });
  let worker = await createWorker({ config, db, providers, connection, workflows: options.workflows });
  let running = worker.run();
  const api = buildApi({ config, db, client, providers, logger: options.logger });
  await api.app.listen({ host: config.host, port: config.port });
  let stopped: Promise<void> | undefined;
  return {
    config,
    db,
    client,
    api,
    sandbox,
    get worker() {
      return worker;
    },
    async restartWorker() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.catch(() => undefined);
      worker = await createWorker({ config, db, providers, connection, workflows: options.workflows });
      running = worker.run();
    },
    stop() {
      stopped ??= (async () => {
        // The API first, so no new work arrives; then the worker finishes what it has.
        await api.close();
        if (worker.getState() === 'RUNNING') worker.shutdown();
        await running.catch(() => undefined);
        await connection.close();
        await sandbox?.close();
        await client.connection.close();
        await db.destroy();
      })();
      return stopped;
    },
  };
}
