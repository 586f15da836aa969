/**
 * `npm run bench -- --callbacks [--orders 100] [--redeliveries 30] [--connections 50] [--kill-api-at N] [--quick]`
 *
 * A storm of provider notifications at POST /callbacks/sandbox. The bench places `orders` orders and pays each at
 * the sandbox for real (so the payment the workflow confirms exists at the provider), with the sandbox's own
 * deliveries switched off (fault `dropNotifications: 1`), and the workflows' active provider queries pushed out of
 * the run (QUERY_FIRST_DELAY 30m): only the storm can move an order to PAID. It then builds each payment's
 * `payment.succeeded` notification itself (src/contracts/sandbox.ts SandboxNotification, the data read back from
 * the sandbox) and delivers each one `redeliveries` times, shuffled, signed anew for every send
 * (signSandboxPayload), over `connections` keep-alive connections. A send that is not acknowledged is sent again
 * after 250 ms, as a provider redelivers.
 *
 * Prints acks/s, ack latency, the non-200 answers, and afterwards: every order PAID with exactly one transition to
 * PAID, one PAID payments row per order, one inbox row per notification with deliveries summed = sends that reached
 * the API, and the invariant checker's verdict (src/ops/invariants.ts, with the sandbox's bills, as the soak runs it).
 *
 * `--kill-api-at N`: the API runs in a process of its own; after N sends it is SIGKILLed and started again while
 * the storm goes on (sends to the dead API fail and are resent).
 * Exit code 0 when every check and every invariant holds, 1 otherwise.
 */
