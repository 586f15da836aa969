/**
 * docker-compose.yml validates as `docker compose config` would validate it (compose-go, the loader Docker
 * Compose v2 uses; built from tools/compose-config through the Go module proxy, cached outside the clone),
 * and has the shape the README promises: MySQL 8, Temporal on PostgreSQL, the Web UI, a worker that scales with
 * `--scale worker=N` (no fixed name, no published port), the API. Its Temporal is the one the local cluster runs and
 * test/cluster.test.ts tests: same versions, settings, dynamic config, PostgreSQL major and namespace setup.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { PROVIDER_ENV } from '../src/providers/config';
import {
  DYNAMIC_CONFIG_FILE,
  TEMPORAL_SERVER_VERSION,
  TEMPORAL_UI_VERSION,
  postgresFromEnv,
  readServerSettings,
  serverEnvironment,
} from '../tools/temporal-cluster';

const ROOT = resolve(__dirname, '..');
const SOURCE = join(ROOT, 'tools', 'compose-config');

/** Builds the checker once per source version (about 20 s the first time on a new machine). */
function checker(): string {
  const hash = createHash('sha256');
  for (const f of ['main.go', 'go.mod', 'go.sum']) hash.update(readFileSync(join(SOURCE, f)));
  const dir = join(
    process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'),
    'payflow',
    `compose-config-${hash.digest('hex').slice(0, 12)}`,
  );
  const binary = join(dir, 'compose-config');
  if (!existsSync(binary)) {
    mkdirSync(dir, { recursive: true });
    process.stdout.write(`[compose] building tools/compose-config into ${dir}\n`);
    execFileSync('go', ['build', '-o', binary, '.'], { cwd: SOURCE, stdio: 'inherit' });
  }
  return binary;
}

interface Loaded {
  name: string;
  services: {
    name: string;
    image?: string;
    environment?: Record<string, string>;
    containerName?: string;
    ports?: string[];
    dependsOn?: string[];
    volumes?: string[];
    command?: string[];
    restart?: string;
    stopGracePeriod?: string;
  }[];
}

/** What a production user sets: a real admin token, the MySQL passwords and one provider (no profile). */
const PRODUCTION_ENV = {
  ADMIN_TOKEN: 'a'.repeat(64),
  MYSQL_PASSWORD: 'c'.repeat(32),
  MYSQL_ROOT_PASSWORD: 'd'.repeat(32),
  STRIPE_SECRET_KEY: 'sk_live_payflowCompose0123456789',
  STRIPE_WEBHOOK_SECRET: 'whsec_payflowCompose0123456789',
  STRIPE_PAYMENT_PAGE_URL: 'https://shop.example.com/pay',
};

function load(
  file: string,
  env: Record<string, string> = PRODUCTION_ENV,
): { ok: true; project: Loaded } | { ok: false; error: string } {
  try {
    const childEnv = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env };
    return {
      ok: true,
      project: JSON.parse(
        execFileSync(checker(), [file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: childEnv }),
      ) as Loaded,
    };
  } catch (err) {
    return { ok: false, error: String((err as { stderr?: string }).stderr ?? err) };
  }
}

/** The dev profile (the sandbox service), as staging runs it. */
const loadDev = () =>
  load(join(ROOT, 'docker-compose.yml'), {
    ...PRODUCTION_ENV,
    COMPOSE_PROFILES: 'dev',
    SANDBOX_ENABLED: 'true',
    SANDBOX_SECRET: 'b'.repeat(64),
  });

