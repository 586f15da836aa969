/**
 * A JSON value read from MySQL: MariaDB returns JSON functions' results (JSON_OBJECT, JSON_ARRAYAGG) as text, MySQL
 * as parsed values; SQL NULL (no row for a subquery, an empty aggregate) is undefined.
 */
export function jsonColumn<T>(value: unknown): T | undefined {
  if (value === null || value === undefined) return undefined;
  return (typeof value === 'string' ? JSON.parse(value) : value) as T;
}

/** Sorts rows by SKU in binary collation order, as a plain read of `order_lines` by primary key returns them. */
export function bySkuOrder<L extends { sku: string }>(lines: L[]): L[] {
  return lines.sort((a, b) => (a.sku < b.sku ? -1 : a.sku > b.sku ? 1 : 0));
}
