/**
 * Streaming reader of Alipay-style bill CSVs (the sandbox's `GET /v1/bills/:date`): `#` header and summary
 * lines, a column line, one detail row per payment or refund, ids with a trailing tab (Alipay) or a leading
 * backtick (WeChat), amounts in yuan, refunds negative. Parses chunk by chunk, so a bill of any size is read
 * with memory bounded by one chunk plus one batch of rows; checks the row counts of the summary lines so a
 * truncated download is noticed instead of silently reconciling half a day.
 */
import { Currency, fromMajorString } from '../shared/money';
import { type BillRow } from './types';

/** The bill cannot be read as a bill (wrong columns, bad amount, counts that disagree): retrying cannot help. */
export class BillFormatError extends Error {
  override name = 'BillFormatError';
}

/** The bill ended early (no end marker or summary): a transport fault, worth a retry. */
export class BillTruncatedError extends Error {
  override name = 'BillTruncatedError';
}

const COMMA = 44;
const LF = 10;
const CR = 13;
const QUOTE = 34;
const HASH = 35;

/** A parsed record (its cells) or a whole `#` comment line, in the order they appear. */
export type CsvItem = string[] | string;

/**
 * Incremental RFC 4180 reader: feed text in any chunking, get complete records. Quoted fields may hold commas,
 * quotes, tabs and line breaks. Lines starting with `#` are comments, returned whole as strings in their place.
 */
export class CsvStreamParser {
  private row: string[] = [];
  private cell = '';
  private quoted = false;
  private quotePending = false;
  private inComment = false;
  private comment = '';
  private atRecordStart = true;

  /** Parses the next piece of text; returns the records and comment lines it completed. */
  push(text: string): CsvItem[] {
    const out: CsvItem[] = [];
    const n = text.length;
    let i = 0;
    while (i < n) {
      if (this.inComment) {
        const nl = text.indexOf('\n', i);
        if (nl === -1) {
          this.comment += text.slice(i);
          break;
        }
        this.comment += text.slice(i, nl);
        out.push(this.comment.replace(/\r$/, ''));
        this.comment = '';
        this.inComment = false;
        this.atRecordStart = true;
        i = nl + 1;
        continue;
      }
      const c = text.charCodeAt(i);
      if (this.quoted) {
        if (this.quotePending) {
          this.quotePending = false;
          if (c === QUOTE) {
            this.cell += '"';
            i += 1;
            continue;
          }
          this.quoted = false; // the quote closed the field; `c` is read as unquoted below
        } else {
          const q = text.indexOf('"', i);
          if (q === -1) {
            this.cell += text.slice(i);
            break;
          }
          this.cell += text.slice(i, q);
          this.quotePending = true;
          i = q + 1;
          continue;
        }
      }
      if (this.atRecordStart) {
        this.atRecordStart = false;
        if (c === HASH) {
          this.inComment = true;
          i += 1;
          this.comment = '#';
          continue;
        }
      }
      if (c === QUOTE) {
        this.quoted = true;
        i += 1;
      } else if (c === COMMA) {
        this.row.push(this.cell);
        this.cell = '';
        i += 1;
      } else if (c === LF) {
        this.row.push(this.cell);
        if (this.row.length > 1 || this.row[0] !== '') out.push(this.row);
        this.row = [];
        this.cell = '';
        this.atRecordStart = true;
        i += 1;
      } else if (c === CR) {
        i += 1;
      } else {
        let j = i + 1;
        while (j < n) {
          const d = text.charCodeAt(j);
          if (d === COMMA || d === LF || d === CR || d === QUOTE) break;
          j += 1;
        }
        this.cell += text.slice(i, j);
        i = j;
      }
    }
    return out;
  }

  /** Ends the input; returns the last record when the text did not end with a line break. */
  end(): CsvItem[] {
    if (this.quoted && !this.quotePending) throw new BillFormatError('bill ends inside a quoted field');
    if (this.inComment) {
      this.inComment = false;
      return [this.comment.replace(/\r$/, '')];
    }
    if (this.cell === '' && this.row.length === 0) return [];
    const last = [...this.row, this.cell];
    this.row = [];
    this.cell = '';
    return [last];
  }
}

/** Column names of the detail rows; the first name found in the column line wins (Alipay and sandbox spellings). */
const COLUMNS = {
  tradeNo: ['交易号', '支付宝交易号', '微信订单号'],
  outTradeNo: ['商户订单号'],
  type: ['业务类型'],
  completedAt: ['完成时间', '交易时间'],
  currency: ['币种'],
  received: ['商家实收（元）', '商家实收(元)'],
  outRefundNo: ['退款批次号/请求号', '商户退款单号'],
} as const;
type Column = keyof typeof COLUMNS;

