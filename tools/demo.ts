/**
 * `npm run demo [-- --pay]`: walks through one order against a running system (`npm start`).
 *
 * Creates or updates the demo product, places an order and prints where to look: the sandbox cashier page
 * (open it and press Pay), the order's status URL, the Temporal Web UI page of its workflow and the CLI
 * commands that show the same history. With `--pay` it pays through the sandbox API itself and follows the
 * order until it is PAID, printing each status change. Configuration comes from the same environment as
 * the system (PUBLIC_BASE_URL / PORT, ADMIN_TOKEN, TEMPORAL_UI_URL, TEMPORAL_NAMESPACE, ...).
 */
import { loadConfigOrExit } from '../src/config';
import { orderWorkflowId } from '../src/contracts/order';
import { formatMoney } from '../src/shared/money';

const SKU = 'demo-tea';
const PRODUCT = { name: 'Demo tea (longjing, 250 g)', price: 2900, currency: 'CNY', stock: 100 };
const POLL_INTERVAL_MS = 500;
const PAY_WAIT_MS = 60_000;
const REQUEST_TIMEOUT_MS = 35_000;
const FINAL = new Set(['PAID', 'EXPIRED', 'CANCELLED', 'REFUNDED', 'NEEDS_REVIEW', 'FAILED']);

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s);

class DemoError extends Error {}

interface Reply {
  status: number;
  body: Record<string, unknown>;
}

