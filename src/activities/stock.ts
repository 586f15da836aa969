/**
 * Kept only for src/tools/bench-hot-sku.ts, which imports the stock TCC from here and is being changed on another
 * branch. The stock participant lives in src/db/stock.ts (the API's admission runs its Try too); delete this file once
 * the benchmark imports it from there (issue #13, point 4 moves the tools out of src).
 */
export { bucketShare, tryReserveStock } from '../db/stock';
