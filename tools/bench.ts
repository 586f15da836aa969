/**
 * `npm run bench [-- --orders N --concurrency C --only reference,before,after]`: end-to-end throughput, latency and
 * cost
 *   per order of the order lifecycle, side by side with the engine's floor and the previous workflow type, in one run
 * on
 *   the same server (phases: tools/bench-phases.ts).
 * `npm run bench -- --hot-sku`: reservations per second on one SKU, one row vs. buckets (tools/bench-hot-sku.ts).
 * `npm run bench -- --flash-sale`: many buyers, little stock, one SKU, through the API (tools/bench-flash-sale.ts).
 * `npm run bench -- --callbacks`: a storm of redelivered payment notifications (tools/bench-callbacks.ts).
 * `npm run bench -- --polls`: buyers polling their orders, and what that costs everyone else (tools/bench-polls.ts).
 * `npm run bench -- --open N`: N orders left waiting and N in cooling-off; new orders' rate against the empty system,
 *   memory and the worker's workflow cache (tools/bench-open.ts).
 * `npm run bench -- --cluster [--only after]`: the phases on the dev server, then on a self-hosted cluster the bench
 *   starts (4 shards, PostgreSQL), side by side, with the CPU of Temporal's PostgreSQL and the app's MySQL per order.
 * `npm run bench -- --topology`: the lifecycle load on the production topology (cluster, worker and API processes)
 *   with the CPU each kind of process spends per order (tools/bench-topology.ts).
 * `npm run bench -- --tcc`: the TCC part of an order alone (Try and Confirm of stock, coupon, points): called directly,
 *   in a workflow with local activities, with activity tasks; side by side, beside issue #16's DTM figures
 *   (tools/bench-tcc.ts).
 *
 * Configured like the app: the Temporal server at TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE when one listens (else an
 * in-memory headless dev server it starts and stops), MySQL at DATABASE_URL (its database name when DATABASE_URL is
 * set, else `payflow_bench`; a database the bench did not create is never dropped: tools/tool-database.ts), PORT
 * and SANDBOX_PORT when set (else free ports), a task queue of its own. The Temporal server's CPU is measured when it
 * runs on this machine (its pid found by its port). The system under test (sandbox + API + worker,
 * tools/bench-system.ts) runs in a
 * child process so that the load generator never shares its event loop (tools/bench-harness.ts).
 *
 * In each phase, each of C clients loops: create (POST /orders; create latency = until the 201), the buyer pays at the
 * sandbox, then the workflow's result is awaited with a long poll (pay-to-PAID latency = from the pay request until
 * the workflow has completed as PAID). Prints the phases side by side and their ratios, and writes the report to
 * reports/bench-<time>.json. Exit code 0 when every order of every phase reached PAID, 1 otherwise.
 */
import { cpus } from 'node:os';
import {
  type BenchSystem,
  commandLine,
  fail,
  http,
  log,
  machineFacts,
  ownTemporalServer,
  parseFlags,
  REPORTS_DIR,
  runAbort,
  runBench,
  startSystem,
  stopSystem,
  type SystemOptions,
  table,
  logDigest,
  logSummary,
  writeReport,
} from './bench-harness';
import { commandCpuMs } from './processes';
import { isListening } from './temporal-cli';
import {
  TemporalCluster,
  clusterPorts,
  ensureClusterBinaries,
  ensureTemporalDatabases,
  postgresFromEnv,
  readServerSettings,
} from './temporal-cluster';
import { ensureNamespace } from '../src/ops/temporal-namespace';
import {
  DEFAULT_PHASES,
  PHASES,
  type PhaseName,
  type PhaseResult,
  type PreparedPhase,
  type Spread,
  mergeRounds,
  preparePhase,
  runPhase,
} from './bench-phases';

