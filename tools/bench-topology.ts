/**
 * `npm run bench -- --topology [--orders 200] [--concurrency 20] [--workers 2] [--apis 2]`: the lifecycle load against
 * the production topology of `npm start -- --cluster` (a self-hosted server on PostgreSQL, workers and APIs as
 * processes of their own, the sandbox), with the CPU each kind of process spends per order: what sizing a deployment
 * needs (README, "Beyond one machine"). Everything is its own: Temporal on 9 free consecutive ports, PostgreSQL
 * databases payflow_bench_topology_{temporal,visibility} (created when missing, kept), MySQL DATABASE_URL's database or
 * payflow_bench_topology (never one the bench did not create), free API and sandbox ports.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { loadConfig } from '../src/config';
import { type OrderPaymentResult, orderWorkflowId } from '../src/contracts/order';
import { createDb } from '../src/db/knex';
import {
  REPORTS_DIR,
  latencyRow,
  log,
  machineFacts,
  ownTemporalServer,
  parseFlags,
  perSecond,
  startProgress,
  summarize,
  table,
  writeReport,
} from './bench-harness';
import { startTopology } from './cluster-topology';
import { commandCpuMs, freePort, jsonCall, processCpuMs } from './processes';
import { isListening } from './temporal-cli';
import { clusterPorts, postgresFromEnv, readServerSettings } from './temporal-cluster';
import { prepareToolDatabase, withDatabase } from './tool-database';

const USAGE = 'usage: npm run bench -- --topology [--orders 200] [--concurrency 20] [--workers 2] [--apis 2]';

async function freeRange(): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const candidate = 20_000 + Math.floor(Math.random() * 10_000);
    const taken = await Promise.all(Object.values(clusterPorts(candidate)).map((p) => isListening(`127.0.0.1:${p}`)));
    if (taken.every((t) => !t)) return candidate;
  }
  throw new Error('found no 9 free consecutive ports for the cluster');
}

export async function runTopologyBench(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, { orders: 'int', concurrency: 'int', workers: 'int', apis: 'int' }, USAGE);
  const orders = (flags.orders as number | undefined) ?? 200;
  const concurrency = Math.min((flags.concurrency as number | undefined) ?? 20, orders);
  const workerCount = (flags.workers as number | undefined) ?? 2;
  const apiCount = (flags.apis as number | undefined) ?? 2;
  const base = loadConfig();
  const databaseUrl = process.env.DATABASE_URL
    ? base.databaseUrl
    : withDatabase(base.databaseUrl, 'payflow_bench_topology');
  await prepareToolDatabase(databaseUrl, 'bench', { legacyNames: [], log });
  const frontendPort = await freeRange();
  const apiPorts = await Promise.all(Array.from({ length: apiCount }, () => freePort()));
  const sandboxPort = await freePort();
  const env: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    TEMPORAL_ADDRESS: `127.0.0.1:${frontendPort}`,
    TEMPORAL_NAMESPACE: 'default',
    TASK_QUEUE: 'bench-topology',
    PORT: String(apiPorts[0]),
    SANDBOX_PORT: String(sandboxPort),
    ADMIN_TOKEN: 'bench-topology-admin-token',
    SANDBOX_SECRET: 'bench-topology-sandbox-secret',
    LOG_LEVEL: 'warn',
    COOLING_OFF_PERIOD: '0s',
    RECONCILIATION_SCHEDULE: 'off',
    WORKER_METRICS_PORT: '0',
    TEMPORAL_METRICS_PORT: '0',
  };
  const config = loadConfig(env);
  const dir = join(REPORTS_DIR, `bench-topology-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(dir, { recursive: true });
  const topology = await startTopology({
    config,
    workers: workerCount,
    apis: apiCount,
    apiPorts,
    postgres: postgresFromEnv(),
    databases: { temporal: 'payflow_bench_topology_temporal', visibility: 'payflow_bench_topology_visibility' },
    dir,
    env,
    log,
  });
  // Ctrl-C (runBench) stops the whole topology too.
  ownTemporalServer(topology);
  const connection = await Connection.connect({ address: config.temporalAddress });
  const client = new Client({ connection, namespace: 'default' });
  const db = createDb(databaseUrl, { poolMax: 2 });
  try {
    const sku = `topology-${Date.now()}`;
    const put = await jsonCall(
      topology.apis[0]!.url,
      'PUT',
      `/admin/products/${sku}`,
      { name: sku, price: 1999, stock: orders },
      { authorization: `Bearer ${env.ADMIN_TOKEN}` },
    );
    if (put.status !== 201) throw new Error(`creating the product failed: ${put.status}`);

    const groups = {
      api: () => topology.apis.map((a) => a.service.proc?.pid),
      worker: () => topology.workers.map((w) => w.proc?.pid),
      sandbox: () => [topology.sandbox.proc?.pid],
      temporal: () => [topology.cluster.serverPid],
    };
    const cpuOf = (pids: (number | undefined)[]) =>
      pids.reduce<number>((sum, pid) => sum + (processCpuMs(pid) ?? 0), 0);
    const before = Object.fromEntries(Object.entries(groups).map(([k, pids]) => [k, cpuOf(pids())])) as Record<
      keyof typeof groups,
      number
    >;
    const dbBefore = {
      postgres: commandCpuMs('postgres') ?? 0,
      mysql: commandCpuMs('mariadbd') ?? commandCpuMs('mysqld') ?? 0,
    };

    let next = 0;
    let paid = 0;
    const failures: string[] = [];
    const createMs: number[] = [];
    const payToPaidMs: number[] = [];
    const t0 = performance.now();
    const stopProgress = startProgress(
      () => `${paid}/${orders} paid · ${failures.length} errors · ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    await Promise.all(
      Array.from({ length: concurrency }, async (_, clientNo) => {
        while (next < orders) {
          const n = next++;
          const api = topology.apis[n % topology.apis.length]!.url;
          try {
            const c0 = performance.now();
            const created = await jsonCall(api, 'POST', '/orders', {
              userId: `topology-${clientNo}`,
              items: [{ sku, quantity: 1 }],
            });
            if (created.status !== 201) throw new Error(`create ${created.status} ${created.body?.error ?? ''}`);
            createMs.push(performance.now() - c0);
            const p0 = performance.now();
            const pay = await jsonCall(topology.sandboxUrl, 'POST', `/v1/payments/${created.body.orderId}/pay`, {});
            if (pay.status !== 200) throw new Error(`pay ${pay.status}`);
            const result = (await client.workflow
              .getHandle(orderWorkflowId(created.body.orderId))
              .result()) as OrderPaymentResult;
            if (result.status !== 'PAID') throw new Error(`result ${result.status}`);
            payToPaidMs.push(performance.now() - p0);
            paid++;
          } catch (err) {
            failures.push((err as Error).message);
          }
        }
      }),
    );
    const wallMs = performance.now() - t0;
    stopProgress();
    const used = Object.fromEntries(
      Object.entries(groups).map(([k, pids]) => [k, cpuOf(pids()) - before[k as keyof typeof groups]]),
    ) as Record<keyof typeof groups, number>;
    const dbUsed = {
      postgres: (commandCpuMs('postgres') ?? 0) - dbBefore.postgres,
      mysql: (commandCpuMs('mariadbd') ?? commandCpuMs('mysqld') ?? 0) - dbBefore.mysql,
    };
    const perOrder = (ms: number) => (paid ? Math.round(ms / paid) : 0);
    const cpuPerOrder = {
      apiProcesses: perOrder(used.api),
      workerProcesses: perOrder(used.worker),
      sandbox: perOrder(used.sandbox),
      temporalServer: perOrder(used.temporal),
      postgres: perOrder(dbUsed.postgres),
      mysql: perOrder(dbUsed.mysql),
    };
    const total = Object.values(cpuPerOrder).reduce((a, b) => a + b, 0);
    const [{ n: paidInDb }] = (await db('orders').where('status', 'PAID').count({ n: '*' })) as [{ n: number }];
    const ok = paid === orders && Number(paidInDb) >= orders && failures.length === 0;
    const report = {
      ok,
      machine: machineFacts(),
      topology: {
        workers: workerCount,
        apis: apiCount,
        shards: Number(readServerSettings().NUM_HISTORY_SHARDS),
        temporal: config.temporalAddress,
      },
      orders,
      concurrency,
      wallTimeMs: Math.round(wallMs),
      ordersPerSecond: perSecond(paid, wallMs),
      createLatencyMs: summarize(createMs),
      payToPaidLatencyMs: summarize(payToPaidMs),
      cpuMsPerOrder: { ...cpuPerOrder, total },
      failures: failures.slice(0, 20),
      logs: dir,
    };
    const file = writeReport('bench-topology', report);
    console.log(`
Topology benchmark ${ok ? '(all orders PAID)' : '(NOT all orders PAID)'}
${table([
  ['machine', report.machine],
  [
    'topology',
    `${apiCount} API process(es), ${workerCount} worker process(es), the sandbox; Temporal ${config.temporalAddress} (${report.topology.shards} shards, PostgreSQL)`,
  ],
  ['orders', `${orders} with ${concurrency} clients, spread over the APIs`],
  ['throughput', `${report.ordersPerSecond.toFixed(2)} orders/s (completed to PAID)`],
  ['create latency ms', latencyRow(report.createLatencyMs)],
  ['pay->PAID ms', latencyRow(report.payToPaidLatencyMs)],
  [
    'CPU ms per order',
    Object.entries(cpuPerOrder)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') + `; total ${total}`,
  ],
  ['errors', failures.length ? `${failures.length} (e.g. ${failures[0]})` : 'none'],
  ['logs', dir],
  ['report', file],
])}`);
    return ok ? 0 : 1;
  } finally {
    await db.destroy();
    // Nothing of the run stays running on the kept databases.
    for await (const wf of client.workflow.list({
      query: `TaskQueue = 'bench-topology' AND ExecutionStatus = 'Running'`,
    })) {
      await client.workflow
        .getHandle(wf.workflowId, wf.runId)
        .terminate('left running by a topology bench run')
        .catch(() => undefined);
    }
    await connection.close();
    await topology.stop();
  }
}
