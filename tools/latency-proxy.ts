/**
 * `tsx tools/latency-proxy.ts <listenPort> <target host:port> <one-way delay ms>`: a TCP proxy that delays
 * every chunk in each direction, in order, to stand in for the network between an application and a database
 * on another machine (the hot-SKU benchmark's --db-latency-ms). Runs as its own process so that its work does
 * not share the load generator's event loop. Prints "listening" when ready.
 */
import { createConnection, createServer, type Socket } from 'node:net';

const [listenPort, target, delay] = process.argv.slice(2);
const [host, port] = (target ?? '').split(':');
const delayMs = Number(delay);
if (!listenPort || !host || !port || !Number.isFinite(delayMs) || delayMs < 0) {
  console.error('usage: tsx tools/latency-proxy.ts <listenPort> <host:port> <one-way delay ms>');
  process.exit(2);
}

/** Forwards from one socket to the other, each chunk `delayMs` after it arrived, never reordered. */
function delayed(from: Socket, to: Socket): void {
  from.on('data', (chunk) => {
    setTimeout(() => {
      if (!to.destroyed) to.write(chunk);
    }, delayMs);
  });
  from.on('close', () => setTimeout(() => to.destroy(), delayMs));
  from.on('error', () => undefined);
}

const server = createServer((inbound) => {
  inbound.setNoDelay(true);
  const outbound = createConnection({ host, port: Number(port) });
  outbound.setNoDelay(true);
  delayed(inbound, outbound);
  delayed(outbound, inbound);
});
server.listen(Number(listenPort), '127.0.0.1', () => console.log('listening'));
process.on('SIGTERM', () => process.exit(0));
