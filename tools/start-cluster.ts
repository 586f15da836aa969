/**
 * `npm start -- --cluster [--workers N] [--apis N]`: the production topology on one machine. Builds (once) the
 * Temporal server, its SQL tool and the Web UI server from the Go module proxy, creates and migrates the PostgreSQL
 * databases when missing (TEMPORAL_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432), starts the server on
 * TEMPORAL_ADDRESS's port with the history shards of docker/temporal.env and the Web UI on TEMPORAL_UI_URL's port,
 * registers the namespace and search attributes, then runs the workers, the APIs (PORT, PORT+1, ...) and the
 * sandbox as processes of their own. Logs go to data/cluster/ (CLUSTER_DATA_DIR). TEMPORAL_DBNAME and
 * TEMPORAL_VISIBILITY_DBNAME name other PostgreSQL databases. Ctrl-C stops all of it.
 */
import { resolve } from 'node:path';
import { loadConfigOrExit } from '../src/config';
import { type Topology, startTopology } from './cluster-topology';
import { databaseNames, postgresFromEnv, readServerSettings } from './temporal-cluster';

const step = (message: string) => console.log(`\x1b[36m[start --cluster]\x1b[0m ${message}`);

function count(argv: string[], name: string, fallback: number): number {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const n = Number(argv[i + 1]);
  if (!Number.isInteger(n) || n < 1 || n > 16) throw new Error(`--${name} needs a whole number from 1 to 16`);
  return n;
}

export async function startCluster(argv: string[]): Promise<void> {
  const config = loadConfigOrExit();
  const workers = count(argv, 'workers', 2);
  const apis = count(argv, 'apis', 2);
  const uiPort = Number(new URL(config.temporalUiUrl).port || 8233);
  const dir = resolve(process.env.CLUSTER_DATA_DIR ?? 'data/cluster');
  const postgres = postgresFromEnv();
  // TEMPORAL_DBNAME / TEMPORAL_VISIBILITY_DBNAME: other PostgreSQL databases than docker/temporal.env's.
  const defaults = databaseNames({});
  const databases = {
    temporal: process.env.TEMPORAL_DBNAME ?? defaults.temporal,
    visibility: process.env.TEMPORAL_VISIBILITY_DBNAME ?? defaults.visibility,
  };
  const shards = readServerSettings().NUM_HISTORY_SHARDS;

  let stopping = false;
  const running: { topology?: Topology } = {};
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    step('stopping APIs, workers, the sandbox, the Web UI and the Temporal server…');
    await running.topology?.stop().catch((err: unknown) => console.error(err));
    step('stopped');
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());

  const topology = await startTopology({ config, workers, apis, uiPort, postgres, databases, dir, log: step });
  running.topology = topology;
  const pad = (s: string) => s.padEnd(18);
  console.log(`
  \x1b[1mpayflow is running on a self-hosted Temporal cluster\x1b[0m
${topology.apis.map((a, i) => `    ${pad(`Order API ${i + 1}`)}${a.url}   (POST /orders, GET /orders/:id, /healthz, /metrics)`).join('\n')}
    ${pad('Sandbox provider')}${topology.sandboxUrl}   (cashier pages at /pay/<orderId>)
    ${pad('Temporal Web UI')}${topology.cluster.uiUrl}/namespaces/${config.temporalNamespace}/workflows
    ${pad('Temporal server')}${config.temporalAddress}   ${shards} history shards, namespace "${config.temporalNamespace}", task queue "${config.taskQueue}"
    ${pad('PostgreSQL')}${postgres.host}:${postgres.port}   databases ${databases.temporal}, ${databases.visibility}
    ${pad('Workers')}${topology.workers.length} processes (pids ${topology.workers.map((w) => w.proc?.pid).join(', ')})
    ${pad('Logs')}${dir}/

  Try it: in another terminal run \x1b[1mnpm run demo\x1b[0m (it talks to the first API).
  Ctrl-C stops everything.
`);
  // A process that dies on its own is said at once (the others keep running).
  for (const child of [...topology.apis.map((a) => a.service), ...topology.workers, topology.sandbox]) {
    child.proc?.once('exit', (code, signal) => {
      if (!stopping) step(`\x1b[31m${child.name} exited (${code ?? signal}); see ${dir}/${child.name}.log\x1b[0m`);
    });
  }
  topology.cluster.server?.once('exit', (code, signal) => {
    if (!stopping)
      step(`\x1b[31mthe Temporal server exited (${code ?? signal}); see ${topology.cluster.serverLog}\x1b[0m`);
  });
}
