/**
 * `npm run bench -- --flash-sale [--buyers 2000] [--stock 100] [--connections 200] [--buckets N] [--separate-api]
 * [--quick]`
 *
 * A flash sale through the public API: one product with `stock` units (PUT /admin/products/:sku), then `buyers`
 * distinct users each POST /orders once for one unit of it, over `connections` concurrent keep-alive connections
 * (each connection sends its next buyer's request as soon as its last answer is in). Nobody pays: a winner's
 * unit stays reserved.
 *
 * Prints requests/s over the whole sale; winner (201) and loser (409 OUT_OF_STOCK) latency; answers by status
 * and error code (5xx and network errors counted explicitly); whether 429/503 answers carry Retry-After; how many
 * order workflows the sale started, read from Temporal visibility (the run's task queue, started since the sale
 * began; polled until the count is stable) and per unit of stock; the SKU's stock afterwards (GET
 * /admin/products/:sku) and whether exactly `stock` units went to exactly as many winners.
 * Exit code 0 when the books are exact and no answer was a 5xx or a network error, 1 otherwise.
 */
import { ORDER_WORKFLOW_TYPE, orderWorkflowId } from '../src/contracts/order-workflow';
import { randomBytes } from 'node:crypto';
import { temporal } from '@temporalio/proto';
import { FailureType } from '../src/contracts/failures';
import {
  type BenchSystem,
  KeepAlivePool,
  Tally,
  abortReason,
  commandLine,
  cpuMeter,
  errorCode,
  errorKind,
  field,
  http,
  inParallel,
  latencyRow,
  log,
  machineFacts,
  parseFlags,
  perSecond,
  runAbort,
  sleep,
  startProgress,
  startSystem,
  summarize,
  table,
  logDigest,
  logSummary,
  writeReport,
} from './bench-harness';

const USAGE = `usage: npm run bench -- --flash-sale [--buyers N] [--stock S] [--connections C] [--buckets B] [--keyed] [--quick]
  --buyers       distinct users, each POST /orders once for 1 unit        (default 2000; --quick 200)
  --stock        units of the one product on sale                         (default 100;  --quick 20)
  --connections  concurrent keep-alive HTTP connections                   (default 200;  --quick 50)
  --buckets      shard the SKU's stock over B rows (PUT /admin/products)  (default: one stock row)
  --separate-api the API in a process of its own, as in production        (default: API, worker, sandbox in one)
  --keyed        every buyer's request carries an Idempotency-Key of its own, as a shop's client that retries
                 sends: a refused keyed buyer also reads its key's fingerprint row (default: no key)
  --warmup       requests for a sold-out SKU first, over the sale's connections, after 5 orders of another SKU:
                 a sale hits a shop that is already serving (connections open, code warm, the worker has run
                 orders); those orders are not counted (default: connections; 0 = a cold start)
Through the API today (about 10 orders/s on 2 cores) the default sale takes a few minutes.`;

/** Orders of another SKU placed before the sale when it is warmed up (see the warm-up). */
const WARM_ORDERS = 5;

/** What one buyer got. */
interface Answer {
  status: number;
  code?: string;
  ms: number;
  /** When the answer came, in ms since the sale began. */
  at: number;
  retryAfter?: string;
  error?: string;
  /** A winner's order. */
  orderId?: string;
}

/** Polls a visibility count until it has not changed for `stableReads` reads in a row (or `timeoutMs` passed). */
export async function stableWorkflowCount(
  system: BenchSystem,
  query: string,
  timeoutMs = 60_000,
  stableReads = 3,
): Promise<{ count: number; waitedMs: number; stable: boolean }> {
  const t0 = performance.now();
  let last = -1;
  let same = 0;
  for (;;) {
    const { count } = await system.temporal.workflow.count(query);
    same = count === last ? same + 1 : 0;
    last = count;
    const waitedMs = performance.now() - t0;
    if (same + 1 >= stableReads) return { count, waitedMs, stable: true };
    if (waitedMs > timeoutMs) return { count, waitedMs, stable: false };
    await sleep(1000);
  }
}

