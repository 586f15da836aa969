/**
 * `npm start`: the whole system in one terminal. Finds or builds the Temporal CLI, starts the dev server
 * (file persistence under data/, Web UI), creates and migrates the database, then runs the sandbox
 * provider, the API and a worker. Ctrl-C stops everything.
 *
 * `npm start -- --cluster`: the production topology instead (tools/start-cluster.ts): a self-hosted Temporal
 * server on PostgreSQL with several history shards and its Web UI, two worker processes, two API processes and
 * the sandbox.
 */
import type { ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { loadConfigOrExit } from '../src/config';
import { migrateLatest } from '../src/db/knex';
import { createLogger } from '../src/observability/logger';
import { installTemporalRuntime } from '../src/workers/telemetry';
import { startStack } from './stack';
import { ensureTemporalCli, isListening, startDevServer } from './temporal-cli';

const step = (message: string) => console.log(`\x1b[36m[start]\x1b[0m ${message}`);

async function main(): Promise<void> {
  if (process.argv.includes('--cluster')) {
    await (await import('./start-cluster')).startCluster(process.argv.slice(2));
    return;
  }
  let config = loadConfigOrExit();
  // Development: the outbox relay delivers receipts and fulfilment hand-offs to the sandbox's stand-in of the shop's
  // systems (GET <sandbox>/shop/outbox lists them), unless OUTBOX_WEBHOOK_URL names a receiver of your own.
  if (!config.outbox.webhookUrl && config.sandboxEnabled && !config.production)
    config = { ...config, outbox: { ...config.outbox, webhookUrl: `${config.sandboxUrl}/shop/outbox` } };
  const uiPort = Number(new URL(config.temporalUiUrl).port || 8233);
  let devServer: ChildProcess | undefined;

  if (await isListening(config.temporalAddress)) {
    step(`Temporal: using the server already on ${config.temporalAddress}`);
  } else {
    const binary = ensureTemporalCli((line) => step(line));
    const dbFile = process.env.TEMPORAL_DB_FILE ?? resolve('data/temporal.db');
    step(`Temporal: starting the dev server on ${config.temporalAddress} (history kept in ${dbFile})`);
    devServer = await startDevServer(
      binary,
      { address: config.temporalAddress, namespace: config.temporalNamespace, uiPort, dbFile, logLevel: 'error' },
      'ignore',
    );
  }

  step(`MySQL: migrating ${config.databaseUrl.replace(/\/\/[^@]*@/, '//***@')}`);
  const applied = await migrateLatest(config.databaseUrl);
  step(applied.length ? `MySQL: applied ${applied.join(', ')}` : 'MySQL: schema is up to date');

  // One logger for the API, the worker, activities and workflows. In a terminal, unless LOG_FORMAT says
  // otherwise, readable lines (pino-pretty, a devDependency; JSON when it is not installed); else JSON lines.
  const format = process.env.LOG_FORMAT || !process.stdout.isTTY ? config.logFormat : 'pretty';
  let logger;
  try {
    logger = createLogger({ level: config.logLevel, format, name: 'payflow' });
  } catch {
    logger = createLogger({ level: config.logLevel, format: 'json', name: 'payflow' });
  }
  installTemporalRuntime({ logger });
  step('Starting the sandbox provider, the API and a worker (bundling workflow code takes a few seconds)');
  const stack = await startStack({ config, logger });

  console.log(`
  \x1b[1mpayflow is running\x1b[0m
    Order API        ${config.publicBaseUrl}            (POST /orders, GET /orders/:id, /healthz, /metrics)
    Sandbox provider ${config.sandboxUrl}            (cashier pages at /pay/<orderId>)
    Shop's systems   ${config.outbox.webhookUrl ?? '(outbox relay off)'}   (receipts, fulfilment hand-offs)
    Temporal Web UI  ${config.temporalUiUrl}/namespaces/${config.temporalNamespace}/workflows
    Temporal server  ${config.temporalAddress}   task queue "${config.taskQueue}"

  Try it: in another terminal run \x1b[1mnpm run demo\x1b[0m, open the payment URL it prints and press Pay.
  Ctrl-C stops everything.
`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    step('stopping…');
    await stack.stop().catch((err: unknown) => console.error(err));
    if (devServer && devServer.exitCode === null) {
      const exited = new Promise((r) => devServer!.once('exit', r));
      devServer.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    }
    step('stopped');
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}

main().catch((err: unknown) => {
  console.error(`[start] ${(err as Error).message}`);
  process.exit(1);
});
