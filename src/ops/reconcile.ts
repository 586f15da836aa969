/**
 * `npm run reconcile -- --provider sandbox --date YYYY-MM-DD [--rerun]`: starts (or joins) the reconciliation run
 * of a provider's bill day through the ops API of a running system, shows a progress bar until it finishes,
 * then prints the report summary and the differences that need a person.
 *
 * Options: `--date` defaults to yesterday (in the provider's bill time zone); only a day that has ended there can be
 * reconciled (the API answers 422 BILL_DAY_NOT_ENDED for today, and this command exits 1); `--rerun` asks for a new run of a day
 * that already has one; `--api URL` (default API_URL, else PUBLIC_BASE_URL) and ADMIN_TOKEN from the same
 * environment as the system. Exit status: 0 nothing needs a person (lost callbacks found are repaired, every other
 * difference resolved by an operator), 2 unresolved differences to review or critical ones, 1 the run failed or could
 * not be started. Ctrl-C stops watching;
 * the run goes on in Temporal.
 */
import { loadConfigOrExit } from '../config';
import type { ItemView, RunView } from '../reconciliation/runs';
import { BillDate, billDateOf } from '../contracts/reconciliation';

const POLL_MS = 400;
const tty = process.stdout.isTTY === true;
const bold = (s: string) => (tty ? `\x1b[1m${s}\x1b[0m` : s);
const red = (s: string) => (tty ? `\x1b[31m${s}\x1b[0m` : s);
const yellow = (s: string) => (tty ? `\x1b[33m${s}\x1b[0m` : s);
const green = (s: string) => (tty ? `\x1b[32m${s}\x1b[0m` : s);

class UsageError extends Error {}

