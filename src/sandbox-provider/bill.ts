/**
 * The daily bill (`GET /v1/bills/:date`) in the shape of Alipay's 业务明细 CSV: `#` header lines, a
 * column line, one row per payment and per refund completed that China day, `#` footer lines.
 */
import { toMajorString } from '../shared/money';
import { formatChinaDateTime, formatChinaDateTimeLong } from './china-time';
import { type Payment, type Refund } from './payments';

/** The column line, exactly as reconciliation expects it. */
export const BILL_COLUMNS = [
  '交易号',
  '商户订单号',
  '业务类型',
  '商品名称',
  '创建时间',
  '完成时间',
  '币种',
  '订单金额（元）',
  '商家实收（元）',
  '退款批次号/请求号',
  '服务费（元）',
] as const;

/** The line that ends the detail rows. */
export const BILL_END_MARKER =
  '#-----------------------------------------业务明细列表结束------------------------------------';

/** What a bill is made from. */
export interface BillInput {
  /** The bill day's [start, end) in instants (China calendar day). */
  start: Date;
  end: Date;
  /** Shown as the account in the header. */
  account: string;
  payments: Payment[];
  refunds: Array<{ refund: Refund; payment: Payment }>;
  exportedAt: Date;
}

interface BillRow {
  completedAt: Date;
  cells: string[];
}

/** Renders the bill as CSV text (UTF-8, `\n` line ends). */
export function renderBill(input: BillInput): string {
  const tradeRows = input.payments.map(tradeRow);
  const refundRows = input.refunds.map(({ refund, payment }) => refundRow(refund, payment));
  // Stable sort: rows completed in the same millisecond keep payment-before-refund order.
  const rows = [...tradeRows, ...refundRows].sort((a, b) => a.completedAt.getTime() - b.completedAt.getTime());
  const lines = [
    '#沙箱支付业务明细查询',
    `#账号：[${input.account}]`,
    `#起始日期：[${formatChinaDateTimeLong(input.start)}]   终止日期：[${formatChinaDateTimeLong(input.end)}]`,
    '#-----------------------------------------业务明细列表----------------------------------------',
    csvLine([...BILL_COLUMNS]),
    ...rows.map((row) => csvLine(row.cells)),
    BILL_END_MARKER,
    `#交易合计：${tradeRows.length}笔，商家实收共计：${total(input.payments.map((p) => [p.paidAmount ?? 0, p.currency]))}元`,
    `#退款合计：${refundRows.length}笔，退款共计：${total(input.refunds.map(({ refund, payment }) => [-refund.amount, payment.currency]))}元`,
    `#导出时间：[${formatChinaDateTimeLong(input.exportedAt)}]`,
  ];
  return `${lines.join('\n')}\n`;
}

function tradeRow(payment: Payment): BillRow {
  const paidAt = payment.paidAt!;
  return {
    completedAt: paidAt,
    cells: [
      providerId(payment.tradeNo),
      providerId(payment.outTradeNo),
      '交易',
      subjectCell(payment),
      formatChinaDateTime(payment.createdAt),
      formatChinaDateTime(paidAt),
      payment.currency,
      toMajorString(payment.amount, payment.currency),
      toMajorString(payment.paidAmount ?? 0, payment.currency),
      '',
      toMajorString(0, payment.currency),
    ],
  };
}

/** Like Alipay, a refund row repeats the trade's ids and creation time and carries negative amounts. */
function refundRow(refund: Refund, payment: Payment): BillRow {
  const negative = toMajorString(-refund.amount, payment.currency);
  return {
    completedAt: refund.refundedAt,
    cells: [
      providerId(payment.tradeNo),
      providerId(payment.outTradeNo),
      '退款',
      subjectCell(payment),
      formatChinaDateTime(payment.createdAt),
      formatChinaDateTime(refund.refundedAt),
      payment.currency,
      negative,
      negative,
      providerId(refund.outRefundNo),
      toMajorString(0, payment.currency),
    ],
  };
}

/** One line per row, whatever the merchant put in the subject. */
function subjectCell(payment: Payment): string {
  return (payment.subject ?? '').replace(/[\r\n]+/g, ' ');
}

/** Alipay appends a tab to ids so that spreadsheets keep them as text instead of mangling long numbers. */
function providerId(id: string): string {
  return `${id}\t`;
}

/** Sum in yuan; in the unusual case of several currencies on one day, one sum per currency. */
function total(amounts: Array<[number, string]>): string {
  const sums = new Map<string, number>();
  for (const [amount, currency] of amounts) sums.set(currency, (sums.get(currency) ?? 0) + amount);
  if (sums.size === 0) return toMajorString(0, 'CNY');
  if (sums.size === 1) {
    const [[currency, sum]] = [...sums] as [[string, number]];
    return toMajorString(sum, currency);
  }
  return [...sums].map(([currency, sum]) => `${currency} ${toMajorString(sum, currency)}`).join('；');
}

/** RFC 4180 quoting; fields with a tab are quoted too so that trimming CSV readers keep the tab. */
function csvLine(cells: string[]): string {
  return cells.map((cell) => (/[",\r\n\t]/.test(cell) ? `"${cell.replaceAll('"', '""')}"` : cell)).join(',');
}

/** One parsed detail row of a bill, cells exactly as written (ids keep their trailing tab). */
export type BillRecord = Record<(typeof BILL_COLUMNS)[number], string>;

/** Parses the detail rows of a bill rendered by renderBill (skips `#` lines and the column line). */
export function parseBill(text: string): BillRecord[] {
  const rows = parseCsv(
    text
      .split('\n')
      .filter((line) => !line.startsWith('#'))
      .join('\n'),
  );
  const [header, ...data] = rows;
  if (!header || header.join(',') !== BILL_COLUMNS.join(','))
    throw new Error('not a sandbox bill: the column line is missing or different');
  return data.map((cells) => Object.fromEntries(BILL_COLUMNS.map((name, i) => [name, cells[i] ?? ''])) as BillRecord);
}

/** Minimal RFC 4180 reader: quoted fields may hold commas, quotes, tabs and line breaks. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        cell += '"';
        i += 1;
      } else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(cell);
      cell = '';
    } else if (ch === '\n') {
      rows.push([...row, cell]);
      row = [];
      cell = '';
    } else if (ch !== '\r') cell += ch;
  }
  if (cell !== '' || row.length > 0) rows.push([...row, cell]);
  return rows;
}
