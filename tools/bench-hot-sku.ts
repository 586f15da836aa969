/**
 * `npm run bench -- --hot-sku [--buckets N] [--seconds S] [--clients 50,200]`: stock reservations per second on
 * one SKU, stored as one row vs. sharded into N buckets, at each client count, and the ratio between them.
 *
 * It measures the stock TCC Try itself (src/db/stock.ts: fence row, conditional update, holds, timeline
 * event, commit), straight against MySQL with one connection per client, because that is where a flash sale
 * queues: through the API the Temporal dev server's CPU caps the rate long before the stock row does.
 * Own database `payflow_bench_hot` (or DATABASE_URL's when set; re-created only when the bench created it). Prints a
 * table and writes reports/bench-hot-sku-*.json.
 *
 * `--db-latency-ms X` puts a proxy adding X ms round trip between the clients and MySQL, as when the database
 * is on another machine: a hot row stays locked from its update until the commit's answer, so the round trip
 * is what single-row reservations queue on, and what buckets spread.
 */
import { prepareToolDatabase, withDatabase } from './tool-database';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, relative, resolve } from 'node:path';
import type { Knex } from 'knex';
import { bucketShare, tryReserveStock } from '../src/db/stock';
import { loadConfigOrExit } from '../src/config';
import { MAX_STOCK_BUCKETS } from '../src/contracts/order';
import { createDb, migrateLatest } from '../src/db/knex';
import { freePort } from './processes';

const ROOT = resolve(__dirname, '..');
const DATABASE = 'payflow_bench_hot';
const USAGE =
  'usage: npm run bench -- --hot-sku [--buckets N] [--seconds S] [--clients 50,200] [--db-latency-ms X]   (defaults: 16 buckets, 10 s per run, 50 and 200 clients, no added latency)';

interface HotOptions {
  buckets: number;
  seconds: number;
  clients: number[];
  dbLatencyMs: number;
}

interface RunResult {
  buckets: number;
  clients: number;
  seconds: number;
  reservations: number;
  perSecond: number;
  latencyMs: { p50: number; p99: number; max: number };
  errors: Record<string, number>;
}

const log = (message: string) => console.log(`[bench:hot-sku] ${message}`);

function fail(message: string): never {
  console.error(`[bench:hot-sku] ${message}\n${USAGE}`);
  process.exit(1);
}

