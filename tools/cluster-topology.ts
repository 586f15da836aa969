/**
 * The production topology on one machine: a self-hosted Temporal server on PostgreSQL (several history shards) with
 * its Web UI, the namespace and search attributes, then several worker processes, several API processes and the
 * sandbox provider, each a process of its own. Used by `npm start -- --cluster` and by test/cluster.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { Config } from '../src/config';
import { migrateLatest } from '../src/db/knex';
import { workflowInterceptorModules } from '../src/workers/workflow-modules';
import { ChildService } from './processes';
import {
  type ClusterOptions,
  TemporalCluster,
  ensureClusterBinaries,
  ensureTemporalDatabases,
  readServerSettings,
} from './temporal-cluster';
import { ensureNamespace } from '../src/ops/temporal-namespace';

const SRC = resolve(__dirname, '..', 'src');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface TopologyOptions {
  /** The app's configuration: MySQL, the Temporal frontend address (its port is the cluster's), namespace, ports. */
  config: Config;
  workers?: number;
  apis?: number;
  /** Ports of the APIs (default: the configured PORT and the ones after it). */
  apiPorts?: number[];
  /** Web UI port (undefined: none). */
  uiPort?: number;
  postgres: ClusterOptions['postgres'];
  databases?: ClusterOptions['databases'];
  /** Logs of every process, the rendered workflow bundle. */
  dir: string;
  /** Environment for the app processes on top of ours (tests: timings, secrets). */
  env?: Record<string, string>;
  log: (line: string) => void;
}

export interface Api {
  url: string;
  service: ChildService;
}

export interface Topology {
  cluster: TemporalCluster;
  apis: Api[];
  workers: ChildService[];
  sandbox: ChildService;
  sandboxUrl: string;
  /** Environment the app processes run with (the first API's). */
  env: Record<string, string>;
  /** Starts a worker again (after a kill) and resolves at once. */
  restartWorker(worker: ChildService): void;
  stop(): Promise<void>;
}

/** The history shard count the server runs with. */
async function historyShards(address: string): Promise<number> {
  const connection = await Connection.connect({ address, connectTimeout: '5s' });
  try {
    return (await connection.workflowService.getClusterInfo({})).historyShardCount ?? 0;
  } finally {
    await connection.close();
  }
}

/** Number of pollers the server has seen on the workflow task queue recently. */
async function pollers(address: string, namespace: string, taskQueue: string): Promise<number> {
  const connection = await Connection.connect({ address, connectTimeout: '5s' });
  try {
    const described = await connection.workflowService.describeTaskQueue({
      namespace,
      taskQueue: { name: taskQueue },
      taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    });
    return described.pollers?.length ?? 0;
  } finally {
    await connection.close();
  }
}

