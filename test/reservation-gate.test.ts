/**
 * ReservationGate (src/client/admission.ts): which buyers may run a Try while others are reserving the same units in
 * this process, and when its units come back.
 */
import { ReservationGate, TrySlots } from '../src/client/admission';

const units = (entries: [string, number][]) => new Map(entries);

test('a buyer may try while the units not yet being reserved cover its line', () => {
  const gate = new ReservationGate();
  const available = units([['a', 2]]);
  expect(gate.contested([{ sku: 'a', quantity: 1 }], available)).toBeUndefined();
  gate.claim([{ sku: 'a', quantity: 1 }], 'ord_1');
  expect(gate.contested([{ sku: 'a', quantity: 1 }], available)).toBeUndefined();
  gate.claim([{ sku: 'a', quantity: 1 }], 'ord_1');
  expect(gate.contested([{ sku: 'a', quantity: 1 }], available)).toEqual({ sku: 'a', quantity: 1 });
  // Another SKU is not affected.
  expect(gate.contested([{ sku: 'b', quantity: 3 }], units([['b', 3]]))).toBeUndefined();
});

test('a multi-line order is contested by any of its lines', () => {
  const gate = new ReservationGate();
  gate.claim([{ sku: 'b', quantity: 2 }], 'ord_2');
  const lines = [
    { sku: 'a', quantity: 1 },
    { sku: 'b', quantity: 2 },
  ];
  expect(
    gate.contested(
      lines,
      units([
        ['a', 5],
        ['b', 3],
      ]),
    ),
  ).toEqual({ sku: 'b', quantity: 2 });
  expect(
    gate.contested(
      lines,
      units([
        ['a', 5],
        ['b', 4],
      ]),
    ),
  ).toBeUndefined();
});

test('a release gives the units back once, however often it is called', () => {
  const gate = new ReservationGate();
  const release = gate.claim([{ sku: 'a', quantity: 1 }], 'ord_1');
  expect(gate.contested([{ sku: 'a', quantity: 1 }], units([['a', 1]]))).toEqual({ sku: 'a', quantity: 1 });
  release();
  expect(gate.contested([{ sku: 'a', quantity: 1 }], units([['a', 1]]))).toBeUndefined();
  // Released twice (the Try's own release, then the finally): the next buyer's claim is not taken off.
  gate.claim([{ sku: 'a', quantity: 1 }], 'ord_1');
  release();
  expect(gate.contested([{ sku: 'a', quantity: 1 }], units([['a', 1]]))).toEqual({ sku: 'a', quantity: 1 });
});

test('TrySlots runs at most its size at once, in arrival order, and frees a slot when a Try fails', async () => {
  const slots = new TrySlots(2);
  let running = 0;
  let most = 0;
  const order: number[] = [];
  const gates: (() => void)[] = [];
  const task = (i: number, fail = false) =>
    slots.run(async () => {
      running++;
      most = Math.max(most, running);
      order.push(i);
      await new Promise<void>((r) => gates.push(r));
      running--;
      if (fail) throw new Error(`try ${i} failed`);
      return i;
    });
  const results = [task(0, true), task(1), task(2), task(3)].map((p) => p.catch((e: Error) => e.message));
  await new Promise((r) => setImmediate(r));
  expect(order).toEqual([0, 1]);
  while (gates.length) {
    gates.shift()!();
    await new Promise((r) => setImmediate(r));
  }
  expect(await Promise.all(results)).toEqual(['try 0 failed', 1, 2, 3]);
  expect(order).toEqual([0, 1, 2, 3]);
  expect(most).toBe(2);
});

test("an order's own Try in flight is known, so a retry of it is not turned away by its own claim", () => {
  const gate = new ReservationGate();
  const release = gate.claim([{ sku: 'a', quantity: 1 }], 'ord_k1');
  expect(gate.claiming('ord_k1')).toBe(true);
  expect(gate.claiming('ord_k2')).toBe(false);
  release();
  release();
  expect(gate.claiming('ord_k1')).toBe(false);
});
