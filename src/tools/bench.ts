/**
 * `npm run bench [-- --orders N --concurrency C]`: end-to-end throughput and latency of the order lifecycle.
 * `npm run bench -- --hot-sku`: reservations per second on one SKU, one row vs. buckets (src/tools/bench-hot-sku.ts).
 * `npm run bench -- --flash-sale`: many buyers, little stock, one SKU, through the API (src/tools/bench-flash-sale.ts).
 * `npm run bench -- --callbacks`: a storm of redelivered payment notifications (src/tools/bench-callbacks.ts).
 * `npm run bench -- --polls`: buyers polling their orders, and what that costs everyone else (src/tools/bench-polls.ts).
 *
 * `npm run bench -- --topology`: the lifecycle load on the production topology (cluster, worker and API processes) with
 * the CPU each kind of process spends per order (src/tools/bench-topology.ts).
 * `npm run bench -- --cluster`: the lifecycle run on the dev server, then on a self-hosted cluster it starts (4 shards,
 * PostgreSQL), printed side by side.
 *
 * Configured like the app: the Temporal server at TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE when one listens (else an
 * in-memory headless dev server it starts and stops), MySQL at DATABASE_URL (its database name when DATABASE_URL is
 * set, else `payflow_bench`; a database the bench did not create is never dropped: src/tools/tool-database.ts), PORT
 * and SANDBOX_PORT when set (else free ports), a task queue of its own. The Temporal server's CPU is measured when it
 * runs on this machine (its pid found by its port). The system under test (sandbox + API + worker, src/tools/bench-system.ts) runs in a
 * child process so that the load generator never shares its event loop (src/tools/bench-harness.ts).
 *
 * Each of C clients loops: POST /orders (create latency = until the 201), the buyer pays at the sandbox,
 * then the order workflow's result is awaited with a long poll (pay-to-PAID latency = from the pay request
 * until the workflow has completed as PAID). Prints a report and writes it to reports/bench-<time>.json.
 * Exit code 0 when every order reached PAID, 1 otherwise.
 */
import { cpus } from 'node:os';
import { commandCpuMs } from './processes';
import { isListening } from './temporal-cli';
import { TemporalCluster, clusterPorts, ensureClusterBinaries, ensureTemporalDatabases, postgresFromEnv, readServerSettings } from './temporal-cluster';
import { ensureNamespace } from './temporal-namespace';
import {
  type BenchSystem,
  Load,
  abortReason,
  commandLine,
  cpuMeter,
  latencyRow,
  log,
  machineFacts,
  ownTemporalServer,
  parseFlags,
  REPORTS_DIR,
  perSecond,
  runAbort,
  runBench,
  runLifecycleClients,
  startProgress,
  startSystem,
  stopSystem,
  type Summary,
  type SystemOptions,
  table,
  logDigest,
  logSummary,
  writeReport,
} from './bench-harness';

const MODES: Record<string, { usage: string; run: (argv: string[]) => Promise<number> }> = {
  '--hot-sku': {
    usage: 'npm run bench -- --hot-sku [--buckets N] [--seconds S] [--clients 50,200] [--db-latency-ms X]',
    run: async (argv) => (await import('./bench-hot-sku')).runHotSkuBench(argv),
  },
  '--flash-sale': {
    usage: 'npm run bench -- --flash-sale [--buyers 2000] [--stock 100] [--connections 200] [--buckets N] [--separate-api] [--quick]',
    run: async (argv) => (await import('./bench-flash-sale')).runFlashSaleBench(argv),
  },
  '--callbacks': {
    usage: 'npm run bench -- --callbacks [--orders 100] [--redeliveries 30] [--connections 50] [--kill-api-at N] [--quick]',
    run: async (argv) => (await import('./bench-callbacks')).runCallbacksBench(argv),
  },
  '--topology': {
    usage: 'npm run bench -- --topology [--orders 200] [--concurrency 20] [--workers 2] [--apis 2]',
    run: async (argv) => (await import('./bench-topology')).runTopologyBench(argv),
  },
  '--polls': {
    usage: 'npm run bench -- --polls [--buyers 1000] [--interval 2s] [--duration 30s] [--clients 20] [--quick]',
    run: async (argv) => (await import('./bench-polls')).runPollsBench(argv),
  },
};

const USAGE = `usage: npm run bench [-- --orders N --concurrency C] [--cluster]   (defaults: --orders 200 --concurrency 20)
       --cluster: the same run twice, on the dev server and on a self-hosted cluster the bench starts (PostgreSQL
       databases payflow_bench_temporal/_visibility, kept), and the two side by side
${Object.values(MODES)
  .map((m) => `       ${m.usage}`)
  .join('\n')}
Each mode has --help for its own defaults; --quick runs small numbers for a smoke run.`;