const MODES: Record<string, { usage: string; run: (argv: string[]) => Promise<number> }> = {
  '--hot-sku': {
    usage: 'npm run bench -- --hot-sku [--buckets N] [--seconds S] [--clients 50,200] [--db-latency-ms X]',
    run: async (argv) => (await import('./bench-hot-sku')).runHotSkuBench(argv),
  },
  '--flash-sale': {
    usage:
      'npm run bench -- --flash-sale [--buyers 2000] [--stock 100] [--connections 200] [--buckets N] [--separate-api] [--warmup N] [--keyed] [--quick]',
    run: async (argv) => (await import('./bench-flash-sale')).runFlashSaleBench(argv),
  },
  '--callbacks': {
    usage:
      'npm run bench -- --callbacks [--orders 100] [--redeliveries 30] [--connections 50] [--kill-api-at N] [--rate R] [--quick]',
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
  '--tcc': {
    usage: 'npm run bench -- --tcc [--transactions 2000] [--concurrency 10,50] [--warmup W] [--quick]',
    run: async (argv) => (await import('./bench-tcc')).runTccBench(argv),
  },
};

const USAGE = `usage: npm run bench [-- --orders N --concurrency C --only ${PHASES.join(',')} --warmup W --history-sample S --rounds R]
         (defaults: --orders 200 per phase, --concurrency 20, --only ${DEFAULT_PHASES.join(',')}, --warmup orders/10 up to 20, --history-sample 10,
         --rounds 1; with R > 1 the phases alternate R times, each round N orders, and each round's ratio is printed)
       npm run bench -- --open N [--orders M --concurrency C --cache K --quick]   (tools/bench-open.ts)
       npm run bench -- --cluster [--only after ...]   the phases on the dev server, then on a self-hosted cluster the bench
         starts (PostgreSQL databases payflow_bench_temporal/_visibility, kept), side by side
${Object.values(MODES)
  .map((m) => `       ${m.usage}`)
  .join('\n')}
Each mode has --help for its own defaults; --quick runs small numbers for a smoke run.`;

interface Options {
  orders: number;
  concurrency: number;
  phases: PhaseName[];
  warmup: number;
  historySample: number;
  cluster: boolean;
  /** Measured rounds: the phases alternate this many times (reference, after, reference, after, ...). */
  rounds: number;
}

/** `--only a,b` (or `--only=a,b`) taken out of argv: parseFlags knows numbers and bare flags only. */
function takeOnly(argv: string[]): { only?: string; rest: string[] } {
  const rest: string[] = [];
  let only: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--only') only = argv[++i] ?? '';
    else if (arg.startsWith('--only=')) only = arg.slice('--only='.length);
    else rest.push(arg);
  }
  return { only, rest };
}

function parseArgs(argv: string[]): Options {
  const { only, rest } = takeOnly(argv);
  const flags = parseFlags(
    rest,
    {
      orders: 'int',
      concurrency: 'int',
      warmup: 'int',
      'no-warmup': 'flag',
      'history-sample': 'int',
      cluster: 'flag',
      rounds: 'int',
    },
    USAGE,
  );
  const orders = (flags.orders as number | undefined) ?? 200;
  let phases = DEFAULT_PHASES;
  if (only !== undefined) {
    const asked = only
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean);
    const unknown = asked.filter((p) => !(PHASES as readonly string[]).includes(p));
    if (asked.length === 0 || unknown.length)
      fail(`--only takes phases from ${PHASES.join(', ')}; got "${only}"\n${USAGE}`);
    phases = [...new Set(asked)] as PhaseName[];
  }
  const warmup = flags['no-warmup']
    ? 0
    : ((flags.warmup as number | undefined) ?? Math.min(20, Math.ceil(orders / 10)));
  if (flags.cluster === true && flags.rounds !== undefined) fail(`--rounds does not go with --cluster\n${USAGE}`);
  return {
    orders,
    concurrency: Math.min((flags.concurrency as number | undefined) ?? 20, orders),
    phases,
    warmup,
    historySample: (flags['history-sample'] as number | undefined) ?? 10,
    cluster: flags.cluster === true,
    rounds: (flags.rounds as number | undefined) ?? 1,
  };
}

