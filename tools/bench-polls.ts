/**
 * `npm run bench -- --polls [--buyers 1000] [--interval 2s] [--duration 30s] [--clients 20] [--quick]`
 *
 * What buyers polling their orders costs. The bench places `buyers` orders nobody pays (waiting orders), then runs
 * two phases of the lifecycle bench's clients (`clients` buyers each looping create -> pay at the sandbox -> PAID;
 * tools/bench-harness.ts runLifecycleClients) for `duration` each:
 *   1. alone;
 *   2. while every waiting order's buyer polls GET /orders/:id every `interval` (one keep-alive connection per
 *      buyer, first polls spread over the first interval; the phase's clients start one interval later).
 * Prints polls/s (achieved against the target buyers/interval), poll latency, and create and pay-to-PAID latency
 * without and with the polling, side by side. Exit code 0 when nothing failed, 1 otherwise.
 */
import {
  KeepAlivePool,
  Load,
  type Summary,
  Tally,
  abortReason,
  commandLine,
  cpuMeter,
  errorKind,
  log,
  latencyRow,
  machineFacts,
  parseFlags,
  perSecond,
  placeOrders,
  runAbort,
  runLifecycleClients,
  sleep,
  startProgress,
  startSystem,
  summarize,
  table,
  logDigest,
  logSummary,
  writeReport,
} from './bench-harness';

const USAGE = `usage: npm run bench -- --polls [--buyers N] [--interval 2s] [--duration 30s] [--clients C] [--quick]
  --buyers    waiting orders, each polled by its buyer (GET /orders/:id)   (default 1000; --quick 100)
  --interval  time between one buyer's polls                                (default 2s)
  --duration  length of each phase (without, then with the polling)          (default 30s;  --quick 10s)
  --clients   lifecycle clients measuring create and pay->PAID latency      (default 20)
The waiting orders are placed first, at the API's pace (about 10 orders/s on 2 cores).`;

interface PollStats {
  polls: number;
  windowMs: number;
  latency: Summary | null;
  answers: Tally;
  /** Polls whose answer took longer than the interval (the buyer's next poll was late). */
  late: number;
  connectionsOpened: number;
}

/**
 * Every buyer polls its own order every `intervalMs` until `stop()`; resolves with the figures once all have stopped.
 */
function startPollers(
  apiUrl: string,
  orderIds: string[],
  intervalMs: number,
): { stop: () => Promise<PollStats>; count: () => number } {
  const pool = new KeepAlivePool(apiUrl, orderIds.length);
  const ms: number[] = [];
  const answers = new Tally();
  let late = 0;
  let stopped = false;
  const t0 = performance.now();
  const pollers = orderIds.map(async (orderId) => {
    await sleep(Math.random() * intervalMs);
    while (!stopped && !runAbort.signal.aborted) {
      const sent = performance.now();
      try {
        const r = await pool.request('GET', `/orders/${encodeURIComponent(orderId)}`, { timeoutMs: 30_000 });
        ms.push(r.ms);
        let status = '';
        if (r.status === 200) {
          try {
            status = String((JSON.parse(r.text) as { status?: string }).status ?? '');
          } catch {
            status = 'unparsable';
          }
        }
        answers.add(`${r.status}${status ? ` ${status}` : ''}`);
        if (r.ms > intervalMs) late++;
      } catch (err) {
        answers.add(`network ${errorKind(err)}`);
      }
      await sleep(Math.max(0, sent + intervalMs - performance.now()));
    }
  });
  return {
    count: () => ms.length,
    async stop() {
      stopped = true;
      const windowMs = performance.now() - t0;
      await Promise.all(pollers);
      const connectionsOpened = pool.opened;
      pool.close();
      return { polls: ms.length, windowMs, latency: summarize(ms), answers, late, connectionsOpened };
    },
  };
}

