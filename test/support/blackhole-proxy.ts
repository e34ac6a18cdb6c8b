/** A loopback TCP proxy that can stop passing bytes while keeping connections open (a silent partition). */
import net from 'node:net';

export interface BlackholeProxy {
  port: number;
  /** Keep every connection open but drop whatever is sent either way. */
  blackhole(): void;
  /**
   * Pass bytes again. Connections that lost bytes are reset, so their clients reconnect with a clean
   * protocol state instead of matching new replies to dropped requests.
   */
  restore(): void;
  close(): Promise<void>;
}

export async function startBlackholeProxy(targetHost: string, targetPort: number): Promise<BlackholeProxy> {
  let passing = true;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, targetHost);
    sockets.add(client).add(upstream);
    client.on('data', (chunk: Buffer) => {
      if (passing) upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (passing) client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    blackhole() {
      passing = false;
    },
    restore() {
      if (!passing) for (const s of sockets) s.destroy();
      passing = true;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