/** Alipay appends a tab to ids, WeChat prefixes every field with a backtick; neither is part of the id. */
export function cleanBillId(cell: string): string {
  return cell.replace(/^[`\s]+|[\t\s]+$/g, '');
}

/** `YYYY-MM-DD HH:mm:ss` in China time (bills carry no zone) to ISO 8601 UTC. */
function chinaTimeToIso(text: string): string {
  const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})$/.exec(text.trim());
  if (!m) throw new BillFormatError(`bad completion time ${JSON.stringify(text)}`);
  const at = new Date(`${m[1]}T${m[2]}+08:00`);
  if (Number.isNaN(at.getTime())) throw new BillFormatError(`bad completion time ${JSON.stringify(text)}`);
  return at.toISOString();
}

/** Reads `#交易合计：N笔` / `#退款合计：M笔` so the detail rows can be checked against them. */
function summaryCount(line: string, label: string): number | undefined {
  const m = new RegExp(`^#${label}[：:]\\s*(\\d+)\\s*笔`).exec(line);
  return m ? Number(m[1]) : undefined;
}

/** Options of parseBillStream. */
export interface ParseBillOptions {
  /** Rows before this 0-based detail row are read (and counted) but not yielded: resume after a retry. */
  fromRow?: number;
}

/**
 * Turns a stream of bill text into normalised rows: kind from 业务类型 (交易/退款), ids cleaned, yuan to
 * positive minor units with the row's currency, completion time to ISO. Throws BillFormatError on anything
 * that is not a well-formed bill and BillTruncatedError when the stream ends before the summary.
 */
export async function* parseBillStream(
  chunks: AsyncIterable<string>,
  options: ParseBillOptions = {},
): AsyncGenerator<BillRow> {
  const fromRow = options.fromRow ?? 0;
  const comments = {
    ended: false,
    payments: undefined as number | undefined,
    refunds: undefined as number | undefined,
  };
  const parser = new CsvStreamParser();
  let index: Record<Column, number> | undefined;
  let rowNo = 0;
  const counted = { payments: 0, refunds: 0 };

  const toRow = (cells: string[]): BillRow => {
    const cell = (c: Column) => cells[index![c]] ?? '';
    const type = cell('type').trim();
    const kind = type === '交易' ? 'PAYMENT' : type === '退款' ? 'REFUND' : undefined;
    if (!kind) throw new BillFormatError(`row ${rowNo}: unknown business type ${JSON.stringify(type)}`);
    const currency = Currency.safeParse(cell('currency').trim());
    if (!currency.success) throw new BillFormatError(`row ${rowNo}: bad currency ${JSON.stringify(cell('currency'))}`);
    let signed: number;
    try {
      signed = fromMajorString(cell('received'), currency.data);
    } catch (err) {
      throw new BillFormatError(`row ${rowNo}: ${(err as Error).message}`);
    }
    if (kind === 'PAYMENT' ? signed < 0 : signed > 0)
      throw new BillFormatError(`row ${rowNo}: a ${type} row with amount ${cell('received')}`);
    const outRefundNo = cleanBillId(cell('outRefundNo'));
    const row: BillRow = {
      kind,
      outTradeNo: cleanBillId(cell('outTradeNo')),
      tradeNo: cleanBillId(cell('tradeNo')),
      amount: Math.abs(signed),
      currency: currency.data,
      at: chinaTimeToIso(cell('completedAt')),
      ...(kind === 'REFUND' ? { outRefundNo } : {}),
    };
    if (!row.outTradeNo || !row.tradeNo) throw new BillFormatError(`row ${rowNo}: missing trade ids`);
    if (kind === 'REFUND' && !outRefundNo) throw new BillFormatError(`row ${rowNo}: refund without a refund number`);
    return row;
  };

  const handle = function* (items: CsvItem[]): Generator<BillRow> {
    for (const cells of items) {
      if (typeof cells === 'string') {
        if (cells.includes('业务明细列表结束')) comments.ended = true;
        comments.payments ??= summaryCount(cells, '交易合计');
        comments.refunds ??= summaryCount(cells, '退款合计');
        continue;
      }
      if (!index) {
        index = columnIndex(cells);
        continue;
      }
      if (comments.ended) throw new BillFormatError('detail rows after the end marker');
      const row = toRow(cells);
      if (row.kind === 'PAYMENT') counted.payments += 1;
      else counted.refunds += 1;
      if (rowNo >= fromRow) yield row;
      rowNo += 1;
    }
  };

  for await (const chunk of chunks) yield* handle(parser.push(chunk));
  yield* handle(parser.end());

  if (!index) throw new BillTruncatedError('the bill has no column line');
  if (!comments.ended && comments.payments === undefined)
    throw new BillTruncatedError(`the bill ended after ${rowNo} rows without its end marker or summary`);
  if (comments.payments !== undefined && comments.payments !== counted.payments) {
    throw new BillFormatError(
      `the bill summary lists ${comments.payments} payments but ${counted.payments} payment rows were read`,
    );
  }
  if (comments.refunds !== undefined && comments.refunds !== counted.refunds) {
    throw new BillFormatError(
      `the bill summary lists ${comments.refunds} refunds but ${counted.refunds} refund rows were read`,
    );
  }
}

function columnIndex(cells: string[]): Record<Column, number> {
  const names = cells.map((c) => c.trim());
  const found = {} as Record<Column, number>;
  for (const [column, aliases] of Object.entries(COLUMNS) as [Column, readonly string[]][]) {
    const i = names.findIndex((name) => aliases.includes(name));
    if (i === -1) throw new BillFormatError(`the bill's column line has no ${aliases[0]} column`);
    found[column] = i;
  }
  return found;
}

/** Decodes a byte stream (any chunking, multi-byte characters split across chunks) as text in `encoding`. */
export async function* decodeText(bytes: AsyncIterable<Uint8Array>, encoding = 'utf-8'): AsyncGenerator<string> {
  const decoder = new TextDecoder(encoding);
  for await (const chunk of bytes) {
    const text = decoder.decode(chunk, { stream: true });
    if (text) yield text;
  }
  const rest = decoder.decode();
  if (rest) yield rest;
}
