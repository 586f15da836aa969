/**
 * docker-compose.yml validates as `docker compose config` would validate it (compose-go, the loader Docker
 * Compose v2 uses; built from tools/compose-config through the Go module proxy, cached outside the clone),
 * and has the shape the README promises: MySQL 8, Temporal on MySQL, the Web UI, a worker that scales with
 * `--scale worker=N` (no fixed name, no published port), the API.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(__dirname, '..');
const SOURCE = join(ROOT, 'tools', 'compose-config');

/** Builds the checker once per source version (about 20 s the first time on a new machine). */
function checker(): string {
  const hash = createHash('sha256');
  for (const f of ['main.go', 'go.mod', 'go.sum']) hash.update(readFileSync(join(SOURCE, f)));
  const dir = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'payflow', `compose-config-${hash.digest('hex').slice(0, 12)}`);
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
  services: { name: string; image?: string; environment?: Record<string, string>; containerName?: string; ports?: string[]; dependsOn?: string[] }[];
}

/** What a production user sets: a real admin token and nothing else (no profile). */
const PRODUCTION_ENV = { ADMIN_TOKEN: 'a'.repeat(64) };

function load(file: string, env: Record<string, string> = PRODUCTION_ENV): { ok: true; project: Loaded } | { ok: false; error: string } {
  try {
    const childEnv = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env };
    return { ok: true, project: JSON.parse(execFileSync(checker(), [file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: childEnv })) as Loaded };
  } catch (err) {
    return { ok: false, error: String((err as { stderr?: string }).stderr ?? err) };
  }
}

test('docker-compose.yml validates and runs MySQL 8, Temporal on MySQL, the UI, a scalable worker and the API', () => {
  const loaded = load(join(ROOT, 'docker-compose.yml'));
  if (!loaded.ok) throw new Error(loaded.error);
  const services = new Map(loaded.project.services.map((s) => [s.name, s]));
  // Production by default: no sandbox service.
  expect([...services.keys()].sort()).toEqual(['api', 'migrate', 'mysql', 'temporal', 'temporal-ui', 'worker']);
  // --scale worker=N needs no fixed container name and no published port on the worker.
  expect(services.get('worker')).toMatchObject({ name: 'worker' });
  expect(services.get('worker')!.containerName).toBeUndefined();
  expect(services.get('worker')!.ports).toBeUndefined();
  expect(services.get('worker')!.dependsOn).toEqual(['migrate']);
  expect(services.get('temporal-ui')!.ports).toEqual(['8233:8080']);
  expect(services.get('mysql')!.image).toMatch(/^mysql:8/);
  expect(services.get('temporal')!.environment).toMatchObject({ DB: 'mysql8', MYSQL_SEEDS: 'mysql' });
  // The worker and the API share one environment block (x-app-env), pointing at the compose services.
  expect(services.get('worker')!.environment).toMatchObject({ TEMPORAL_ADDRESS: 'temporal:7233', DATABASE_URL: expect.stringContaining('@mysql:3306/') });
  for (const app of ['api', 'worker', 'migrate']) {
    expect(services.get(app)!.environment).toMatchObject({ NODE_ENV: 'production', ADMIN_TOKEN: PRODUCTION_ENV.ADMIN_TOKEN, SANDBOX_ENABLED: 'false' });
  }
}, 300_000);

test('the sandbox runs only in the dev profile, and nothing starts without an ADMIN_TOKEN', () => {
  const dev = load(join(ROOT, 'docker-compose.yml'), { ...PRODUCTION_ENV, COMPOSE_PROFILES: 'dev', SANDBOX_ENABLED: 'true', SANDBOX_SECRET: 'b'.repeat(64) });
  if (!dev.ok) throw new Error(dev.error);
  const sandbox = dev.project.services.find((s) => s.name === 'sandbox');
  expect(sandbox?.environment).toMatchObject({ NODE_ENV: 'production', SANDBOX_ENABLED: 'true' });
  expect(sandbox?.ports).toEqual(['4000:4000']);
  const missing = load(join(ROOT, 'docker-compose.yml'), {});
  expect(missing.ok).toBe(false);
  expect(missing.ok ? '' : missing.error).toMatch(/ADMIN_TOKEN/);
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
