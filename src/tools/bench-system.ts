/**
 * The system under test of `npm run bench`: sandbox provider, API and worker in one process (startStack),
 * configured entirely from the environment the benchmark hands it. Runs in a child process so that the
 * load generator never shares its event loop. Stops on SIGTERM/SIGINT, or when the parent's IPC channel
 * closes (the benchmark died), so it never outlives the run. With BENCH_SYSTEM_API=off it runs the sandbox and
 * the worker only, and the benchmark runs the API (src/client/main.ts) as a process of its own that it can kill.
 */
import { loadConfigOrExit } from '../config';
import { createLogger } from '../observability/logger';
import { installTemporalRuntime } from '../workers/telemetry';
import { startStack } from './stack';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  // One JSON logger for the API, the worker and the SDK, at warn unless LOG_LEVEL says otherwise: the log of a
  // benchmark run should hold only what went wrong.
  const logger = createLogger({ level: process.env.LOG_LEVEL ? config.logLevel : 'warn', format: config.logFormat, name: 'payflow-bench-system' });
  installTemporalRuntime({ logger });
  const poolMax = Number(process.env.BENCH_DB_POOL_MAX ?? 20);
  const withApi = process.env.BENCH_SYSTEM_API !== 'off';
  const stackOptions = { config, logger, dbPoolMax: Number.isInteger(poolMax) && poolMax > 0 ? poolMax : 20 };
  const stack = withApi ? await startStack(stackOptions) : await startStack({ ...stackOptions, api: false });
  console.log(`[bench-system] ${withApi ? `API on ${config.publicBaseUrl}, ` : ''}sandbox on ${config.sandboxUrl}, worker polling "${config.taskQueue}"`);
  // The API answers /healthz before the worker has bundled the workflow code; this says the worker polls too.
  process.send?.({ type: 'ready' });

  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`[bench-system] stopping (${why})`);
    await stack.stop().catch((err: unknown) => console.error(`[bench-system] stop failed: ${(err as Error).stack ?? String(err)}`));
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  if (process.connected) process.on('disconnect', () => void stop('parent went away'));
}

main().catch((err: unknown) => {
  console.error(`[bench-system] ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