/** The middle value (the mean of the two middle ones for an even count). */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** A ratio of two rates, or null when either is missing. */
const ratio = (a: PhaseResult | undefined, b: PhaseResult | undefined) =>
  a && b && b.ordersPerSecond > 0 ? Math.round((a.ordersPerSecond / b.ordersPerSecond) * 100) / 100 : null;

async function lifecycleBench(argv: string[]): Promise<number> {
  const options = parseArgs(argv);
  if (options.cluster) return clusterComparison(options);
  const runStarted = performance.now();
  const startedAt = new Date().toISOString();
  log(
    `phases ${options.phases.join(', ')}: ${options.orders} orders each (after ${options.warmup} warm-up orders), ${options.concurrency} concurrent clients`,
  );
  const withReference = options.phases.some((p) => p.startsWith('reference'));
  const system: BenchSystem = await startSystem({
    database: 'payflow_bench',
    name: 'bench',
    env: withReference ? { BENCH_REFERENCE: 'on' } : {},
  });

  // Every phase warmed up first, then each measured in turn.
  const prepared: PreparedPhase[] = [];
  for (const phase of options.phases) {
    if (runAbort.signal.aborted) break;
    prepared.push(await preparePhase(system, phase, options));
  }
  // Each round measures every phase once, in order; with --rounds the phases alternate, so a drift of the host's
  // speed during the run reaches them alike, and each round gives a ratio of its own.
  const byRound: PhaseResult[][] = [];
  for (let round = 1; round <= options.rounds && !runAbort.signal.aborted; round++) {
    const measured: PhaseResult[] = [];
    for (const phase of prepared) {
      if (runAbort.signal.aborted) break;
      measured.push(await runPhase(system, phase, options, round));
    }
    byRound.push(measured);
  }
  const results = prepared
    .map((p) => byRound.flatMap((r) => r.filter((x) => x.phase === p.phase)))
    .filter((rounds) => rounds.length > 0)
    .map(mergeRounds);
  const roundRatios = byRound
    .map((r) =>
      ratio(
        r.find((x) => x.phase === 'after'),
        r.find((x) => x.phase === 'reference'),
      ),
    )
    .filter((v): v is number => v !== null);
  const stats = await http('GET', `${system.apiUrl}/bench/stats`, undefined, 5000).catch(() => undefined);

  const by = (name: PhaseName) => results.find((r) => r.phase === name);
  const after = by('after');
  const reference = by('reference');
  const ratios = {
    afterToReferenceThroughput: ratio(after, reference),
    afterToReferenceThroughputGoal: 0.7,
    afterToReferenceThroughputByRound: roundRatios,
    afterToBeforeThroughput: ratio(after, by('before')),
    afterToReferenceRemoteThroughput: ratio(after, by('reference-remote')),
    afterCreateP50Ms: after?.createLatencyMs?.p50 ?? null,
    afterCreateP50GoalMs: 250,
    afterCreateP50GoalClients: 20,
  };
  const ok = results.length === options.phases.length && results.every((r) => r.ok);

  const report = {
    ok,
    command: commandLine(),
    startedAt,
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
    },
    wallTimeMs: Math.round(performance.now() - runStarted),
    ratios,
    phases: results,
    rounds: options.rounds > 1 ? byRound : undefined,
    systemAtEnd: stats?.body ?? null,
    systemLog: system.systemLog,
  };
  const reportFile = writeReport('bench', report);

  console.log(`\nBenchmark report ${ok ? '(every phase: all orders PAID)' : '(NOT all orders PAID; see errors)'}`);
  console.log(
    table([
      ['command', report.command],
      ['machine', report.environment.machine],
      ['temporal', system.temporalNote],
      [
        'per phase',
        `${options.orders} measured orders, ${options.concurrency} clients; every phase first warmed up (${options.warmup} orders each), then measured one after another in this order${options.rounds > 1 ? `, ${options.rounds} rounds (figures below: all rounds together)` : ''}`,
      ],
      ['system log', `${logSummary(system.systemLog)} (${system.systemLog})`],
      ['report', reportFile],
    ]),
  );
  console.log(`\n${phaseTable(results)}`);
  console.log(`\n${explainRows()}`);
  const fmt = (v: number | null, goal: string) => (v === null ? 'n/a (phase not run)' : `${v.toFixed(2)}${goal}`);
  console.log(
    `\n${table([
      [
        'after/reference throughput',
        fmt(
          ratios.afterToReferenceThroughput,
          `   (goal >= ${ratios.afterToReferenceThroughputGoal}: ${ratios.afterToReferenceThroughput === null ? '' : ratios.afterToReferenceThroughput >= 0.7 ? 'met' : 'NOT met'})`,
        ),
      ],
      ...(roundRatios.length > 1
        ? ([
            [
              'after/reference by round',
              `${roundRatios.map((r) => r.toFixed(2)).join(', ')}   (median ${median(roundRatios).toFixed(2)}; ${roundRatios.filter((r) => r >= 0.7).length} of ${roundRatios.length} rounds >= 0.7)`,
            ],
          ] as [string, string][])
        : []),
      ['after/before throughput', fmt(ratios.afterToBeforeThroughput, '')],
      ...(ratios.afterToReferenceRemoteThroughput === null
        ? []
        : ([['after/reference-remote throughput', fmt(ratios.afterToReferenceRemoteThroughput, '')]] as [
            string,
            string,
          ][])),
      [
        'create p50 of after',
        ratios.afterCreateP50Ms === null
          ? 'n/a (phase not run)'
          : `${ratios.afterCreateP50Ms.toFixed(1)} ms   (goal <= 250 ms with 20 clients: ${options.concurrency !== 20 ? `not comparable, ran ${options.concurrency} clients` : ratios.afterCreateP50Ms <= 250 ? 'met' : 'NOT met'})`,
      ],
    ])}`,
  );
  for (const r of results)
    for (const [kind, { count, example }] of Object.entries(r.errors))
      console.log(`  ${r.phase}: ${kind} x${count}, e.g. ${example}`);
  if (!ok)
    console.log(
      `\n  what the system under test logged (${system.systemLog}), grouped:\n${logDigest(system.systemLog)}`,
    );
  return ok ? 0 : 1;
}

