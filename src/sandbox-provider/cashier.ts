/**
 * The buyer-facing cashier page (`GET /pay/:outTradeNo`): one self-contained HTML page, no external
 * assets and no script, whose Pay button is a plain form POST.
 */
import { formatMoney, toMajorString } from '../shared/money';
import { SandboxErrorCode } from '../contracts/sandbox';
import { SandboxLocalErrorCode } from './errors';
import { formatChinaDateTime } from './china-time';
import { type Payment } from './payments';

/** Content-Security-Policy for the pages: inline styles only, forms post back to the sandbox itself. */
export const CASHIER_CSP =
  "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/** What the cashier page shows. */
export interface CashierView {
  payment: Payment;
  now: Date;
  /** Whether the Pay button is offered (unpaid and still open, or closed while the QR stays payable). */
  payable: boolean;
  /** The code of a refused payment, carried back through the redirect. */
  errorCode?: string;
}

const STATUS_LABELS: Record<Payment['status'], string> = {
  WAIT_BUYER_PAY: 'Awaiting payment',
  SUCCESS: 'Paid',
  CLOSED: 'Closed',
  REFUNDED: 'Refunded',
};

const ERROR_TEXTS: Record<string, string> = {
  [SandboxErrorCode.TRADE_CLOSED]: 'Payment refused: this order is closed or has expired.',
  [SandboxLocalErrorCode.TRADE_ALREADY_PAID]: 'Payment refused: this order has already been paid.',
};

const CURRENCY_SYMBOLS: Record<string, string> = { CNY: '¥', USD: '$', EUR: '€', GBP: '£', JPY: '¥' };

/** Escapes text for HTML element content and double-quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** The cashier page of one payment. */
export function renderCashierPage(view: CashierView): string {
  const { payment } = view;
  const symbol = CURRENCY_SYMBOLS[payment.currency];
  const headline = symbol
    ? `${symbol}${toMajorString(payment.amount, payment.currency)}`
    : formatMoney(payment.amount, payment.currency);
  const path = `/pay/${encodeURIComponent(payment.outTradeNo)}`;
  const rows: Array<[string, string]> = [
    ['Merchant', payment.merchantId],
    ['Order number', payment.outTradeNo],
    ...(payment.subject ? ([['Item', payment.subject]] as Array<[string, string]>) : []),
    ['Amount', formatMoney(payment.amount, payment.currency)],
    ['Status', STATUS_LABELS[payment.status]],
    ['Time left', timeLeft(payment, view.now)],
    ['Expires at', `${formatChinaDateTime(payment.expiresAt)} (UTC+08:00)`],
  ];
  const body = `
  <p class="label">Amount due</p>
  <p class="amount">${escapeHtml(headline)}</p>
  <p class="status status-${escapeHtml(payment.status.toLowerCase())}">${escapeHtml(STATUS_LABELS[payment.status])}</p>
  ${view.errorCode ? `<p class="error" role="alert">${escapeHtml(ERROR_TEXTS[view.errorCode] ?? `Payment refused (${view.errorCode}).`)}</p>` : ''}
  <dl>${rows.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join('')}</dl>
  ${view.payable ? `<form method="post" action="${escapeHtml(path)}"><button type="submit">Pay ${escapeHtml(headline)}</button></form>` : ''}`;
  return page(`Pay ${payment.outTradeNo}`, body);
}

/** The page for an order the sandbox does not know. */
export function renderNotFoundPage(outTradeNo: string): string {
  return page(
    'Order not found',
    `<p class="error">No payment with order number <strong>${escapeHtml(outTradeNo)}</strong>.</p>`,
  );
}

function timeLeft(payment: Payment, now: Date): string {
  if (payment.status !== 'WAIT_BUYER_PAY') return '—';
  const seconds = Math.max(0, Math.floor((payment.expiresAt.getTime() - now.getTime()) / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h > 0 ? `${h} h ${String(m).padStart(2, '0')} min` : `${m} min ${String(s).padStart(2, '0')} s`;
}

function page(title: string, content: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · Sandbox cashier</title>
<style>
  body { margin: 0; min-height: 100vh; display: flex; align-items: center; justify-content: center;
         background: #f2f4f7; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "PingFang SC", sans-serif; color: #1d2939; }
  main { background: #fff; width: min(420px, 92vw); padding: 28px 32px; border-radius: 14px; box-shadow: 0 8px 30px rgba(16,24,40,.08); }
  header { font-size: 13px; color: #667085; letter-spacing: .04em; text-transform: uppercase; margin-bottom: 12px; }
  .label { margin: 0; color: #667085; font-size: 13px; }
  .amount { margin: 2px 0 10px; font-size: 36px; font-weight: 650; }
  .status { display: inline-block; margin: 0 0 16px; padding: 2px 10px; border-radius: 999px; font-size: 13px; background: #eef2f6; }
  .status-wait_buyer_pay { background: #fef0c7; color: #93370d; }
  .status-success { background: #d1fadf; color: #05603a; }
  .status-closed, .status-refunded { background: #eaecf0; color: #344054; }
  .error { background: #fee4e2; color: #912018; padding: 8px 12px; border-radius: 8px; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: 6px 16px; margin: 0 0 20px; }
  dt { color: #667085; } dd { margin: 0; text-align: right; word-break: break-all; }
  button { width: 100%; padding: 12px; border: 0; border-radius: 10px; background: #1677ff; color: #fff; font-size: 16px; cursor: pointer; }
  button:hover { background: #0958d9; }
</style>
</head>
<body>
<main>
  <header>Sandbox cashier</header>${content}
</main>
</body>
</html>
`;
}
