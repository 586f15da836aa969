/**
 * The production image holds what `npm run api`, `npm run worker`, `npm run sandbox` (and the ops commands the
 * image runs: migrations, namespace setup, reconcile, invariants) need, and not the development tools: tools/ stays
 * out of the image, and lint keeps src/ from importing it (eslint.config.mjs).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(__dirname, '..');
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> })
  .scripts;

test('the image copies src and nothing of the development tools or the tests', () => {
  const copies = dockerfile.split('\n').filter((l) => /^COPY\s/.test(l));
  expect(copies.some((l) => /\bsrc\b/.test(l))).toBe(true);
  for (const line of copies)
    expect({ line, dev: /\b(tools|test|\.)\s/.test(line.replace(/^COPY\s+/, '') + ' ') }).toEqual({ line, dev: false });
});

test('the commands the image runs live in src; the development commands in tools', () => {
  for (const name of ['api', 'worker', 'sandbox', 'migrate', 'reconcile', 'invariants'])
    expect({ name, script: scripts[name] }).toEqual({ name, script: expect.stringMatching(/^tsx src\//) });
  for (const name of ['start', 'bench', 'soak', 'demo', 'histories:capture'])
    expect({ name, script: scripts[name] }).toEqual({ name, script: expect.stringMatching(/^tsx tools\//) });
  const compose = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');
  // Comments may name a tool; no command the services run does.
  const commands = compose.split('\n').filter((l) => !/^\s*#/.test(l));
  expect(commands.filter((l) => /tools\//.test(l))).toEqual([]);
});