async function call(method: string, url: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  let response: Response;
  try {
    response = await fetch(url, {
      method,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (err) {
    const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
    const why =
      e.name === 'TimeoutError'
        ? `no answer within ${REQUEST_TIMEOUT_MS / 1000}s`
        : (e.cause?.code ?? e.cause?.message ?? e.message ?? String(err));
    throw new DemoError(`${method} ${url} failed: ${why}`);
  }
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = { message: text.slice(0, 300) };
  }
  return {
    status: response.status,
    body: (typeof parsed === 'object' && parsed !== null ? parsed : { value: parsed }) as Record<string, unknown>,
  };
}

function describe(r: Reply): string {
  const { error, code, message } = r.body;
  return `HTTP ${r.status}${typeof (error ?? code) === 'string' ? ` ${String(error ?? code)}` : ''}${typeof message === 'string' ? `: ${message}` : ''}`;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a !== '--pay');
  if (unknown.length) throw new DemoError(`unknown argument ${unknown.join(' ')}; usage: npm run demo [-- --pay]`);
  const pay = args.includes('--pay');
  const config = loadConfigOrExit();
  const api = config.publicBaseUrl;

  // Is the system there at all?
  let health: Reply;
  try {
    health = await call('GET', `${api}/healthz`);
  } catch (err) {
    throw new DemoError(
      `The order API at ${api} is not reachable (${(err as Error).message.replace(/^GET \S+ failed: /, '')}).\nStart it with npm start (in another terminal), or point PORT / PUBLIC_BASE_URL at the running one.`,
    );
  }
  if (health.status !== 200) {
    console.warn(
      `warning: ${api}/healthz says ${describe(health)} ${JSON.stringify(health.body.checks ?? {})}; trying anyway`,
    );
  }

  // The demo product: created, or reset to the demo price and stock.
  const admin = { authorization: `Bearer ${config.adminToken}` };
  const product = await call('PUT', `${api}/admin/products/${SKU}`, PRODUCT, admin);
  if (product.status === 401)
    throw new DemoError(
      `the API refused the admin token (${describe(product)}); run the demo with the same ADMIN_TOKEN as the system`,
    );
  if (product.status !== 200 && product.status !== 201)
    throw new DemoError(`could not set up the demo product: ${describe(product)}`);
  console.log(
    `${product.status === 201 ? 'Created' : 'Updated'} product ${bold(SKU)}: ${PRODUCT.name}, ${formatMoney(PRODUCT.price, PRODUCT.currency)}, stock ${PRODUCT.stock}`,
  );

  // The order.
  const userId = `demo-user-${Date.now().toString(36)}`;
  const created = await call('POST', `${api}/orders`, { userId, items: [{ sku: SKU, quantity: 1 }] });
  if (created.status !== 201) throw new DemoError(`placing the order failed: ${describe(created)}`);
  const orderId = String(created.body.orderId);
  const amount = Number(created.body.amount);
  const currency = String(created.body.currency);
  const payment = (created.body.payment ?? {}) as { paymentUrl?: string; expiresAt?: string };
  const workflowId = orderWorkflowId(orderId);
  const ns = config.temporalNamespace;
  const cliFlags = `${ns === 'default' ? '' : ` --namespace ${ns}`}${config.temporalAddress === '127.0.0.1:7233' || config.temporalAddress === 'localhost:7233' ? '' : ` --address ${config.temporalAddress}`}`;

  console.log(`
${bold('Order placed')}
  Order id        ${bold(orderId)}   (user ${userId})
  Amount          ${formatMoney(amount, currency)}   (${amount} minor units)
  Status          ${String(created.body.status)}, pay before ${payment.expiresAt ?? '?'}

${bold('Pay')}      open the cashier page and press Pay:
  ${payment.paymentUrl ?? '(no payment URL returned)'}

${bold('Watch')}    the order's status (AWAITING_PAYMENT, then PAID a moment after you pay):
  ${api}/orders/${orderId}
  curl -s ${api}/orders/${orderId}

${bold('Temporal')} the order's workflow (${workflowId}) in the Web UI:
  ${config.temporalUiUrl}/namespaces/${encodeURIComponent(ns)}/workflows/${encodeURIComponent(workflowId)}
  or with the CLI ${dim('(npm run temporal:ensure prints its path if temporal is not on PATH)')}:
  temporal workflow describe -w ${workflowId}${cliFlags}
  temporal workflow show -w ${workflowId}${cliFlags}
`);
  if (!pay) {
    console.log(dim('Tip: npm run demo -- --pay pays through the sandbox API and follows the order to PAID.'));
    return;
  }

  // --pay: the buyer pays through the sandbox API; then follow the order.
  const sandbox = payment.paymentUrl ? payment.paymentUrl.replace(/\/pay\/[^/]+$/, '') : config.sandboxUrl;
  const paid = await call('POST', `${sandbox}/v1/payments/${encodeURIComponent(orderId)}/pay`, {});
  if (paid.status !== 200) throw new DemoError(`paying at the sandbox failed: ${describe(paid)}`);
  const started = Date.now();
  console.log(
    `${bold('Paid')} at the sandbox (trade ${String(paid.body.tradeNo ?? '?')}); following the order every ${POLL_INTERVAL_MS} ms for up to ${PAY_WAIT_MS / 1000} s:`,
  );
  let last = '';
  while (Date.now() - started < PAY_WAIT_MS) {
    const r = await call('GET', `${api}/orders/${orderId}`);
    if (r.status !== 200) throw new DemoError(`reading the order failed: ${describe(r)}`);
    const status = String(r.body.status);
    if (status !== last) {
      console.log(
        `  +${String(Date.now() - started).padStart(5)} ms  ${bold(status)}${typeof r.body.userMessage === 'string' ? `  ${dim(r.body.userMessage)}` : ''}`,
      );
      last = status;
    }
    if (status === 'PAID') {
      console.log(
        `\nDone: order ${orderId} is PAID. The workflow history shows the callback, the stock confirmation and the status change.`,
      );
      return;
    }
    if (FINAL.has(status)) throw new DemoError(`order ${orderId} ended ${status}, not PAID`);
    await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
  }
  throw new DemoError(
    `order ${orderId} was not PAID within ${PAY_WAIT_MS / 1000} s (last status ${last}); is the worker running?`,
  );
}

main().catch((err: unknown) => {
  console.error(err instanceof DemoError ? `[demo] ${err.message}` : `[demo] ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
});