export function parseHotSkuArgs(argv: string[]): HotOptions {
  const options: HotOptions = { buckets: 16, seconds: 10, clients: [50, 200], dbLatencyMs: 0 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--hot-sku') continue;
    if (arg === '--help' || arg === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    const match = /^--(buckets|seconds|clients|db-latency-ms)(?:=(.*))?$/.exec(arg);
    if (!match) fail(`unknown argument "${arg}"`);
    const text = match[2] ?? argv[++i] ?? '';
    if (match[1] === 'db-latency-ms') {
      options.dbLatencyMs = Number(text);
      if (!Number.isFinite(options.dbLatencyMs) || options.dbLatencyMs < 0 || options.dbLatencyMs > 100)
        fail(`--db-latency-ms needs 0..100, got "${text}"`);
      continue;
    }
    const numbers = text.split(',').map(Number);
    if (numbers.some((n) => !Number.isInteger(n) || n < 1))
      fail(`--${match[1]} needs whole numbers from 1, got "${text}"`);
    if (match[1] === 'clients') options.clients = numbers;
    else if (numbers.length !== 1) fail(`--${match[1]} takes one number`);
    else if (match[1] === 'buckets') options.buckets = numbers[0]!;
    else options.seconds = numbers[0]!;
  }
  if (options.buckets < 2 || options.buckets > MAX_STOCK_BUCKETS) fail(`--buckets must be 2..${MAX_STOCK_BUCKETS}`);
  if (options.clients.some((c) => c > 1000)) fail('--clients at most 1000');
  return options;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** A SKU with plenty of stock, in `buckets` buckets (bucket 0 is the stock row). */
async function createHotSku(db: Knex, buckets: number, units: number): Promise<string> {
  const sku = `hot-${buckets}-${randomBytes(4).toString('hex')}`;
  const share = (b: number) => bucketShare(units, buckets, b);
  await db('products').insert({ sku, name: `hot SKU x${buckets}`, price: 100, currency: 'CNY' });
  await db('stock').insert({ sku, available: share(0), reserved: 0, sold: 0, total_in: units, buckets });
  for (let b = 1; b < buckets; b++)
    await db('stock_buckets').insert({ sku, bucket: b, available: share(b), reserved: 0, sold: 0 });
  return sku;
}

/** C clients reserve one unit each, back to back, for `seconds`; every reservation is its own order. */
async function run(db: Knex, buckets: number, clients: number, seconds: number): Promise<RunResult> {
  const sku = await createHotSku(db, buckets, 10_000_000);
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  const started = performance.now();
  const until = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < until) {
        const t0 = performance.now();
        try {
          await tryReserveStock(db, `bench-${randomBytes(8).toString('hex')}`, [{ sku, quantity: 1 }]);
          latencies.push(performance.now() - t0);
        } catch (err) {
          const code =
            (err as { code?: string; type?: string }).code ?? (err as { type?: string }).type ?? (err as Error).message;
          errors[code] = (errors[code] ?? 0) + 1;
        }
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  // The books must balance after the run, or the figure means nothing.
  const sums = (await db.raw(
    'SELECT (SELECT reserved FROM stock WHERE sku = ?) + COALESCE((SELECT SUM(reserved) FROM stock_buckets WHERE sku = ?), 0) AS reserved',
    [sku, sku],
  )) as [{ reserved: number | string }[]];
  const reserved = Number(sums[0][0]!.reserved);
  if (reserved !== latencies.length)
    throw new Error(`stock ${sku}: reserved ${reserved} but ${latencies.length} reservations succeeded`);
  latencies.sort((a, b) => a - b);
  const round = (n: number) => Math.round(n * 10) / 10;
  return {
    buckets,
    clients,
    seconds: round(elapsed),
    reservations: latencies.length,
    perSecond: round(latencies.length / elapsed),
    latencyMs: {
      p50: round(percentile(latencies, 50)),
      p99: round(percentile(latencies, 99)),
      max: round(latencies[latencies.length - 1] ?? 0),
    },
    errors,
  };
}

export async function runHotSkuBench(argv: string[]): Promise<number> {
  const options = parseHotSkuArgs(argv);
  const base = loadConfigOrExit();
  // DATABASE_URL with its own name when set, else payflow_bench_hot; never a database the bench did not create.
  const url = new URL(process.env.DATABASE_URL ? base.databaseUrl : withDatabase(base.databaseUrl, DATABASE));
  await prepareToolDatabase(url.toString(), 'bench', { legacyNames: [DATABASE], log });
  const admin = createDb(withDatabase(url.toString(), 'information_schema'), { poolMax: 1 });
  const most = Math.max(...options.clients);
  const [[{ Value: maxConnections }]] = (await admin.raw("SHOW VARIABLES LIKE 'max_connections'")) as [
    [{ Value: string }],
  ];
  let raised: number | undefined;
  if (Number(maxConnections) < most + 30) {
    raised = Number(maxConnections);
    log(
      `max_connections is ${maxConnections}; raising it to ${most + 50} for the run (one connection per client), restored afterwards`,
    );
    await admin.raw(`SET GLOBAL max_connections = ${most + 50}`);
  }
  const results: RunResult[] = [];
  let proxy: ChildProcess | undefined;
  try {
    await migrateLatest(url.toString());
    if (options.dbLatencyMs > 0) {
      const port = await freePort();
      proxy = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          resolve(__dirname, 'latency-proxy.ts'),
          String(port),
          `${url.hostname}:${url.port || 3306}`,
          String(options.dbLatencyMs / 2),
        ],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      await new Promise<void>((ready, failed) => {
        proxy!.stdout!.once('data', () => ready());
        proxy!.once('exit', (code) => failed(new Error(`latency proxy exited (${code})`)));
      });
      log(`clients reach MySQL through a proxy adding ${options.dbLatencyMs} ms per round trip (127.0.0.1:${port})`);
      url.host = `127.0.0.1:${port}`;
    }
    for (const clients of options.clients) {
      for (const buckets of [1, options.buckets]) {
        const db = createDb(url.toString(), { poolMax: clients });
        log(`${clients} clients, ${buckets === 1 ? 'one stock row' : `${buckets} buckets`}: ${options.seconds} s`);
        try {
          const r = await run(db, buckets, clients, options.seconds);
          results.push(r);
          log(
            `  ${r.perSecond} reservations/s (p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms${Object.keys(r.errors).length ? `, errors ${JSON.stringify(r.errors)}` : ''})`,
          );
        } finally {
          await db.destroy();
        }
      }
    }
  } finally {
    proxy?.kill('SIGTERM');
    if (raised !== undefined) await admin.raw(`SET GLOBAL max_connections = ${raised}`);
    await admin.destroy();
  }

  const rows = options.clients.map((clients) => {
    const single = results.find((r) => r.clients === clients && r.buckets === 1)!;
    const sharded = results.find((r) => r.clients === clients && r.buckets === options.buckets)!;
    return { clients, single, sharded, ratio: Math.round((sharded.perSecond / single.perSecond) * 100) / 100 };
  });
  const network = options.dbLatencyMs
    ? `, ${options.dbLatencyMs} ms added per database round trip`
    : ', database on this host';
  console.log(
    `\nHot-SKU reservations (stock TCC Try, 1 unit each, ${options.seconds} s per run, ${cpus().length} cores${network}):`,
  );
  console.log(`  clients   one row (res/s, p50/p99 ms)      ${options.buckets} buckets (res/s, p50/p99 ms)   ratio`);
  for (const r of rows) {
    const cell = (x: RunResult) =>
      `${String(x.perSecond).padStart(7)}  ${x.latencyMs.p50}/${x.latencyMs.p99}`.padEnd(32);
    console.log(`  ${String(r.clients).padStart(7)}   ${cell(r.single)} ${cell(r.sharded)} x${r.ratio}`);
  }
  const reportsDir = join(ROOT, 'reports');
  mkdirSync(reportsDir, { recursive: true });
  const file = join(reportsDir, `bench-hot-sku-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    `${JSON.stringify({ options, results, ratios: rows.map((r) => ({ clients: r.clients, ratio: r.ratio })) }, null, 2)}\n`,
  );
  console.log(`  report: ${relative(ROOT, file)}`);
  return 0;
}