export async function startTopology(options: TopologyOptions): Promise<Topology> {
  const { config, log } = options;
  const workerCount = options.workers ?? 2;
  const apiCount = options.apis ?? 2;
  mkdirSync(options.dir, { recursive: true });
  const [host, portText] = config.temporalAddress.split(':');
  if (host !== '127.0.0.1' && host !== 'localhost')
    throw new Error(
      `the local cluster listens on 127.0.0.1; TEMPORAL_ADDRESS=${config.temporalAddress} names another host`,
    );

  const bin = ensureClusterBinaries(log);
  const clusterOptions: ClusterOptions = {
    frontendPort: Number(portText),
    uiPort: options.uiPort,
    namespace: config.temporalNamespace,
    postgres: options.postgres,
    databases: options.databases,
    logDir: options.dir,
  };
  ensureTemporalDatabases(bin, clusterOptions, log);
  const cluster = new TemporalCluster(bin, clusterOptions);
  const children: ChildService[] = [];
  const stop = async () => {
    // APIs first (no new work), then the workers finish what they hold, then the sandbox, the UI and the server.
    const group = (prefix: string) =>
      Promise.all(children.filter((c) => c.name.startsWith(prefix)).map((c) => c.stop()));
    await group('api-');
    await group('worker-');
    await group('sandbox');
    await cluster.stop();
  };
  try {
    log(`Temporal: starting server ${bin.server} on ${cluster.address} (log ${cluster.serverLog})`);
    const t0 = Date.now();
    await cluster.startServer();
    log(`Temporal: server answering after ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    // The shard count is the databases' (fixed at their first start); a different NUM_HISTORY_SHARDS is only a warning
    // in the server's log (seen here: it goes on with the persisted value), so say it where it is seen.
    const wanted = Number(readServerSettings().NUM_HISTORY_SHARDS);
    const shards = await historyShards(cluster.address);
    if (shards !== wanted)
      log(
        `\x1b[33mTemporal: the databases were created with ${shards} history shards; docker/temporal.env asks for ${wanted}, which needs new databases\x1b[0m`,
      );
    await ensureNamespace(config, { log: (l) => log(`Temporal: ${l}`) });
    if (options.uiPort) {
      await cluster.startUi();
      log(`Temporal: Web UI on ${cluster.uiUrl}`);
    }

    log(`MySQL: migrating ${config.databaseUrl.replace(/\/\/[^@]*@/, '//***@')}`);
    await migrateLatest(config.databaseUrl);

    log('Bundling workflow code once for every worker');
    const bundlePath = join(options.dir, 'workflow-bundle.js');
    const { code } = await bundleWorkflowCode({
      workflowsPath: require.resolve('../src/workflows'),
      workflowInterceptorModules: workflowInterceptorModules({ tracing: Boolean(config.tracing.otlpTracesUrl) }),
      logger: { trace() {}, debug() {}, info() {}, warn() {}, error: console.error, log() {} } as never,
    });
    writeFileSync(bundlePath, code);

    const base: Record<string, string> = {
      ...(Object.fromEntries(Object.entries(process.env).filter(([, v]) => v !== undefined)) as Record<string, string>),
      DATABASE_URL: config.databaseUrl,
      TEMPORAL_ADDRESS: config.temporalAddress,
      TEMPORAL_NAMESPACE: config.temporalNamespace,
      TASK_QUEUE: config.taskQueue,
      SANDBOX_PORT: String(config.sandboxPort),
      SANDBOX_URL: config.sandboxUrl,
      SANDBOX_PUBLIC_URL: config.sandboxPublicUrl,
      WORKFLOW_BUNDLE_PATH: bundlePath,
      ...options.env,
    };
    const sandboxUrl = base.SANDBOX_URL!;
    const sandbox = new ChildService(
      'sandbox',
      join(SRC, 'sandbox-provider', 'main.ts'),
      base,
      join(options.dir, 'sandbox.log'),
    );
    children.push(sandbox);
    sandbox.start();

    // Workers: metrics ports side by side (the configured ones, then the next pair), or none when they are off.
    const workers = Array.from({ length: workerCount }, (_, i) => {
      const metrics = (port: number) => String(port === 0 ? 0 : port + 2 * i);
      const env = {
        ...base,
        WORKER_METRICS_PORT: metrics(config.workerMetricsPort),
        TEMPORAL_METRICS_PORT: metrics(config.temporalMetricsPort),
      };
      return new ChildService(
        `worker-${i + 1}`,
        join(SRC, 'workers', 'main.ts'),
        env,
        join(options.dir, `worker-${i + 1}.log`),
      );
    });
    children.push(...workers);
    for (const w of workers) w.start();

    // APIs on the configured port and the ones after it; each its own public base URL unless one is configured.
    const apis = Array.from({ length: apiCount }, (_, i) => {
      const port = options.apiPorts?.[i] ?? config.port + i;
      const url = `http://127.0.0.1:${port}`;
      const env = {
        ...base,
        PORT: String(port),
        PUBLIC_BASE_URL: process.env.PUBLIC_BASE_URL ?? options.env?.PUBLIC_BASE_URL ?? url,
      };
      return {
        url,
        service: new ChildService(
          `api-${i + 1}`,
          join(SRC, 'client', 'main.ts'),
          env,
          join(options.dir, `api-${i + 1}.log`),
        ),
      };
    });
    children.push(...apis.map((a) => a.service));
    for (const a of apis) a.service.start();

    const deadline = Date.now() + 120_000;
    for (const api of apis) {
      for (;;) {
        const status = await fetch(`${api.url}/healthz`, { signal: AbortSignal.timeout(2000) }).then(
          (r) => r.status,
          () => 0,
        );
        if (status === 200) break;
        const dead = children.find((c) => c.proc && (c.proc.exitCode !== null || c.proc.signalCode !== null));
        if (dead)
          throw new Error(
            `${dead.name} exited (${dead.proc!.exitCode ?? dead.proc!.signalCode}); see ${join(options.dir, `${dead.name}.log`)}`,
          );
        if (Date.now() > deadline) throw new Error(`${api.service.name} not healthy within 120 s; see ${options.dir}`);
        await sleep(250);
      }
    }
    while (
      (await pollers(config.temporalAddress, config.temporalNamespace, config.taskQueue).catch(() => 0)) < workerCount
    ) {
      if (Date.now() > deadline)
        throw new Error(`fewer than ${workerCount} workers poll "${config.taskQueue}" after 120 s; see ${options.dir}`);
      await sleep(250);
    }
    log(`${apiCount} API process(es), ${workerCount} worker process(es) and the sandbox are up`);
    return {
      cluster,
      apis,
      workers,
      sandbox,
      sandboxUrl,
      env: { ...base, PORT: String(config.port) },
      restartWorker: (worker) => worker.start(),
      stop,
    };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

/** A short random suffix for names of a run (task queues, databases of tests). */
export const runSuffix = () => randomBytes(4).toString('hex');