test('docker-compose.yml validates and runs MySQL 8, Temporal on PostgreSQL, the UI, a scalable worker and the API', () => {
  const loaded = load(join(ROOT, 'docker-compose.yml'));
  if (!loaded.ok) throw new Error(loaded.error);
  const services = new Map(loaded.project.services.map((s) => [s.name, s]));
  // Production by default: no sandbox service.
  expect([...services.keys()].sort()).toEqual([
    'api',
    'migrate',
    'mysql',
    'postgres',
    'temporal',
    'temporal-ui',
    'worker',
  ]);
  // --scale worker=N needs no fixed container name and no published port on the worker.
  expect(services.get('worker')).toMatchObject({ name: 'worker' });
  expect(services.get('worker')!.containerName).toBeUndefined();
  expect(services.get('worker')!.ports).toBeUndefined();
  expect(services.get('worker')!.dependsOn).toEqual(['migrate']);
  // Only the API is published beyond the host: Temporal's frontend and Web UI have no authorization here, and whoever
  // reaches them can signal an order's workflow a payment that was never made.
  expect(services.get('temporal-ui')!.ports).toEqual(['127.0.0.1:8233:8080']);
  expect(services.get('temporal')!.ports).toEqual(['127.0.0.1:7233:7233']);
  for (const s of services.values())
    for (const port of s.ports ?? []) if (s.name !== 'api') expect(`${s.name} ${port}`).toMatch(/ 127\.0\.0\.1:/);
  expect(services.get('api')!.ports).toEqual(['3000:3000']);
  expect(services.get('mysql')!.image).toMatch(/^mysql:8/);
  expect(services.get('temporal')!.environment).toMatchObject({ DB: 'postgres12', POSTGRES_SEEDS: 'postgres' });
  // The worker and the API share one environment block (x-app-env), pointing at the compose services.
  expect(services.get('worker')!.environment).toMatchObject({
    TEMPORAL_ADDRESS: 'temporal:7233',
    DATABASE_URL: expect.stringContaining('@mysql:3306/'),
  });
  for (const app of ['api', 'worker', 'migrate']) {
    expect(services.get(app)!.environment).toMatchObject({
      NODE_ENV: 'production',
      ADMIN_TOKEN: PRODUCTION_ENV.ADMIN_TOKEN,
      SANDBOX_ENABLED: 'false',
      PROVIDER_TEST_MODE: 'false',
      DATABASE_URL: `mysql://payflow:${PRODUCTION_ENV.MYSQL_PASSWORD}@mysql:3306/payments`,
      // The API's /metrics on a port that is not published (the published 3000 answers 404 for it).
      METRICS_PORT: '9466',
      // What points are worth (the worker prices orders with it); settable, CNY by default.
      POINTS_CURRENCY: 'CNY',
    });
  }
  expect(services.get('mysql')!.environment).toMatchObject({
    MYSQL_PASSWORD: PRODUCTION_ENV.MYSQL_PASSWORD,
    MYSQL_ROOT_PASSWORD: PRODUCTION_ENV.MYSQL_ROOT_PASSWORD,
  });
}, 300_000);

test('the API, the worker and the sandbox come back after a crash, and the API and worker get time to finish what is in flight on a stop', () => {
  // With Compose's default ("no"), a worker that exited stayed down: orders were neither set up, expired nor settled.
  const loaded = load(join(ROOT, 'docker-compose.yml'));
  if (!loaded.ok) throw new Error(loaded.error);
  const dev = loadDev();
  if (!dev.ok) throw new Error(dev.error);
  const service = (p: Loaded, name: string) => p.services.find((s) => s.name === name)!;
  for (const name of ['api', 'worker']) {
    expect(service(loaded.project, name).restart).toBe('unless-stopped');
    // Docker's default is 10 s; an order start may take 30 s and a provider call 15 s.
    expect(service(loaded.project, name).stopGracePeriod).toBe('45s');
  }
  expect(service(dev.project, 'sandbox').restart).toBe('unless-stopped');
  // The one-shot migration is not restarted.
  expect(service(loaded.project, 'migrate').restart).toBe('no');
});

test('the sandbox runs only in the dev profile, and nothing starts without an ADMIN_TOKEN', () => {
  const dev = loadDev();
  if (!dev.ok) throw new Error(dev.error);
  const sandbox = dev.project.services.find((s) => s.name === 'sandbox');
  expect(sandbox?.environment).toMatchObject({ NODE_ENV: 'production', SANDBOX_ENABLED: 'true' });
  expect(sandbox?.ports).toEqual(['4000:4000']);
  const missing = load(join(ROOT, 'docker-compose.yml'), {});
  expect(missing.ok).toBe(false);
  expect(missing.ok ? '' : missing.error).toMatch(/ADMIN_TOKEN/);
}, 300_000);