/**
 * `--cluster`: the phases on the dev server (the server at TEMPORAL_ADDRESS, else an in-memory one), then on a
 * self-hosted cluster the bench starts, one column per phase and server, with the CPU per order of Temporal's
 * PostgreSQL and the app's MySQL (their processes on this machine) beside the app's and the server's.
 */
async function clusterComparison(options: Options): Promise<number> {
  const withReference = options.phases.some((p) => p.startsWith('reference'));
  const columns: PhaseResult[] = [];
  const databases: { label: string; postgres: number | null; mysql: number | null }[] = [];
  const notes: [string, string][] = [];
  for (const target of ['dev server', 'cluster'] as const) {
    if (runAbort.signal.aborted) break;
    const temporal = target === 'cluster' ? await startBenchCluster() : undefined;
    log(`--cluster: the phases on the ${target}`);
    const system = await startSystem({
      database: 'payflow_bench',
      name: 'bench',
      env: withReference ? { BENCH_REFERENCE: 'on' } : {},
      temporal,
    });
    notes.push([target, system.temporalNote]);
    const prepared: PreparedPhase[] = [];
    for (const phase of options.phases)
      if (!runAbort.signal.aborted) prepared.push(await preparePhase(system, phase, options));
    for (const phase of prepared) {
      if (runAbort.signal.aborted) break;
      const before = { postgres: commandCpuMs('postgres'), mysql: commandCpuMs('mariadbd') ?? commandCpuMs('mysqld') };
      const result = await runPhase(system, phase, options);
      const after = { postgres: commandCpuMs('postgres'), mysql: commandCpuMs('mariadbd') ?? commandCpuMs('mysqld') };
      const per = (a: number | undefined, b: number | undefined) =>
        a === undefined || b === undefined || result.paid === 0 ? null : Math.round((b - a) / result.paid);
      const label = `${result.phase} @ ${target}`;
      columns.push({ ...result, phase: label as PhaseName });
      databases.push({
        label,
        postgres: target === 'cluster' ? per(before.postgres, after.postgres) : null,
        mysql: per(before.mysql, after.mysql),
      });
    }
    await stopSystem();
  }
  const ok = columns.length === options.phases.length * 2 && columns.every((r) => r.ok);
  const reportFile = writeReport('bench-cluster', {
    ok,
    command: commandLine(),
    machine: machineFacts(),
    options,
    temporal: Object.fromEntries(notes),
    phases: columns,
    databases,
  });
  console.log(
    `\nDev server and cluster side by side ${ok ? '(all orders PAID)' : '(NOT all orders PAID; see errors)'}`,
  );
  console.log(table([['command', commandLine()], ['machine', machineFacts()], ...notes, ['report', reportFile]]));
  console.log(`\n${phaseTable(columns)}`);
  const ms = (v: number | null) => (v === null ? 'n/a' : String(v));
  const width = Math.max(...databases.map((d) => d.label.length), 8);
  console.log(`  ${'database CPU ms / order'.padEnd(24)}${databases.map((d) => d.label.padEnd(width + 3)).join('')}`);
  console.log(
    `  ${"Temporal's PostgreSQL".padEnd(24)}${databases.map((d) => ms(d.postgres).padEnd(width + 3)).join('')}`,
  );
  console.log(`  ${"the app's MySQL".padEnd(24)}${databases.map((d) => ms(d.mysql).padEnd(width + 3)).join('')}`);
  for (const r of columns)
    for (const [kind, { count, example }] of Object.entries(r.errors))
      console.log(`  ${r.phase}: ${kind} x${count}, e.g. ${example}`);
  return ok ? 0 : 1;
}

