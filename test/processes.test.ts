import { freePort } from '../tools/processes';

// The kernel picks a random free port for each bind to port 0: 1,000 picks in a row repeat one almost surely (two
// repeats in 300 were seen here), and a test system given the same port for its API and its sandbox fails to start.
test('freePort never hands out the same port twice in one process', async () => {
  const ports: number[] = [];
  for (let i = 0; i < 1000; i++) ports.push(await freePort());
  expect(new Set(ports).size).toBe(ports.length);
  expect(ports).not.toContain(3000);
  expect(ports).not.toContain(4000);
});