/**
 * Where the winners' time went, stage by stage: each winner's request sent, its Try committed (the STOCK_RESERVED
 * entry of its timeline), its workflow started and its first workflow task picked up (its history), its order row
 * and its payment written (ORDER_CREATED, PAYMENT_CREATED), its first workflow task completed, its answer received.
 * All clocks are this host's. `saleStartEpochMs` is the sale's start on the epoch clock, to place the answers.
 */
async function winnerStages(
  system: BenchSystem,
  answers: Answer[],
  saleStartEpochMs: number,
): Promise<{ stage: string; ms: ReturnType<typeof summarize> }[]> {
  const winners = answers.filter((a) => a.status === 201 && a.orderId);
  const ids = winners.map((a) => a.orderId!);
  const events = ids.length
    ? ((await system
        .db('order_events')
        .whereIn('order_id', ids)
        .whereIn('type', ['STOCK_RESERVED', 'ORDER_CREATED', 'PAYMENT_CREATED'])
        .select('order_id', 'type', 'at')) as { order_id: string; type: string; at: Date | string }[])
    : [];
  const entry = new Map<string, number>();
  for (const e of events)
    entry.set(`${e.order_id} ${e.type}`, (e.at instanceof Date ? e.at : new Date(`${e.at}Z`)).getTime());
  const { EventType } = temporal.api.enums.v1;
  const epoch = (t: temporal.api.history.v1.IHistoryEvent['eventTime']) =>
    Number(t?.seconds ?? 0) * 1000 + Math.floor((t?.nanos ?? 0) / 1e6);
  const rows: number[][] = [];
  await inParallel(winners, 10, async (a) => {
    const history = await system.temporal.workflow.getHandle(orderWorkflowId(a.orderId!)).fetchHistory();
    const list = history.events ?? [];
    const first = (type: number) => list.find((e) => e.eventType === type);
    const started = first(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED);
    const taskStarted = first(EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED);
    const taskCompleted = first(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED);
    const at = (type: string) => entry.get(`${a.orderId} ${type}`);
    const points = [
      saleStartEpochMs + a.at - a.ms,
      at('STOCK_RESERVED'),
      started && epoch(started.eventTime),
      taskStarted && epoch(taskStarted.eventTime),
      at('ORDER_CREATED'),
      at('PAYMENT_CREATED'),
      taskCompleted && epoch(taskCompleted.eventTime),
      saleStartEpochMs + a.at,
    ];
    if (points.every((p) => typeof p === 'number')) rows.push(points as number[]);
  });
  const names = [
    'sent -> Try committed',
    'Try -> workflow started',
    'started -> first task picked up',
    'picked up -> order row written',
    'order row -> payment created',
    'payment -> first task completed',
    'task completed -> answer received',
  ];
  return names.map((stage, i) => ({ stage, ms: summarize(rows.map((r) => r[i + 1]! - r[i]!)) }));
}