function phaseFigures(load: Load) {
  const wallMs = load.endedAt - load.startedAt;
  return {
    orders: load.records.length,
    paid: load.paid,
    failed: load.failed,
    ordersPerSecond: perSecond(load.paid, wallMs),
    createLatencyMs: load.createLatency(),
    payToPaidLatencyMs: load.payToPaidLatency(),
    errors: Object.fromEntries([...load.errors].map(([k, v]) => [k, v.count])),
  };
}

export async function runPollsBench(argv: string[]): Promise<number> {
  const flags = parseFlags(
    argv,
    { buyers: 'int', interval: 'duration', duration: 'duration', clients: 'int', quick: 'flag' },
    USAGE,
  );
  const quick = flags.quick === true;
  const buyers = (flags.buyers as number | undefined) ?? (quick ? 100 : 1000);
  const intervalMs = (flags.interval as number | undefined) ?? 2000;
  const durationMs = (flags.duration as number | undefined) ?? (quick ? 10_000 : 30_000);
  const clients = (flags.clients as number | undefined) ?? 20;
  const options = { buyers, intervalMs, durationMs, clients };
  log(
    `polls: ${buyers} buyers polling every ${intervalMs / 1000} s; ${clients} lifecycle clients for ${durationMs / 1000} s without, then with the polling`,
  );

  // The waiting orders must still be waiting at the end: a payment timeout far beyond the run.
  const system = await startSystem({
    database: 'payflow_bench_polls',
    name: 'bench-polls',
    // The waiting orders' own provider queries are pushed out of the run: they would start 30 s after each order
    // (QUERY_FIRST_DELAY), i.e. during the polling phase, and a thousand workflows querying the provider is the cost
    // of waiting orders, not of their buyers' polls. The lifecycle clients' orders are paid at once and never query.
    env: { PAYMENT_TIMEOUT: '2h', QUERY_FIRST_DELAY: '1h', QUERY_MAX_INTERVAL: '1h' },
  });
  const sku = `polls-${system.runId}`;
  await system.createProduct(sku, buyers + 1_000_000);

  log(`placing ${buyers} waiting orders`);
  const waiting = await placeOrders(system, sku, buyers, clients, `poller-${system.runId}`);
  log(
    `${waiting.orderIds.length} waiting orders placed in ${(waiting.ms / 1000).toFixed(1)} s (${perSecond(waiting.orderIds.length, waiting.ms).toFixed(1)} orders/s)${waiting.problems.total ? `; ${waiting.problems.toString()}` : ''}`,
  );

  // Phase 1: the lifecycle clients alone.
  log(`phase 1: ${clients} lifecycle clients, no polling, ${durationMs / 1000} s`);
  const cpuAlone = cpuMeter(system);
  const shown: { load?: Load; polls?: () => number } = {};
  const stopProgress = startProgress(() => {
    const load = shown.load;
    if (!load) return 'starting';
    const elapsed = performance.now() - load.startedAt;
    return `${load.paid} paid · ${load.created} created · ${load.failed} errors · ${(elapsed / 1000).toFixed(1)} s${shown.polls ? ` · ${shown.polls()} polls` : ''}`;
  });
  const aloneUntil = performance.now() + durationMs;
  shown.load = new Load();
  const alone = await runLifecycleClients(system, sku, clients, () => performance.now() < aloneUntil, shown.load);
  const aloneCpu = cpuAlone();

  // Phase 2: the same clients while every buyer polls.
  log(
    `phase 2: ${buyers} buyers polling every ${intervalMs / 1000} s, and ${clients} lifecycle clients from one interval later for ${durationMs / 1000} s`,
  );
  const cpuPolled = cpuMeter(system);
  const pollers = startPollers(system.apiUrl, waiting.orderIds, intervalMs);
  shown.polls = pollers.count;
  await sleep(intervalMs);
  const polledUntil = performance.now() + durationMs;
  shown.load = new Load();
  const polled = await runLifecycleClients(system, sku, clients, () => performance.now() < polledUntil, shown.load);
  const polls = await pollers.stop();
  const polledCpu = cpuPolled();
  stopProgress();
  if (runAbort.signal.aborted) log(`run ended early: ${abortReason()}`);

  const a = phaseFigures(alone);
  const b = phaseFigures(polled);
  const targetPerSecond = Math.round((waiting.orderIds.length / (intervalMs / 1000)) * 10) / 10;
  const pollsPerSecond = perSecond(polls.polls, polls.windowMs);
  const pollFailures = [...polls.answers.counts].filter(([k]) => !k.startsWith('200')).reduce((s, [, n]) => s + n, 0);
  const ok =
    !runAbort.signal.aborted &&
    a.failed === 0 &&
    b.failed === 0 &&
    pollFailures === 0 &&
    waiting.orderIds.length === buyers;
  const report = {
    ok,
    command: commandLine(),
    machine: machineFacts(),
    options,
    waitingOrders: { placed: waiting.orderIds.length, ms: Math.round(waiting.ms), problems: waiting.problems.toJSON() },
    polls: { ...polls, answers: polls.answers.toJSON(), pollsPerSecond, targetPerSecond },
    withoutPolling: { ...a, cpu: aloneCpu },
    withPolling: { ...b, cpu: polledCpu },
    temporal: system.temporalNote,
    systemLog: system.systemLog,
  };
  const reportFile = writeReport('bench-polls', report);

  const cell = (s: Summary | null) =>
    s ? `p50 ${s.p50.toFixed(1).padStart(8)}  p99 ${s.p99.toFixed(1).padStart(8)}  (n=${s.count})` : 'n/a';
  const width = 44;
  const side = (label: string, left: string, right: string): [string, string] => [
    label,
    `${left.padEnd(width)}${right}`,
  ];
  console.log(`
Polling report ${ok ? '(no errors)' : '(ERRORS, see below)'}
${table([
  ['command', report.command],
  ['machine', report.machine],
  [
    'waiting orders',
    `${waiting.orderIds.length} placed in ${(waiting.ms / 1000).toFixed(1)} s${waiting.problems.total ? ` (${waiting.problems.toString()})` : ''}`,
  ],
  [
    'polls',
    `${pollsPerSecond.toFixed(1)} polls/s achieved of ${targetPerSecond}/s asked (${buyers} buyers every ${intervalMs / 1000} s, ${polls.connectionsOpened} connections opened), ${polls.polls} polls in ${(polls.windowMs / 1000).toFixed(1)} s`,
  ],
  ['poll latency ms', latencyRow(polls.latency, ['p50', 'p99'])],
  ['poll answers', `${polls.answers.toString()}; ${polls.late} slower than the interval`],
  side('', 'without polling', `with ${waiting.orderIds.length} buyers polling every ${intervalMs / 1000} s`),
  side('create latency ms', cell(a.createLatencyMs), cell(b.createLatencyMs)),
  side('pay->PAID ms', cell(a.payToPaidLatencyMs), cell(b.payToPaidLatencyMs)),
  side(
    'throughput',
    `${a.ordersPerSecond.toFixed(2)} orders/s to PAID`,
    `${b.ordersPerSecond.toFixed(2)} orders/s to PAID`,
  ),
  side(
    'errors',
    Object.entries(a.errors)
      .map(([k, n]) => `${k} x${n}`)
      .join(', ') || 'none',
    Object.entries(b.errors)
      .map(([k, n]) => `${k} x${n}`)
      .join(', ') || 'none',
  ),
  side('cpu', `machine ${aloneCpu.machineBusyPercent}% busy`, `machine ${polledCpu.machineBusyPercent}% busy`),
  ['cpu with polling', polledCpu.text],
  ['system log', `${logSummary(system.systemLog)} (${system.systemLog})`],
  ['temporal', system.temporalNote],
  ['report', reportFile],
])}`);
  if (!ok)
    console.log(
      `\n  what the system under test logged (${system.systemLog}), grouped:\n${logDigest(system.systemLog)}`,
    );
  return ok ? 0 : 1;
}