import { randomBytes } from 'node:crypto';
import { SANDBOX_ACK_BODY, SANDBOX_SIGNATURE_HEADER, SandboxNotification } from '../src/contracts/sandbox';
import { checkInvariants, formatInvariants } from '../src/ops/invariants';
import { sandboxBillRows } from '../src/ops/sandbox-bills';
import { signSandboxPayload } from '../src/providers/sandbox-signature';
import {
  KeepAlivePool,
  Tally,
  abortReason,
  atRate,
  commandLine,
  cpuMeter,
  errorKind,
  errorText,
  field,
  http,
  httpKind,
  inParallel,
  latencyRow,
  log,
  machineFacts,
  parseFlags,
  perSecond,
  placeOrders,
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

const USAGE = `usage: npm run bench -- --callbacks [--orders N] [--redeliveries R] [--connections C] [--kill-api-at K] [--separate-api] [--quick]
  --orders        orders placed and paid at the sandbox                     (default 100; --quick 20)
  --redeliveries  deliveries of each order's notification, shuffled          (default 30;  --quick 5)
  --connections   concurrent keep-alive HTTP connections of the storm        (default 50;  --quick 20)
  --kill-api-at   SIGKILL the API (run as its own process) after K sends and start it again
  --separate-api  run the API in a process of its own (as in production) instead of beside the worker
  --rate          send at this many notifications per second (open loop, at most --connections in flight; latency
                  counted from when each send was due) instead of as fast as the connections allow`;

/** How long the bench waits for the last order to become PAID after the storm. */
const SETTLE_TIMEOUT_MS = 120_000;
const RESEND_AFTER_MS = 250;

/** Fisher-Yates, in place. */
function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

export async function runCallbacksBench(argv: string[]): Promise<number> {
  const flags = parseFlags(
    argv,
    {
      orders: 'int',
      redeliveries: 'int',
      connections: 'int',
      'kill-api-at': 'int',
      'separate-api': 'flag',
      rate: 'int',
      quick: 'flag',
    },
    USAGE,
  );
  const quick = flags.quick === true;
  const orders = (flags.orders as number | undefined) ?? (quick ? 20 : 100);
  const redeliveries = (flags.redeliveries as number | undefined) ?? (quick ? 5 : 30);
  const total = orders * redeliveries;
  const connections = Math.min((flags.connections as number | undefined) ?? (quick ? 20 : 50), total);
  const killAt = flags['kill-api-at'] as number | undefined;
  if (killAt !== undefined && killAt >= total) {
    console.error(`[bench] --kill-api-at ${killAt} is not below the ${total} sends of the storm\n${USAGE}`);
    return 1;
  }
  const rate = flags.rate as number | undefined;
  if (rate !== undefined && rate < 1) {
    console.error(`[bench] --rate must be at least 1\n${USAGE}`);
    return 1;
  }
  const options = { orders, redeliveries, connections, killApiAt: killAt ?? null, rate: rate ?? null };
  log(
    `callback storm: ${orders} orders x ${redeliveries} deliveries = ${total} sends over ${connections} connections${rate ? ` at ${rate}/s` : ''}${killAt ? `, API killed after ${killAt} sends` : ''}`,
  );

  const system = await startSystem({
    database: 'payflow_bench_callbacks',
    name: 'bench-callbacks',
    separateApi: killAt !== undefined || Boolean(flags['separate-api']),
    // Only a notification may pay an order during the run: the workflows' first provider query is 30 minutes out.
    env: { QUERY_FIRST_DELAY: '30m', QUERY_MAX_INTERVAL: '30m', PAYMENT_TIMEOUT: '1h' },
  });
  const startedAt = Date.now();
  const sku = `storm-${system.runId}`;
  await system.createProduct(sku, orders);
  const faults = await http('PUT', `${system.sandboxUrl}/_control/faults`, { dropNotifications: 1 }, 10_000);
  if (faults.status !== 200) throw new Error(`could not switch the sandbox's deliveries off: ${httpKind(faults)}`);

  // Orders, paid at the sandbox (which delivers nothing itself now).
  log(`placing ${orders} orders`);
  const placed = await placeOrders(system, sku, orders, 10, `storm-${system.runId}`);
  if (placed.problems.total) log(`placing: ${placed.problems.toString()}`);
  log(`${placed.orderIds.length} orders placed in ${(placed.ms / 1000).toFixed(1)} s; paying each at the sandbox`);
  const notifications: { orderId: string; body: string }[] = [];
  const payProblems = new Tally();
  await inParallel(placed.orderIds, 10, async (orderId) => {
    try {
      const paid = await http(
        'POST',
        `${system.sandboxUrl}/v1/payments/${encodeURIComponent(orderId)}/pay`,
        {},
        20_000,
      );
      if (paid.status !== 200) return payProblems.add(`pay: ${httpKind(paid)}`);
      const p = paid.body as Record<string, unknown>;
      const notification: SandboxNotification = SandboxNotification.parse({
        id: `evt_bench_${randomBytes(12).toString('hex')}`,
        type: 'payment.succeeded',
        createdAt: new Date().toISOString(),
        data: {
          outTradeNo: orderId,
          tradeNo: p.tradeNo,
          amount: p.paidAmount ?? p.amount,
          currency: p.currency,
          merchantId: p.merchantId,
          paidAt: p.paidAt,
        },
      });
      // Serialised once: every redelivery carries the same bytes, as the sandbox's own do.
      notifications.push({ orderId, body: JSON.stringify(notification) });
    } catch (err) {
      payProblems.add(`pay: ${errorKind(err)}`);
    }
  });
  if (payProblems.total) log(`paying: ${payProblems.toString()}`);

  // The storm.
  const deliveries = shuffle(notifications.flatMap((n) => Array.from({ length: redeliveries }, () => n)));
  const secret = system.config.sandboxSecret;
  const pool = new KeepAlivePool(system.apiUrl, connections);
  const ackMs: number[] = [];
  const nonAcks = new Tally();
  const answersByStatus = new Tally();
  let sent = 0;
  let restart: Promise<{ downMs: number }> | undefined;
  let lastAckAt = 0;
  const cpu = cpuMeter(system);
  const t0 = performance.now();
  const stopProgress = startProgress(() => {
    const elapsed = performance.now() - t0;
    return `${ackMs.length}/${deliveries.length} acknowledged · ${sent} sent · not acknowledged: ${nonAcks.total} · ${(elapsed / 1000).toFixed(1)} s · ${perSecond(ackMs.length, elapsed).toFixed(1)} acks/s${restart ? ' · API killed once' : ''}`;
  });
  // Closed loop (each connection sends its next as soon as the last is acknowledged) or, with --rate, open loop.
  const send = async ({ body }: { body: string }, dueAt?: number) => {
    while (!runAbort.signal.aborted) {
      sent++;
      if (killAt !== undefined && sent === killAt) {
        log(`killing the API after ${sent} sends`);
        restart = system.restartApi();
        restart.then(
          ({ downMs }) => log(`API back after ${(downMs / 1000).toFixed(1)} s`),
          (err: unknown) => runAbort.abort(`the API did not come back: ${errorText(err)}`),
        );
      }
      const signature = signSandboxPayload(secret, body, Math.floor(Date.now() / 1000));
      try {
        const r = await pool.request('POST', '/callbacks/sandbox', {
          body,
          headers: { 'content-type': 'application/json', [SANDBOX_SIGNATURE_HEADER]: signature },
          timeoutMs: 30_000,
        });
        answersByStatus.add(String(r.status));
        if (r.status === 200 && r.text.trim() === SANDBOX_ACK_BODY) {
          ackMs.push(dueAt === undefined ? r.ms : performance.now() - dueAt);
          lastAckAt = performance.now();
          return;
        }
        let code: unknown;
        try {
          code = field(JSON.parse(r.text), 'error');
        } catch {
          code = r.text.slice(0, 40);
        }
        nonAcks.add(`${r.status}${typeof code === 'string' && code ? ` ${code}` : ''}`);
      } catch (err) {
        nonAcks.add(`network ${errorKind(err)}`);
      }
      await sleep(RESEND_AFTER_MS);
    }
  };
  if (rate) await atRate(deliveries, rate, connections, send);
  else await inParallel(deliveries, connections, (d) => send(d));
  const stormMs = performance.now() - t0;
  stopProgress();
  const restarted = restart ? await restart.catch(() => undefined) : undefined;
  const opened = pool.opened;
  pool.close();
  if (runAbort.signal.aborted) log(`run ended early: ${abortReason()}`);

  // Every order PAID, once.
  log('waiting for every order to become PAID');
  const ids = notifications.map((n) => n.orderId);
  const settleStart = performance.now();
  let paidCount = 0;
  let checksMade = 0;
  while (!runAbort.signal.aborted && ids.length > 0 && performance.now() - settleStart < SETTLE_TIMEOUT_MS) {
    const [{ n }] = (await system
      .db('orders')
      .whereIn('order_id', ids)
      .where({ status: 'PAID' })
      .count({ n: '*' })) as [{ n: number | string }];
    paidCount = Number(n);
    checksMade++;
    if (paidCount === ids.length) break;
    await sleep(500);
  }
  const allPaidMsAfterLastAck =
    paidCount === ids.length && lastAckAt > 0 ? Math.max(0, performance.now() - lastAckAt) : undefined;
  const used = cpu();
  const db = system.db;
  const statusRows = (await db('orders').select('status').count({ n: '*' }).groupBy('status').orderBy('status')) as {
    status: string;
    n: number | string;
  }[];
  const orderStatuses = Object.fromEntries(statusRows.map((r) => [r.status, Number(r.n)]));
  const transitions = (await db('order_events')
    .whereRaw(`data LIKE '%"to":"PAID"%'`)
    .groupBy('order_id')
    .select('order_id')
    .count({ n: '*' })) as { order_id: string; n: number | string }[];
  const paidOnce = ids.filter((id) => transitions.some((t) => t.order_id === id && Number(t.n) === 1)).length;
  const paidTwice = transitions.filter((t) => Number(t.n) > 1).length;
  const paymentRows = (await db('payments')
    .whereIn('order_id', ids)
    .groupBy('order_id')
    .select('order_id')
    .count({ n: '*' })
    .sum({ paid: db.raw("CASE WHEN status = 'PAID' THEN 1 ELSE 0 END") })) as {
    order_id: string;
    n: number | string;
    paid: number | string;
  }[];
  const onePaidPayment = paymentRows.filter((r) => Number(r.n) === 1 && Number(r.paid) === 1).length;
  // Redeliveries the API acknowledged from memory reach `deliveries` within a moment (one UPDATE per 200 ms): read
  // once the sum has stopped moving.
  const readInbox = async () =>
    (
      (await db('notification_inbox')
        .where({ provider: 'sandbox' })
        .count({ rows: '*' })
        .sum({ deliveries: 'deliveries' })) as { rows: number | string; deliveries: number | string | null }[]
    )[0];
  let inbox = await readInbox();
  for (let i = 0; i < 20 && !runAbort.signal.aborted && Number(inbox?.deliveries ?? 0) !== sent; i++) {
    await sleep(250);
    const next = await readInbox();
    if (i >= 4 && Number(next?.deliveries) === Number(inbox?.deliveries)) break;
    inbox = next;
  }
  const inboxRows = Number(inbox?.rows ?? 0);
  const inboxDeliveries = Number(inbox?.deliveries ?? 0);
  const inboxStatuses = Object.fromEntries(
    (
      (await db('notification_inbox').groupBy('status').select('status').count({ n: '*' })) as {
        status: string;
        n: number | string;
      }[]
    ).map((r) => [r.status, Number(r.n)]),
  );
  const [{ refunds }] = (await db('refunds').count({ refunds: '*' })) as [{ refunds: number | string }];
  const stockRow = (await db('stock').where({ sku }).first('available', 'reserved', 'sold')) as
    Record<string, number | string> | undefined;
  // A send that was not acknowledged may or may not have reached the inbox (the API died mid-request, or failed after
  // storing it): the deliveries then lie between the acknowledged sends and all sends; without such sends they equal
  // the sends. A killed API also takes with it the redeliveries it acknowledged from memory in its last 200 ms (a
  // diagnostic count; every notification is still stored): then only "at least one per notification" is checked.
  const unanswered = [...nonAcks.counts].filter(([k]) => k.startsWith('network')).reduce((s, [, n]) => s + n, 0);
  const answered = sent - unanswered;
  const deliveriesOk =
    killAt !== undefined
      ? inboxDeliveries >= inboxRows && inboxDeliveries <= sent
      : nonAcks.total === 0
        ? inboxDeliveries === sent
        : inboxDeliveries >= ackMs.length && inboxDeliveries <= sent;

  log('running the invariant checker');
  const invariants = await checkInvariants({
    db,
    providerRows: await sandboxBillRows(system.sandboxUrl, startedAt),
    convergenceBoundMs: 60_000,
  });
  const invariantsHold = invariants.every((r) => r.passed);

  const checks = {
    everyOrderPaid: ids.length === orders && paidCount === orders,
    paidExactlyOnce: paidOnce === orders && paidTwice === 0,
    onePaidPaymentPerOrder: onePaidPayment === orders,
    oneInboxRowPerNotification: inboxRows === notifications.length,
    deliveriesMatchSends: deliveriesOk,
    stockSold: Number(stockRow?.sold) === orders,
    noRefunds: Number(refunds) === 0,
    invariantsHold,
  };
  const ok = !runAbort.signal.aborted && Object.values(checks).every(Boolean);
  const ackLatency = summarize(ackMs);
  const mark = (good: boolean) => (good ? 'OK' : 'NOT OK');
  const report = {
    ok,
    command: commandLine(),
    machine: machineFacts(),
    options,
    placing: {
      orders: placed.orderIds.length,
      ms: Math.round(placed.ms),
      problems: placed.problems.toJSON(),
      payProblems: payProblems.toJSON(),
    },
    stormMs: Math.round(stormMs),
    sent,
    acknowledged: ackMs.length,
    acksPerSecond: perSecond(ackMs.length, stormMs),
    ackLatencyMs: ackLatency,
    answers: answersByStatus.toJSON(),
    notAcknowledged: nonAcks.toJSON(),
    connectionsOpened: opened,
    apiRestart: restarted ? { afterSends: killAt, downMs: Math.round(restarted.downMs) } : null,
    allPaidMsAfterLastAck: allPaidMsAfterLastAck === undefined ? null : Math.round(allPaidMsAfterLastAck),
    orderStatuses,
    refunds: Number(refunds),
    inbox: { rows: inboxRows, deliveries: inboxDeliveries, statuses: inboxStatuses, answeredSends: answered },
    checks,
    invariants,
    cpu: used,
    temporal: system.temporalNote,
    systemLog: system.systemLog,
  };
  const reportFile = writeReport('bench-callbacks', report);
  const failedInvariants = invariants.filter((r) => !r.passed).map((r) => r.name);

  console.log(`
Callback-storm report ${ok ? '(every order PAID once, books exact)' : '(CHECK FAILED, see below)'}
${table([
  ['command', report.command],
  ['machine', report.machine],
  [
    'storm',
    `${notifications.length} notifications x ${redeliveries} deliveries = ${deliveries.length}, shuffled, signed per send, over ${connections} keep-alive connections (${opened} opened)${rate ? `, sent at ${rate}/s (open loop: latency from when each send was due)` : ', each connection sending its next on the last ack (closed loop)'}`,
  ],
  ['wall time', `${(stormMs / 1000).toFixed(2)} s (${sent} sends)`],
  ['throughput', `${report.acksPerSecond.toFixed(2)} acks/s ("success" answers over the storm)`],
  ['ack latency ms', latencyRow(ackLatency, ['p50', 'p99'])],
  [
    'not acknowledged',
    `${nonAcks.total} (${nonAcks.toString()}), each sent again after ${RESEND_AFTER_MS} ms; non-200 answers: ${sent - unanswered - answersByStatus.get('200')}`,
  ],
  ...(killAt !== undefined
    ? ([
        [
          'API kill',
          restarted
            ? `SIGKILL after ${killAt} sends; /healthz 200 again after ${(restarted.downMs / 1000).toFixed(1)} s`
            : 'did not come back',
        ],
      ] as [string, string][])
    : []),
  [
    'after the storm',
    `${paidCount}/${orders} orders PAID${allPaidMsAfterLastAck === undefined ? ` (NOT all within ${SETTLE_TIMEOUT_MS / 1000} s)` : checksMade === 1 ? ' when the storm ended' : `, the last ${(allPaidMsAfterLastAck / 1000).toFixed(1)} s after the last ack`}; statuses ${Object.entries(
      orderStatuses,
    )
      .map(([s, n]) => `${s}=${n}`)
      .join(' ')}`,
  ],
  [
    'PAID once',
    `${paidOnce}/${orders} orders with exactly one transition to PAID, ${paidTwice} with more (${mark(checks.paidExactlyOnce)})`,
  ],
  [
    'payments',
    `${onePaidPayment}/${orders} orders with exactly one payments row, PAID (${mark(checks.onePaidPaymentPerOrder)})`,
  ],
  [
    'inbox',
    `${inboxRows} rows for ${notifications.length} notifications (${mark(checks.oneInboxRowPerNotification)}); deliveries summed ${inboxDeliveries}, sends ${sent}${unanswered ? ` of which ${unanswered} without an answer` : ''} (${mark(checks.deliveriesMatchSends)}); ${Object.entries(
      inboxStatuses,
    )
      .map(([s, n]) => `${s}=${n}`)
      .join(' ')}`,
  ],
  [
    'stock',
    `sold=${stockRow?.sold} reserved=${stockRow?.reserved} available=${stockRow?.available} (${mark(checks.stockSold)}); refunds ${refunds} (${mark(checks.noRefunds)})`,
  ],
  [
    'invariants',
    invariantsHold
      ? `all ${invariants.length} hold (src/ops/invariants.ts with the sandbox's bills)`
      : `FAILED: ${failedInvariants.join(', ')}`,
  ],
  ['cpu during storm', used.text],
  ['system log', `${logSummary(system.systemLog)} (${system.systemLog})`],
  ['temporal', system.temporalNote],
  ['report', reportFile],
])}`);
  if (killAt !== undefined || !invariantsHold)
    console.log(`\n  invariant checker:\n${formatInvariants(invariants).replace(/^/gm, '    ')}`);
  if (!ok)
    console.log(
      `\n  checks: ${JSON.stringify(checks)}\n  what the system under test logged (${system.systemLog}), grouped:\n${logDigest(system.systemLog)}`,
    );
  return ok ? 0 : 1;
}
