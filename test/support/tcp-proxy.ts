/** A TCP proxy the tests can break and heal, to cut one component off from another for real. */
import { type AddressInfo, type Server, type Socket, createConnection, createServer } from 'node:net';

/** How the link is broken: `refuse` closes the port (connection refused); `blackhole` accepts and forwards nothing. */
export type OutageKind = 'refuse' | 'blackhole';

/** A running proxy. */
export interface TcpProxy {
  address: string;
  /** Breaks the link until heal(); open connections are dropped (refuse) or silently stop forwarding (blackhole). */
  breakLink(kind?: OutageKind): Promise<void>;
  /** Restores the link; connections left hanging by a black hole are closed so that clients reconnect. */
  heal(): Promise<void>;
  close(): Promise<void>;
}

/** Starts a proxy on a free local port forwarding to `target` (host:port). */
export async function startTcpProxy(target: string): Promise<TcpProxy> {
  const [host, port] = target.split(':');
  const sockets = new Set<Socket>();
  let outage: OutageKind | undefined;
  const track = (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  };
  const server: Server = createServer((inbound) => {
    track(inbound);
    // A black hole: the connection is accepted and whatever is sent disappears; nothing ever answers.
    if (outage === 'blackhole') return void inbound.resume();
    const outbound = createConnection({ host, port: Number(port) });
    track(outbound);
    inbound.pipe(outbound).pipe(inbound);
    inbound.on('close', () => outbound.destroy());
    outbound.on('close', () => inbound.destroy());
  });
  const listen = (p: number) =>
    new Promise<void>((resolve, reject) => server.once('error', reject).listen(p, '127.0.0.1', () => resolve()));
  const stopListening = () => new Promise<void>((r) => server.close(() => r()));
  await listen(0);
  const listenPort = (server.address() as AddressInfo).port;
  return {
    address: `127.0.0.1:${listenPort}`,
    async breakLink(kind: OutageKind = 'refuse') {
      outage = kind;
      if (kind === 'refuse') {
        for (const s of sockets) s.destroy();
        await stopListening();
        return;
      }
      // Open connections stay open but carry nothing either way, like a partition where packets are dropped.
      for (const s of sockets) {
        s.unpipe();
        s.resume();
      }
    },
    async heal() {
      const was = outage;
      outage = undefined;
      if (was === 'refuse') await listen(listenPort);
      if (was === 'blackhole') for (const s of sockets) s.destroy();
    },
    async close() {
      for (const s of sockets) s.destroy();
      if (server.listening) await stopListening();
    },
  };
}
