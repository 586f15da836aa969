/** The live-stage cache behind GET /orders/:id: single flight per order, reuse for ttl, bounded queries in flight. */
import { LiveStatusCache } from '../src/client/live-status';

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

test('concurrent reads of one order share one query, and the answer is reused until the ttl passes', async () => {
  let now = 0;
  const calls: string[] = [];
  const answer = deferred<string>();
  const cache = new LiveStatusCache<string>((key) => (calls.push(key), answer.promise), {
    ttlMs: 1000,
    maxInFlight: 10,
    now: () => now,
  });
  const reads = [cache.get('a'), cache.get('a'), cache.get('a')];
  expect(cache.inFlight).toBe(1);
  answer.resolve('stage-1');
  expect(await Promise.all(reads)).toEqual(['stage-1', 'stage-1', 'stage-1']);
  now = 999;
  expect(await cache.get('a')).toBe('stage-1');
  expect(calls).toEqual(['a']);
  now = 1000;
  const again = cache.get('a');
  expect(calls).toEqual(['a', 'a']);
  await again;
});

test('past maxInFlight a read gets no live stage instead of another query; a failed query reads as none', async () => {
  const gates = new Map<string, ReturnType<typeof deferred<string>>>();
  const cache = new LiveStatusCache<string>(
    (key) => {
      const d = deferred<string>();
      gates.set(key, d);
      return key === 'bad' ? Promise.reject(new Error('query timed out')) : d.promise;
    },
    { ttlMs: 1000, maxInFlight: 2 },
  );
  const a = cache.get('a');
  const b = cache.get('b');
  expect(await cache.get('c')).toBeUndefined();
  expect(gates.has('c')).toBe(false);
  gates.get('a')!.resolve('A');
  gates.get('b')!.resolve('B');
  expect([await a, await b]).toEqual(['A', 'B']);
  expect(await cache.get('bad')).toBeUndefined();
  expect(cache.inFlight).toBe(0);
});

test('the cache keeps at most maxEntries answers, dropping the oldest', async () => {
  const calls: string[] = [];
  const cache = new LiveStatusCache<string>(async (key) => (calls.push(key), key.toUpperCase()), {
    ttlMs: 60_000,
    maxInFlight: 5,
    maxEntries: 2,
  });
  await cache.get('a');
  await cache.get('b');
  await cache.get('c');
  await cache.get('a');
  expect(calls).toEqual(['a', 'b', 'c', 'a']);
});

test('past maxPerSecond a read gets the last answer, however old, or none; the budget comes back the next second', async () => {
  let now = 10_000;
  const calls: string[] = [];
  const cache = new LiveStatusCache<string>(async (key) => (calls.push(key), `${key}@${now}`), {
    ttlMs: 100,
    maxInFlight: 10,
    maxPerSecond: 2,
    now: () => now,
  });
  expect(await cache.get('a')).toBe('a@10000');
  expect(await cache.get('b')).toBe('b@10000');
  now = 10_500; // both answers expired, but this second's two queries are spent
  expect(await cache.get('a')).toBe('a@10000');
  expect(await cache.get('c')).toBeUndefined();
  expect(calls).toEqual(['a', 'b']);
  now = 11_000;
  expect(await cache.get('a')).toBe('a@11000');
  expect(calls).toEqual(['a', 'b', 'a']);
});