test('no default database password: nothing starts without MYSQL_PASSWORD and MYSQL_ROOT_PASSWORD', () => {
  for (const variable of ['MYSQL_PASSWORD', 'MYSQL_ROOT_PASSWORD']) {
    const env: Record<string, string> = { ...PRODUCTION_ENV };
    delete env[variable];
    const loaded = load(join(ROOT, 'docker-compose.yml'), env);
    expect(loaded.ok).toBe(false);
    expect(loaded.ok ? '' : loaded.error).toMatch(new RegExp(variable));
  }
}, 300_000);

test("every provider variable the service reads reaches the API's and the worker's environment", () => {
  const all = Object.values(PROVIDER_ENV).flat();
  const env = Object.fromEntries(all.map((v) => [v, `value-of-${v}`]));
  const loaded = load(join(ROOT, 'docker-compose.yml'), { ...PRODUCTION_ENV, ...env, PROVIDER_TEST_MODE: 'true' });
  if (!loaded.ok) throw new Error(loaded.error);
  for (const app of ['api', 'worker']) {
    const environment = loaded.project.services.find((s) => s.name === app)!.environment!;
    expect(environment).toMatchObject({ ...env, PROVIDER_TEST_MODE: 'true' });
  }
  // Unset, they are empty (a provider with no variable set is not offered).
  const bare = load(join(ROOT, 'docker-compose.yml'), { ...PRODUCTION_ENV, STRIPE_SECRET_KEY: '' });
  if (!bare.ok) throw new Error(bare.error);
  expect(bare.project.services.find((s) => s.name === 'api')!.environment).toMatchObject({
    ALIPAY_APP_ID: '',
    WECHAT_MCH_ID: '',
    STRIPE_SECRET_KEY: '',
  });
}, 300_000);

test('the checker refuses a broken file, so the test above can fail', () => {
  const text = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');
  // The worker waits for a service that does not exist.
  const broken = text.replace(/(\n {2}worker:\n(?: {4}.*\n)*? {6})migrate:/, '$1nowhere:');
  expect(broken).not.toBe(text);
  const dir = mkdtempSync(join(tmpdir(), 'compose-'));
  const file = join(dir, 'docker-compose.yml');
  writeFileSync(file, broken);
  const loaded = load(file);
  expect(loaded.ok).toBe(false);
  expect(loaded.ok ? '' : loaded.error).toMatch(/nowhere/);
}, 300_000);

/** The major version of the PostgreSQL the local cluster runs on (and test/cluster.test.ts tested). */
function localPostgresMajor(): number {
  const pg = postgresFromEnv();
  const result = spawnSync(
    'psql',
    ['-h', pg.host, '-p', String(pg.port), '-U', pg.user, '-d', 'postgres', '-Atc', 'SHOW server_version_num'],
    { encoding: 'utf8' },
  );
  if (result.status !== 0)
    throw new Error(`psql could not ask the local PostgreSQL its version: ${result.stderr || result.error}`);
  return Math.floor(Number(result.stdout.trim()) / 10000);
}