interface Options {
  orders: number;
  concurrency: number;
  cluster: boolean;
}

function parseArgs(argv: string[]): Options {
  const flags = parseFlags(argv, { orders: 'int', concurrency: 'int', cluster: 'flag' }, USAGE);
  const orders = (flags.orders as number | undefined) ?? 200;
  return { orders, concurrency: Math.min((flags.concurrency as number | undefined) ?? 20, orders), cluster: flags.cluster === true };
}

/** What one lifecycle run measured, for the side-by-side table of `--cluster`. */
interface LifecycleFigures {
  ok: boolean;
  temporal: string;
  ordersPerSecond: number;
  createLatencyMs: Summary | null;
  payToPaidLatencyMs: Summary | null;
  cpuText: string;
  systemMsPerOrder: number | null;
  temporalMsPerOrder: number | null;
  /** CPU per order of the databases on this machine: Temporal's PostgreSQL (cluster) and the app's MySQL. */
  postgresMsPerOrder: number | null;
  mysqlMsPerOrder: number | null;
  report: string;
}

async function lifecycleBench(argv: string[]): Promise<number> {
  const options = parseArgs(argv);
  if (!options.cluster) return (await lifecycleRun(options)).ok ? 0 : 1;
  log('--cluster: first on the dev server, then on a self-hosted cluster');
  const dev = await lifecycleRun(options);
  await stopSystem();
  const cluster = await startBenchCluster();
  const onCluster = await lifecycleRun(options, cluster);
  const f = (s: Summary | null) => (s ? `${s.p50.toFixed(0)} / ${s.p95.toFixed(0)} / ${s.p99.toFixed(0)}` : 'n/a');
  const ms = (v: number | null) => (v === null ? 'n/a' : `${v} ms`);
  const rows: [string, LifecycleFigures][] = [
    ['dev server', dev],
    ['cluster', onCluster],
  ];
  const width = Math.max(...rows.map(([, r]) => r.temporal.length), 30);
  const line = (cells: string[]) => `  ${cells[0]!.padEnd(26)}${cells.slice(1).map((c) => c.padEnd(width + 2)).join('')}`;
  console.log(`
Dev server and cluster side by side (${options.orders} orders, ${options.concurrency} clients each; ${machineFacts()})
${line(['', ...rows.map(([name]) => name)])}
${line(['temporal', ...rows.map(([, r]) => r.temporal)])}
${line(['all PAID', ...rows.map(([, r]) => (r.ok ? 'yes' : 'NO'))])}
${line(['orders/s', ...rows.map(([, r]) => r.ordersPerSecond.toFixed(2))])}
${line(['create p50/p95/p99 ms', ...rows.map(([, r]) => f(r.createLatencyMs))])}
${line(['pay->PAID p50/p95/p99', ...rows.map(([, r]) => f(r.payToPaidLatencyMs))])}
${line(['app CPU per order', ...rows.map(([, r]) => ms(r.systemMsPerOrder))])}
${line(['Temporal CPU per order', ...rows.map(([, r]) => ms(r.temporalMsPerOrder))])}
${line(['PostgreSQL CPU per order', ...rows.map(([, r]) => ms(r.postgresMsPerOrder))])}
${line(['MySQL CPU per order', ...rows.map(([, r]) => ms(r.mysqlMsPerOrder))])}
${line(['report', ...rows.map(([, r]) => r.report)])}`);
  return dev.ok && onCluster.ok ? 0 : 1;
}

/**
 * A self-hosted cluster of the bench's own for `--cluster`: the server and UI-less set-up of `npm start -- --cluster`
 * (docker/temporal.env's shards, PostgreSQL from TEMPORAL_POSTGRES_URL) on free ports, namespace and search
 * attributes registered, databases payflow_bench_temporal/_visibility (created when missing, never dropped).
 */