/**
 * A self-hosted cluster of the bench's own for `--cluster`: the server set-up of `npm start -- --cluster` (docker/
 * temporal.env's shards, PostgreSQL from TEMPORAL_POSTGRES_URL, no UI) on 9 free consecutive ports, namespace and
 * search attributes registered, databases payflow_bench_temporal/_visibility (created when missing, never dropped).
 */
async function startBenchCluster(): Promise<NonNullable<SystemOptions['temporal']>> {
  const bin = ensureClusterBinaries((l) => log(l));
  let frontendPort = 0;
  for (let tries = 0; tries < 50 && !frontendPort; tries++) {
    const candidate = 20_000 + Math.floor(Math.random() * 10_000);
    const ports = Object.values(clusterPorts(candidate));
    if ((await Promise.all(ports.map((p) => isListening(`127.0.0.1:${p}`)))).every((taken) => !taken))
      frontendPort = candidate;
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
  await ensureNamespace(
    {
      temporalAddress: cluster.address,
      temporalNamespace: 'default',
      temporalTls: undefined,
      temporalApiKey: undefined,
    },
    { log },
  );
  const shards = readServerSettings().NUM_HISTORY_SHARDS;
  return {
    address: cluster.address,
    namespace: 'default',
    note: `cluster at ${cluster.address} (${shards} shards, PostgreSQL; started by the bench)`,
    pid: () => cluster.serverPid,
  };
}

/** The phases side by side, one column each. */
function phaseTable(results: PhaseResult[]): string {
  const ms = (v: number | null | undefined) => (v === null || v === undefined ? 'n/a' : v.toFixed(0));
  const sp = (s: Spread | undefined) =>
    !s || Number.isNaN(s.mean) ? 'n/a' : s.min === s.max ? String(s.mean) : `${s.mean} (${s.min}-${s.max})`;
  const rows: [string, (r: PhaseResult) => string][] = [
    ['workflow type', (r) => r.workflowType],
    [
      'orders PAID / measured',
      (r) => `${r.paid}/${r.orders}${r.failed ? ` (${r.failed} failed)` : ''}${r.ok ? '' : ' NOT OK'}`,
    ],
    ['throughput, orders/s', (r) => r.ordersPerSecond.toFixed(2)],
    ['create ms p50 / p99', (r) => `${ms(r.createLatencyMs?.p50)} / ${ms(r.createLatencyMs?.p99)}`],
    ['pay->PAID ms p50 / p99', (r) => `${ms(r.payToPaidLatencyMs?.p50)} / ${ms(r.payToPaidLatencyMs?.p99)}`],
    ['history events / order', (r) => sp(r.history?.events)],
    ['workflow tasks / order', (r) => sp(r.history?.workflowTasks)],
    ['activities / order', (r) => sp(r.history?.activities)],
    ['SA upserts / order', (r) => sp(r.history?.upserts)],
    [
      'histories sampled',
      (r) => `${r.history?.sampled ?? 0}${r.history?.errors ? ` (${r.history.errors} unreadable)` : ''}`,
    ],
    ['app CPU ms / order', (r) => ms(r.cpu.appMsPerOrder)],
    ['Temporal CPU ms / order', (r) => ms(r.cpu.temporalMsPerOrder)],
    ['load gen CPU ms / order', (r) => (r.paid ? (r.cpu.loadGeneratorMs / r.paid).toFixed(0) : 'n/a')],
    ['machine busy', (r) => `${r.cpu.machineBusyPercent}%`],
    ['wall time', (r) => `${(r.wallTimeMs / 1000).toFixed(1)} s`],
    [
      'MySQL statuses',
      (r) =>
        Object.entries(r.finalStatuses)
          .map(([s, n]) => `${s}=${n}`)
          .join(' ') || 'none',
    ],
    [
      'stock',
      (r) =>
        r.stock
          ? `sold ${r.stock.sold}, reserved ${r.stock.reserved}${r.stockConsistent === false ? ' INCONSISTENT' : ''}`
          : '-',
    ],
  ];
  const header = ['', ...results.map((r) => r.phase)];
  const cells = [header, ...rows.map(([label, f]) => [label, ...results.map(f)])];
  const widths = header.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  return cells.map((row) => `  ${row.map((c, i) => c.padEnd(widths[i]!)).join('   ')}`.trimEnd()).join('\n');
}

/** What the rows mean, printed under the table so that a report read later explains itself. */
function explainRows(): string {
  return [
    '  reference: bench-only workflow (tools/bench-reference-workflow.ts), own worker/bundle/task queue in the system process:',
    '             update-with-start answered after 1 activity (1 INSERT), a signal, 1 more activity (1 UPDATE), done. No interceptors.',
    '  before:    POST /orders through the production API, started as the previous type orderLifecycle (first: the first type,',
    '             orderPayment; a bench-only client interceptor swaps the type name: same input, admission Try, MySQL, sandbox, callbacks);',
    '  after:     the same as the API starts it, orderLifecycleV2.',
    '  create = until the buyer could pay (201 with payment URL; reference: the update answered); pay->PAID = pay request until the',
    '  workflow completed PAID (its result, long poll). History figures: mean (min-max) over sampled PAID workflows (history-cost.ts).',
    '  app CPU = the system-under-test process (API + sandbox + both workers) over the measured part / PAID orders; Temporal CPU =',
    '  the server process (n/a when not a local process of this user; shared with anything else using that server).',
  ].join('\n');
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
  if (argv.some((a) => a === '--open' || a.startsWith('--open='))) {
    if (modes.length) {
      console.error(`[bench] --open is a mode of its own, got ${modes.join(' ')} too\n${USAGE}`);
      return 1;
    }
    return runBench(async () => (await import('./bench-open')).runOpenBench(argv));
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
