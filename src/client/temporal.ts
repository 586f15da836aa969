/**
 * Kept only for the benchmark tools (src/tools/bench-harness.ts, bench-system.ts), which import `connectTemporal` from
 * here and are being changed on another branch. Everything else imports src/temporal/connection.ts; delete this file
 * once the tools import it too (issue #13, point 4 moves them out of src).
 */
export { connectTemporal } from '../temporal/connection';