async function startBenchCluster(): Promise<NonNullable<SystemOptions['temporal']>> {
  const bin = ensureClusterBinaries((l) => log(l));
  let frontendPort = 0;
  for (let tries = 0; tries < 50 && !frontendPort; tries++) {
    const candidate = 20_000 + Math.floor(Math.random() * 10_000);
    const ports = Object.values(clusterPorts(candidate));
    if ((await Promise.all(ports.map((p) => isListening(`127.0.0.1:${p}`)))).every((taken) => !taken)) frontendPort = candidate;
  }
  if (!frontendPort) throw new Error('found no 9 free consecutive ports for the cluster');
  const clusterOptions = {
    frontendPort,
    namespace: 'default',
    postgres: postgresFromEnv(),
    databases: { temporal: 'payflow_bench_temporal', visibility: 'payflow_bench_visibility' },
    logDir: REPORTS_DIR,
  };
  ensureTemporalDatabases(bin, clusterOptions, log);
  const cluster = new TemporalCluster(bin, clusterOptions);
  ownTemporalServer(cluster);
  await cluster.startServer();
  await ensureNamespace({ temporalAddress: cluster.address, temporalNamespace: 'default', temporalTls: undefined, temporalApiKey: undefined }, { log });
  const shards = readServerSettings().NUM_HISTORY_SHARDS;
  return { address: cluster.address, namespace: 'default', note: `cluster at ${cluster.address} (${shards} shards, PostgreSQL)`, pid: () => cluster.serverPid };
}

