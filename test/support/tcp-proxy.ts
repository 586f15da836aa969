/** A TCP proxy the tests can break and heal, to cut one component off from another for real. */
import { type AddressInfo, type Server, type Socket, createConnection, createServer } from 'node:net';

/** A running proxy. */
export interface TcpProxy {
  address: string;
  /** Drops every open connection and refuses new ones until heal(). */
  breakLink(): void;
  heal(): void;
  close(): Promise<void>;
}

/** Starts a proxy on a free local port forwarding to `target` (host:port). */
export async function startTcpProxy(target: string): Promise<TcpProxy> {
  const [host, port] = target.split(':');
  const sockets = new Set<Socket>();
  let broken = false;
  const server: Server = createServer((inbound) => {
    if (broken) return inbound.destroy();
    const outbound = createConnection({ host, port: Number(port) });
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    inbound.pipe(outbound).pipe(inbound);
    inbound.on('close', () => outbound.destroy());
    outbound.on('close', () => inbound.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    breakLink() {
      broken = true;
      for (const s of sockets) s.destroy();
    },
    heal() {
      broken = false;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