export async function runFlashSaleBench(argv: string[]): Promise<number> {
  const flags = parseFlags(
    argv,
    {
      buyers: 'int',
      stock: 'int',
      connections: 'int',
      buckets: 'int',
      warmup: 'int',
      'separate-api': 'flag',
      keyed: 'flag',
      quick: 'flag',
    },
    USAGE,
  );
  const keyed = flags.keyed === true;
  const quick = flags.quick === true;
  const buyers = (flags.buyers as number | undefined) ?? (quick ? 200 : 2000);
  const stock = (flags.stock as number | undefined) ?? (quick ? 20 : 100);
  const connections = Math.min((flags.connections as number | undefined) ?? (quick ? 50 : 200), buyers);
  const buckets = flags.buckets as number | undefined;
  const separateApi = flags['separate-api'] === true;
  const warmup = (flags.warmup as number | undefined) ?? connections;
  const options = { buyers, stock, connections, buckets: buckets ?? 1, separateApi, warmup, keyed };
  log(
    `flash sale: ${buyers} buyers, ${stock} units, ${connections} connections${buckets ? `, ${buckets} stock buckets` : ''}${keyed ? ', each with an Idempotency-Key' : ''}`,
  );

  const system = await startSystem({ database: 'payflow_bench_flash', name: 'bench-flash-sale', separateApi });
  const sku = `flash-${system.runId}`;
  await system.createProduct(sku, stock, buckets ? { buckets } : {});

  const pool = new KeepAlivePool(system.apiUrl, connections);
  /** One buyer's POST /orders for one unit. */
  const placeOne = (userId: string, item: string, timeoutMs = 60_000, key?: string) =>
    pool.request('POST', '/orders', {
      body: JSON.stringify({ userId, items: [{ sku: item, quantity: 1 }] }),
      headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
      timeoutMs,
    });
  // Orders placed before the sale to warm the worker (left waiting for payment; not counted below).
  const warmOrders: string[] = [];
  if (warmup > 0) {
    // A few real orders of another SKU first: a shop that is already serving has run orders through its worker (the
    // workflow bundle loaded into its sandbox, the activities' MySQL and provider connections open). Without them the
    // sale's first winners paid that start-up, about 0.9 s each here.
    const warmSku = `flash-warm-${system.runId}`;
    await system.createProduct(warmSku, WARM_ORDERS);
    const o0 = performance.now();
    await inParallel(
      Array.from({ length: WARM_ORDERS }, (_, i) => i),
      WARM_ORDERS,
      async (i) => {
        const r = await placeOne(`warm-order-${i}`, warmSku);
        const orderId = field(JSON.parse(r.text) as unknown, 'orderId');
        if (r.status !== 201 || typeof orderId !== 'string')
          throw new Error(`warm-up order answered ${r.status}: ${r.text.slice(0, 200)}`);
        warmOrders.push(orderId);
      },
    );
    log(`warm-up: ${WARM_ORDERS} orders of another SKU placed in ${((performance.now() - o0) / 1000).toFixed(1)} s`);
    // A SKU with no units: every warm-up request is answered 409 from MySQL alone, nothing starts on Temporal.
    const soldOut = `flash-warmup-${system.runId}`;
    await system.createProduct(soldOut, 0);
    const warm = new Tally();
    const w0 = performance.now();
    await inParallel(
      Array.from({ length: warmup }, (_, i) => i),
      connections,
      async (i) => {
        const r = await placeOne(`warmup-${i}`, soldOut);
        warm.add(String(r.status));
      },
    );
    log(
      `warm-up: ${warmup} requests for a sold-out SKU in ${((performance.now() - w0) / 1000).toFixed(1)} s (${warm.toString()}), ${pool.opened} connections open`,
    );
  }
  const answers: Answer[] = [];
  const byStatus = new Tally();
  const runTag = randomBytes(3).toString('hex');
  const cpu = cpuMeter(system);
  // Visibility's StartTime has whole-millisecond precision; a second of slack covers clock rounding, and the
  // task queue is the run's own, so nothing else can be counted.
  const saleStart = new Date(Date.now() - 1000);
  const t0 = performance.now();
  const stopProgress = startProgress(() => {
    const elapsed = performance.now() - t0;
    return `${answers.length}/${buyers} answered · ${byStatus.toString()} · ${(elapsed / 1000).toFixed(1)} s · ${perSecond(answers.length, elapsed).toFixed(1)} requests/s`;
  });
  await inParallel(
    Array.from({ length: buyers }, (_, i) => i),
    connections,
    async (i) => {
      const sent = performance.now();
      let answer: Answer;
      try {
        const buyer = `flash-${runTag}-buyer-${i}`;
        const r = await placeOne(buyer, sku, 120_000, keyed ? `${buyer}-key` : undefined);
        let parsed: unknown;
        try {
          parsed = JSON.parse(r.text);
        } catch {
          parsed = undefined;
        }
        const retryAfter = r.headers['retry-after'];
        const orderId = r.status === 201 ? field(parsed, 'orderId') : undefined;
        answer = {
          status: r.status,
          ...(typeof orderId === 'string' ? { orderId } : {}),
          code: errorCode(parsed),
          ms: r.ms,
          at: performance.now() - t0,
          ...(retryAfter !== undefined ? { retryAfter: String(retryAfter) } : {}),
        };
      } catch (err) {
        answer = { status: 0, error: errorKind(err), ms: performance.now() - sent, at: performance.now() - t0 };
      }
      answers.push(answer);
      byStatus.add(
        answer.status === 0 ? `network ${answer.error}` : `${answer.status}${answer.code ? ` ${answer.code}` : ''}`,
      );
    },
  );
  const saleMs = performance.now() - t0;
  stopProgress();
  const used = cpu();
  const opened = pool.opened;
  pool.close();
  if (runAbort.signal.aborted) log(`run ended early: ${abortReason()}`);

  // Temporal's count of the workflows the sale started.
  const query = `WorkflowType = '${ORDER_WORKFLOW_TYPE}' AND TaskQueue = '${system.config.taskQueue}' AND StartTime >= '${saleStart.toISOString()}'${warmOrders.map((id) => ` AND WorkflowId != '${orderWorkflowId(id)}'`).join('')}`;
  log('waiting for Temporal visibility to settle');
  const workflows = await stableWorkflowCount(system, query);

  log("reading the winners' timelines and histories");
  const stages = await winnerStages(system, answers, performance.timeOrigin + t0);

  const product = await http('GET', `${system.apiUrl}/admin/products/${sku}`, undefined, 10_000, {
    authorization: `Bearer ${system.adminToken}`,
  });
  const stockAfter = field(product.body, 'stock') as { available: number; reserved: number; sold: number } | undefined;
  const statusRows = (await system
    .db('orders')
    .whereNotIn('order_id', warmOrders)
    .select('status')
    .count({ n: '*' })
    .groupBy('status')
    .orderBy('status')) as { status: string; n: number | string }[];
  const orderStatuses = Object.fromEntries(statusRows.map((r) => [r.status, Number(r.n)]));

  const winners = answers.filter((a) => a.status === 201);
  const losers = answers.filter((a) => a.status === 409 && a.code === FailureType.OUT_OF_STOCK);
  const others = answers.filter((a) => !winners.includes(a) && !losers.includes(a));
  const fiveXx = answers.filter((a) => a.status >= 500).length;
  const network = answers.filter((a) => a.status === 0).length;
  const shed = answers.filter((a) => a.status === 429 || a.status === 503);
  const shedWithRetryAfter = shed.filter((a) => a.retryAfter !== undefined).length;
  const expectedWinners = Math.min(stock, buyers);
  const taken = stockAfter ? stockAfter.reserved + stockAfter.sold : undefined;
  const checks = {
    winnersEqualStock: winners.length === expectedWinners,
    unitsTakenEqualWinners: taken === winners.length,
    availableLeft: stockAfter !== undefined && stockAfter.available === stock - (taken ?? 0),
    ordersHoldingEqualWinners: (orderStatuses.AWAITING_PAYMENT ?? 0) === winners.length,
    no5xx: fiveXx === 0,
    noNetworkErrors: network === 0,
    retryAfterOnEvery429and503: shedWithRetryAfter === shed.length,
  };
  const ok = !runAbort.signal.aborted && Object.values(checks).every(Boolean);
  const latency = (list: Answer[]) => summarize(list.map((a) => a.ms));
  const [winnerLatency, loserLatency, otherLatency] = [latency(winners), latency(losers), latency(others)];
  const ratio = Math.round((workflows.count / stock) * 100) / 100;
  const span = (list: Answer[]) =>
    list.length
      ? { first: Math.round(Math.min(...list.map((a) => a.at))), last: Math.round(Math.max(...list.map((a) => a.at))) }
      : null;
  const [winnersSpan, losersSpan] = [span(winners), span(losers)];
  const spanText = (name: string, x: { first: number; last: number } | null) =>
    x ? `${name} ${(x.first / 1000).toFixed(1)}-${(x.last / 1000).toFixed(1)} s` : `no ${name}`;
  // Answers per second of the sale, by kind: when the winners got through, against the losers.
  const timeline: Record<string, Record<string, number>> = {};
  for (const a of answers) {
    const second = String(Math.floor(a.at / 1000));
    const kind = a.status === 0 ? 'network' : String(a.status);
    timeline[second] ??= {};
    timeline[second][kind] = (timeline[second][kind] ?? 0) + 1;
  }

  const report = {
    ok,
    command: commandLine(),
    machine: machineFacts(),
    options,
    sku,
    saleStartedAt: saleStart.toISOString(),
    saleMs: Math.round(saleMs),
    requestsPerSecond: perSecond(answers.length, saleMs),
    connectionsOpened: opened,
    answers: byStatus.toJSON(),
    fiveXx,
    networkErrors: network,
    retryAfter: { answers429or503: shed.length, withRetryAfter: shedWithRetryAfter },
    answeredAtMs: { winners: winnersSpan, losers: losersSpan },
    answersPerSecondOfSale: timeline,
    winnerLatencyMs: winnerLatency,
    loserLatencyMs: loserLatency,
    otherLatencyMs: otherLatency,
    workflowsStarted: { ...workflows, query, perUnitOfStock: ratio },
    winnerStagesMs: stages,
    stockAfter: stockAfter ?? null,
    orderStatuses,
    checks,
    cpu: used,
    temporal: system.temporalNote,
    systemLog: system.systemLog,
  };
  const reportFile = writeReport('bench-flash-sale', report);
  const p90: ('p50' | 'p90' | 'p99')[] = ['p50', 'p90', 'p99'];
  const mark = (good: boolean) => (good ? 'OK' : 'NOT OK');

  console.log(`
Flash-sale report ${ok ? '(books exact, no 5xx)' : '(CHECK FAILED, see below)'}
${table([
  ['command', report.command],
  ['machine', report.machine],
  [
    'sale',
    `${buyers} buyers x 1 unit of ${sku} (${stock} units, ${buckets ? `${buckets} buckets` : 'one stock row'}), over ${connections} keep-alive connections (${opened} opened); ${separateApi ? 'API in its own process' : 'API, worker and sandbox in one process'}; ${warmup ? `after a warm-up of ${WARM_ORDERS} orders of another SKU and ${warmup} requests for a sold-out SKU` : 'cold start (no warm-up)'}`,
  ],
  ['wall time', `${(saleMs / 1000).toFixed(2)} s`],
  ['throughput', `${report.requestsPerSecond.toFixed(2)} requests/s (every answer, over the whole sale)`],
  ['winners (201) ms', latencyRow(winnerLatency, p90)],
  ['losers (409 OUT_OF_STOCK) ms', latencyRow(loserLatency, p90)],
  ...(others.length ? ([['other answers ms', latencyRow(otherLatency, p90)]] as [string, string][]) : []),
  ['answers', `${byStatus.toString()}; 5xx: ${fiveXx}; network errors: ${network}`],
  ['answered', `into the sale: ${spanText('winners', winnersSpan)}, ${spanText('losers', losersSpan)}`],
  ['winners, stage by stage', 'from the timelines (MySQL) and the histories (Temporal), one clock'],
  ...stages.map((st): [string, string] => [
    `  ${st.stage}`,
    st.ms
      ? `p50 ${st.ms.p50.toFixed(0)}  p90 ${st.ms.p90.toFixed(0)}  max ${st.ms.max.toFixed(0)} ms (n=${st.ms.count})`
      : '-',
  ]),
  [
    'Retry-After',
    shed.length === 0
      ? 'no 429/503 answers'
      : `${shedWithRetryAfter} of ${shed.length} 429/503 answers carry it (${mark(checks.retryAfterOnEvery429and503)})`,
  ],
  [
    'workflows started',
    `${workflows.count} (Temporal visibility${workflows.stable ? `, stable after ${(workflows.waitedMs / 1000).toFixed(1)} s` : ', STILL CHANGING after 60 s'}) = ${ratio} per unit of stock, ${Math.round((workflows.count / Math.max(1, buyers)) * 100)}% of buyers`,
  ],
  [
    'stock after',
    stockAfter
      ? `available=${stockAfter.available} reserved=${stockAfter.reserved} sold=${stockAfter.sold}; ${taken} units taken for ${winners.length} winners, ${expectedWinners} expected (${mark(checks.winnersEqualStock && checks.unitsTakenEqualWinners && checks.availableLeft)})`
      : `unreadable: HTTP ${product.status}`,
  ],
  [
    'orders in MySQL',
    `${
      Object.entries(orderStatuses)
        .map(([s, n]) => `${s}=${n}`)
        .join('  ') || 'none'
    } (${mark(checks.ordersHoldingEqualWinners)}: orders holding stock = winners)`,
  ],
  ['cpu during sale', used.text],
  ['system log', `${logSummary(system.systemLog)} (${system.systemLog})`],
  ['temporal', system.temporalNote],
  ['report', reportFile],
])}`);
  if (!ok)
    console.log(
      `\n  checks: ${JSON.stringify(checks)}\n  what the system under test logged (${system.systemLog}), grouped:\n${logDigest(system.systemLog)}`,
    );
  return ok ? 0 : 1;
}