async function lifecycleRun(options: Options, temporal?: SystemOptions['temporal']): Promise<LifecycleFigures> {
  const runStarted = performance.now();
  log(`${options.orders} orders, ${options.concurrency} concurrent clients`);
  const system: BenchSystem = await startSystem({ database: 'payflow_bench', name: 'bench', temporal });

  // One product with stock for every order.
  const sku = `bench-${system.runId}`;
  await system.createProduct(sku, options.orders);

  // The load.
  const load = new Load();
  const cpu = cpuMeter(system);
  // The databases' processes on this machine (PostgreSQL only matters for a cluster; the dev server keeps SQLite inside).
  const dbCpuBefore = { postgres: temporal ? commandCpuMs('postgres') : undefined, mysql: commandCpuMs('mariadbd') ?? commandCpuMs('mysqld') };
  const stopProgress = startProgress(() => {
    const elapsed = (performance.now() - load.startedAt) / 1000;
    const rate = elapsed > 0 ? load.paid / elapsed : 0;
    return `${String(load.paid).padStart(String(options.orders).length)}/${options.orders} paid · ${load.created} created · ${load.failed} errors · ${load.inFlight} in flight · ${elapsed.toFixed(1)} s · ${rate.toFixed(1)} orders/s`;
  });
  await runLifecycleClients(system, sku, options.concurrency, (n) => n < options.orders, load);
  stopProgress();
  const notStarted = options.orders - Math.min(load.next, options.orders);
  if (notStarted > 0) {
    load.failed += notStarted;
    load.errors.set('not started', { count: notStarted, example: `the run ended early: ${abortReason()}` });
  }
  if (runAbort.signal.aborted) log(`run ended early: ${abortReason()}`);
  const used = cpu();
  const perOrder = (before: number | undefined, after: number | undefined) =>
    before === undefined || after === undefined || load.paid === 0 ? null : Math.round((after - before) / load.paid);
  const postgresMsPerOrder = perOrder(dbCpuBefore.postgres, temporal ? commandCpuMs('postgres') : undefined);
  const mysqlMsPerOrder = perOrder(dbCpuBefore.mysql, commandCpuMs('mariadbd') ?? commandCpuMs('mysqld'));

  // What MySQL says.
  const statusRows = (await system.db('orders').select('status').count({ n: '*' }).groupBy('status').orderBy('status')) as { status: string; n: number | string }[];
  const finalStatuses = Object.fromEntries(statusRows.map((r) => [r.status, Number(r.n)]));
  const stockRow = (await system.db('stock').where({ sku }).first('available', 'reserved', 'sold')) as Record<string, number | string> | undefined;
  const stock = stockRow ? { available: Number(stockRow.available), reserved: Number(stockRow.reserved), sold: Number(stockRow.sold) } : undefined;

  const wallMs = load.endedAt - load.startedAt;
  const createLatency = load.createLatency();
  const payLatency = load.payToPaidLatency();
  const paidInDb = finalStatuses.PAID ?? 0;
  // One unit per order: sold units are PAID orders, reserved units are orders still holding stock.
  const holding = (finalStatuses.AWAITING_PAYMENT ?? 0) + (finalStatuses.NEEDS_REVIEW ?? 0);
  // Only meaningful for a run that finished: an interrupted one leaves orders between their steps.
  const stockConsistent = runAbort.signal.aborted
    ? null
    : stock !== undefined && stock.sold === paidInDb && stock.reserved === holding && stock.available + stock.reserved + stock.sold === options.orders;
  const allPaid = load.paid === options.orders && paidInDb === options.orders && load.failed === 0;
  const ok = allPaid && stockConsistent === true;
  const errors = Object.fromEntries([...load.errors].sort((a, b) => b[1].count - a[1].count));
  const systemMsPerOrder = used.systemMs === undefined || load.paid === 0 ? null : Math.round(used.systemMs / load.paid);

  const report = {
    ok,
    command: commandLine(),
    startedAt: new Date(Date.now() - (performance.now() - runStarted)).toISOString(),
    options,
    environment: {
      machine: machineFacts(),
      node: process.version,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      temporal: system.temporalNote,
      namespace: system.config.temporalNamespace,
      taskQueue: system.config.taskQueue,
      database: system.database,
      apiUrl: system.apiUrl,
      sandboxUrl: system.sandboxUrl,
      sku,
    },
    wallTimeMs: Math.round(wallMs),
    ordersPerSecond: perSecond(load.paid, wallMs),
    paid: load.paid,
    created: load.created,
    failed: load.failed,
    createLatencyMs: createLatency,
    payToPaidLatencyMs: payLatency,
    finalStatuses,
    stock: stock ?? null,
    stockConsistent,
    errors,
    cpu: {
      machineCores: cpus().length,
      machineBusyPercent: used.machineBusyPercent,
      loadGeneratorMs: used.loadGeneratorMs,
      systemUnderTestMs: used.systemMs ?? null,
      systemUnderTestMsPerOrder: systemMsPerOrder,
      temporalServerMs: used.temporalMs ?? null,
      postgresMsPerOrder,
      mysqlMsPerOrder,
    },
    systemLog: system.systemLog,
    orders: load.records.map((r) => ({
      ...r,
      createMs: r.createMs === undefined ? undefined : Math.round(r.createMs * 10) / 10,
      payToPaidMs: r.payToPaidMs === undefined ? undefined : Math.round(r.payToPaidMs * 10) / 10,
    })),
  };
  const reportFile = writeReport('bench', report);

  console.log(`
Benchmark report ${ok ? '(all orders PAID)' : '(NOT all orders PAID)'}
${table([
  ['command', report.command],
  ['machine', report.environment.machine],
  ['orders', String(options.orders)],
  ['concurrency', String(options.concurrency)],
  ['wall time', `${(wallMs / 1000).toFixed(2)} s`],
  ['throughput', `${report.ordersPerSecond.toFixed(2)} orders/s (completed to PAID)`],
  ['create latency ms', latencyRow(createLatency)],
  ['pay->PAID ms', latencyRow(payLatency)],
  ['final statuses', Object.entries(finalStatuses).map(([s, n]) => `${s}=${n}`).join('  ') || '(no orders in MySQL)'],
  ['stock', stock ? `available=${stock.available} reserved=${stock.reserved} sold=${stock.sold}${stockConsistent === null ? '  (not checked: the run ended early)' : stockConsistent ? '' : '  (INCONSISTENT with the order statuses)'}` : '(unreadable)'],
  ['errors', load.errors.size === 0 ? 'none' : [...load.errors].map(([k, v]) => `${k} x${v.count}`).join(', ')],
  ['cpu during load', `${used.text}${systemMsPerOrder === null ? '' : ` (system ${systemMsPerOrder} ms/order)`}`],
  ['temporal', system.temporalNote],
  ['system log', `${logSummary(system.systemLog)} (${system.systemLog})`],
  ['report', reportFile],
])}`);
  for (const [kind, { example }] of load.errors) console.log(`  e.g. ${kind}: ${example}`);
  if (!ok) console.log(`\n  what the system under test logged (${system.systemLog}), grouped:\n${logDigest(system.systemLog)}`);
  return {
    ok,
    temporal: system.temporalNote,
    ordersPerSecond: report.ordersPerSecond,
    createLatencyMs: createLatency,
    payToPaidLatencyMs: payLatency,
    cpuText: used.text,
    systemMsPerOrder,
    temporalMsPerOrder: used.temporalMs === undefined || load.paid === 0 ? null : Math.round(used.temporalMs / load.paid),
    postgresMsPerOrder,
    mysqlMsPerOrder,
    report: reportFile,
  };
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h')) {
    console.log(USAGE);
    return 0;
  }
  const modes = argv.filter((a) => a in MODES);
  if (modes.length > 1) {
    console.error(`[bench] one mode at a time, got ${modes.join(' ')}\n${USAGE}`);
    return 1;
  }
  const mode = modes[0];
  if (mode === '--hot-sku') return MODES[mode]!.run(argv);
  return runBench(() => (mode ? MODES[mode]!.run(argv.filter((a) => a !== mode)) : lifecycleBench(argv)));
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`[bench] ${(err as Error).message ?? String(err)}`);
    process.exitCode = 1;
  },
);