function parseArgs(argv: string[]): { provider: string; date: string; rerun: boolean; api?: string } {
  const out: { provider: string; date: string; rerun: boolean; api?: string } = {
    provider: 'sandbox',
    date: '',
    rerun: false,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${arg} needs a value`);
      return v;
    };
    if (arg === '--provider') out.provider = value();
    else if (arg === '--date') out.date = value();
    else if (arg === '--api') out.api = value();
    else if (arg === '--rerun') out.rerun = true;
    else if (arg === '--help' || arg === '-h') throw new UsageError('');
    else throw new UsageError(`unknown option ${arg}`);
  }
  // Yesterday where the provider cuts its bill days (today has not ended, and the API refuses it).
  out.date ||= billDateOf(Date.now() - 86_400_000, out.provider);
  if (!BillDate.safeParse(out.date).success)
    throw new UsageError(`--date ${out.date} is not a real day; use YYYY-MM-DD`);
  return out;
}

/** A run as the ops API answers it (with its items, and what operators resolved, when asked for its report). */
type Run = RunView & {
  items?: ItemView[];
  resolved?: number;
  unresolved?: { critical: number; review: number; repaired: number };
};

/** An API answer: runs, or `{ error, message }`. */
type Answer = Run & { error?: string; message?: string };

async function call(
  method: string,
  url: string,
  token: string,
  body?: unknown,
): Promise<{ status: number; body: Answer }> {
  let response: Response;
  try {
    response = await fetch(url, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (err) {
    const e = err as { cause?: { code?: string }; message?: string };
    throw new Error(
      `${method} ${url} failed: ${e.cause?.code ?? e.message}; is the system running (npm start) and --api right?`,
    );
  }
  const text = await response.text();
  let parsed: unknown = {};
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = { message: text.slice(0, 200) };
  }
  return { status: response.status, body: parsed as Answer };
}

/** Overall progress 0..1 over the phases: the bill is most of the work, then the local scan, then repairs. */
function fraction(run: Run): number {
  const p = run.progress;
  switch (run.phase) {
    case 'BILL': {
      const expected = Math.max(p.expectedRows ?? 0, p.billRows, 1);
      return 0.8 * Math.min(p.billRows / expected, 0.99);
    }
    case 'LOCAL':
      return 0.85;
    case 'REPAIR':
      return 0.9 + 0.1 * (p.repairsTotal ? p.repairsDone / p.repairsTotal : 0);
    case 'DONE':
      return 1;
    default:
      return 0;
  }
}

function describeProgress(run: Run): string {
  const p = run.progress;
  const n = (v: number) => v.toLocaleString('en-US');
  const phase =
    run.phase === 'BILL'
      ? `comparing bill rows ${n(p.billRows)}${p.expectedRows ? ` / ~${n(Math.max(p.expectedRows, p.billRows))}` : ''}`
      : run.phase === 'LOCAL'
        ? `looking for local records the bill lacks (${n(p.localRows)} found)`
        : run.phase === 'REPAIR'
          ? `repairing lost payments ${p.repairsDone}/${p.repairsTotal}`
          : run.phase === 'DONE'
            ? 'done'
            : run.status.toLowerCase();
  const retry = p.billAttempts > 1 ? `  (attempt ${p.billAttempts}, resumed at row ${n(p.resumedFromRow ?? 0)})` : '';
  return `${phase}${retry}`;
}

function bar(f: number, width = 30): string {
  const filled = Math.round(f * width);
  return `[${'█'.repeat(filled)}${'░'.repeat(width - filled)}] ${String(Math.floor(f * 100)).padStart(3)}%`;
}

async function main(): Promise<number> {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    if (err.message) console.error(`reconcile: ${err.message}`);
    console.error(
      'usage: npm run reconcile -- [--provider sandbox] [--date YYYY-MM-DD (default yesterday)] [--rerun] [--api http://127.0.0.1:3000]',
    );
    return 1;
  }
  const config = loadConfigOrExit();
  const api = (args.api ?? process.env.API_URL ?? config.publicBaseUrl).replace(/\/$/, '');
  const started = await call('POST', `${api}/ops/reconciliations`, config.adminToken, {
    provider: args.provider,
    date: args.date,
    rerun: args.rerun,
  });
  if (started.status !== 200 && started.status !== 202) {
    console.error(
      red(
        `reconcile: could not start: HTTP ${started.status} ${started.body.error ?? ''} ${started.body.message ?? ''}`.trim(),
      ),
    );
    return 1;
  }
  let run = started.body as Run;
  console.log(
    `${bold(run.id)}: ${started.status === 202 ? 'new run' : `existing run (${run.status.toLowerCase()}); add --rerun for a new one`} of the ${args.provider} bill of ${args.date}`,
  );
  console.log(`  report:   ${api}/ops/reconciliations/${run.id}`);
  console.log(`  workflow: ${config.temporalUiUrl}/namespaces/${config.temporalNamespace}/workflows/${run.id}`);

  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
  });
  let lastLine = '';
  let lastPrint = 0;
  while (run.status === 'QUEUED' || run.status === 'RUNNING') {
    const line = `${bar(fraction(run))}  ${describeProgress(run)}`;
    if (tty) process.stdout.write(`\r\x1b[2K${line}`);
    else if (line !== lastLine && Date.now() - lastPrint > 5000) {
      console.log(line);
      lastPrint = Date.now();
    }
    lastLine = line;
    if (interrupted) {
      if (tty) process.stdout.write('\n');
      console.log(
        `stopped watching; the run goes on. Follow it with: npm run reconcile -- --provider ${args.provider} --date ${args.date}`,
      );
      return 1;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
    const polled = await call('GET', `${api}/ops/reconciliations/${run.id}?limit=20`, config.adminToken);
    if (polled.status !== 200)
      throw new Error(`reading the run failed: HTTP ${polled.status} ${JSON.stringify(polled.body).slice(0, 200)}`);
    run = polled.body as Run;
  }
  // The differences nobody has resolved yet (resolutions of the day's earlier runs carry over to this one).
  const final = await call('GET', `${api}/ops/reconciliations/${run.id}?limit=20&resolved=false`, config.adminToken);
  run = final.body as Run;
  if (tty)
    process.stdout.write(
      `\r\x1b[2K${bar(run.status === 'COMPLETED' ? 1 : fraction(run))}  ${run.status.toLowerCase()}\n`,
    );

  if (run.status === 'FAILED') {
    console.error(red(`reconciliation ${run.id} FAILED: ${run.error ?? 'see the workflow'}`));
    return 1;
  }
  const totals = run.totals ?? {};
  const severityOf: Record<string, string> = {
    MATCHED: 'matched',
    PAID_NOT_RECORDED: 'lost callback, repaired automatically',
    MISSING_AT_PROVIDER: 'CRITICAL: paid locally, missing at the provider',
    AMOUNT_MISMATCH: 'review: amount or currency differ',
    REFUND_MISMATCH: 'review: refund missing, duplicated, of another amount, or failed at the provider',
    UNKNOWN_TRADE: 'review: a trade for an order we never created',
    DISPUTED: 'review: a dispute (chargeback) took back the money of a paid order',
  };
  console.log(
    `\n${bold('Report')} ${run.id}: ${run.progress.billRows.toLocaleString('en-US')} bill rows, ${run.differences ?? 0} difference(s)`,
  );
  for (const [cls, n] of Object.entries(totals)) {
    const text = `  ${String(n).padStart(9)}  ${cls.padEnd(20)} ${severityOf[cls] ?? ''}`;
    console.log(
      n === 0 || cls === 'MATCHED'
        ? text
        : cls === 'MISSING_AT_PROVIDER'
          ? red(text)
          : cls === 'PAID_NOT_RECORDED'
            ? green(text)
            : yellow(text),
    );
  }
  if (run.resolved)
    console.log(
      `\n${run.resolved} difference(s) already resolved by an operator (see resolution on the items at ${api}/ops/reconciliations/${run.id}?resolved=true)`,
    );
  const open = (run.items ?? []).filter((i) => i.severity === 'critical' || i.severity === 'review');
  if (open.length) {
    console.log(
      `\n${bold('Needs a person')} (first ${open.length} unresolved; all at ${api}/ops/reconciliations/${run.id}?resolved=false):`,
    );
    for (const i of open) {
      const amounts = `bill ${i.bill ? `${i.bill.amount} ${i.bill.currency}` : '-'}, local ${i.local?.amount ?? '-'}`;
      console.log(
        `  #${i.id}  ${i.class}${i.detail ? `/${i.detail}` : ''}  order ${i.outTradeNo ?? '-'}  trade ${i.tradeNo ?? '-'}${i.outRefundNo ? `  refund ${i.outRefundNo}` : ''}  (${amounts})`,
      );
    }
  }
  if (open.length)
    console.log(
      `  resolve one once handled: curl -XPOST -H "Authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' ` +
        `-d '{"operator":"<you>","note":"<what was done, ticket>"}' ${api}/ops/reconciliations/${run.id}/items/<id>/resolution`,
    );
  const left = run.unresolved ?? run.bySeverity;
  const needsPerson = (left?.critical ?? 0) + (left?.review ?? 0);
  return needsPerson > 0 ? 2 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(red(`reconcile: ${(err as Error).message}`));
    process.exit(1);
  },
);