/** Every way the compose file's Temporal differs from the local cluster's (tools/temporal-cluster.ts); [] = same. */
function clusterDifferences(project: Loaded, postgresMajor: number): string[] {
  const diffs: string[] = [];
  const service = (name: string) => project.services.find((s) => s.name === name);
  const temporal = service('temporal');
  const ui = service('temporal-ui');
  const postgres = service('postgres');
  if (!temporal || !ui || !postgres) return ['the temporal, temporal-ui or postgres service is missing'];
  const env = temporal.environment ?? {};
  if (temporal.image !== `temporalio/auto-setup:${TEMPORAL_SERVER_VERSION}`)
    diffs.push(`server image ${temporal.image}, the local cluster runs ${TEMPORAL_SERVER_VERSION}`);
  if (ui.image !== `temporalio/ui:${TEMPORAL_UI_VERSION}`)
    diffs.push(`UI image ${ui.image}, the local cluster runs ${TEMPORAL_UI_VERSION}`);
  // The same settings on both sides: docker/temporal.env is compose's env_file and the local server's environment.
  const local = serverEnvironment({
    frontendPort: 7233,
    namespace: 'default',
    postgres: postgresFromEnv(),
    logDir: tmpdir(),
  });
  for (const [key, value] of Object.entries(readServerSettings())) {
    if (env[key] !== value) diffs.push(`compose sets ${key}=${env[key]}, docker/temporal.env says ${value}`);
    if (local[key] !== value)
      diffs.push(`the local cluster sets ${key}=${local[key]}, docker/temporal.env says ${value}`);
  }
  // The same dynamic config file: what compose mounts where DYNAMIC_CONFIG_FILE_PATH points is what the local server
  // reads.
  const target = isAbsolute(env.DYNAMIC_CONFIG_FILE_PATH ?? '')
    ? env.DYNAMIC_CONFIG_FILE_PATH
    : `/etc/temporal/${env.DYNAMIC_CONFIG_FILE_PATH}`;
  const mount = (temporal.volumes ?? []).find((v) => v.endsWith(`:${target}`));
  if (
    !mount ||
    resolve(mount.slice(0, mount.lastIndexOf(':'))) !== DYNAMIC_CONFIG_FILE ||
    local.DYNAMIC_CONFIG_FILE_PATH !== DYNAMIC_CONFIG_FILE
  ) {
    diffs.push(
      `dynamic config: compose mounts ${mount ?? 'nothing'} for ${target}, the local server reads ${local.DYNAMIC_CONFIG_FILE_PATH}`,
    );
  }
  if (!new RegExp(`^postgres:${postgresMajor}(\\.|-|$)`).test(postgres.image ?? ''))
    diffs.push(`compose runs ${postgres.image}, the local cluster PostgreSQL ${postgresMajor}`);
  // The namespace and its search attributes are set up by our tool, not by auto-setup (whose sample attributes would
  // take a Bool slot).
  if (env.SKIP_DEFAULT_NAMESPACE_CREATION !== 'true' || env.SKIP_ADD_CUSTOM_SEARCH_ATTRIBUTES !== 'true')
    diffs.push('auto-setup creates a namespace or sample search attributes of its own');
  if (!(service('migrate')?.command ?? []).join(' ').includes('src/ops/register-search-attributes.ts'))
    diffs.push('the migrate service does not run src/ops/register-search-attributes.ts');
  const namespace = service('api')?.environment?.TEMPORAL_NAMESPACE;
  if (ui.environment?.TEMPORAL_DEFAULT_NAMESPACE !== namespace)
    diffs.push(`the UI opens namespace ${ui.environment?.TEMPORAL_DEFAULT_NAMESPACE}, the app uses ${namespace}`);
  return diffs;
}

test('the compose file runs the Temporal the local cluster runs: versions, docker/temporal.env (shards, PostgreSQL), dynamic config, namespace setup', () => {
  const loaded = load(join(ROOT, 'docker-compose.yml'));
  if (!loaded.ok) throw new Error(loaded.error);
  const major = localPostgresMajor();
  expect(clusterDifferences(loaded.project, major)).toEqual([]);
  expect(
    Number(loaded.project.services.find((s) => s.name === 'temporal')!.environment!.NUM_HISTORY_SHARDS),
  ).toBeGreaterThan(1);

  // The comparison sees a difference when there is one.
  const changed = (edit: (p: Loaded) => void) => {
    const copy = JSON.parse(JSON.stringify(loaded.project)) as Loaded;
    edit(copy);
    return clusterDifferences(copy, major);
  };
  const temporal = (p: Loaded) => p.services.find((s) => s.name === 'temporal')!;
  expect(changed((p) => (temporal(p).environment!.NUM_HISTORY_SHARDS = '8'))).toEqual([
    expect.stringContaining('NUM_HISTORY_SHARDS=8'),
  ]);
  expect(changed((p) => (temporal(p).image = 'temporalio/auto-setup:1.28.0'))).toEqual([
    expect.stringContaining('server image'),
  ]);
  expect(changed((p) => (temporal(p).volumes = [])).length).toBe(1);
  expect(changed((p) => (p.services.find((s) => s.name === 'postgres')!.image = 'postgres:16'))).toEqual([
    expect.stringContaining('postgres:16'),
  ]);
}, 300_000);
