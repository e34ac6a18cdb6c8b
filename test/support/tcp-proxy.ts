/**
 * A loopback TCP proxy a test can cut, blackhole or slow down, to make a backing service vanish or lag without
 * touching the real server.
 */
import net from 'node:net';

export interface TcpProxy {
  port: number;
  /** Refuse new connections and reset open ones (a hard cut: both ends learn at once). */
  cut(): void;
  /**
   * A silent partition: open connections stay open but every byte in either direction is dropped, and new
   * connections are accepted and then never answered. Like a lost NAT entry, a connection blackholed once stays
   * dead after restore(); neither end is told (the upstream socket stays open until close()).
   */
  blackhole(): void;
  /** Forwards every byte, in both directions, this many milliseconds late (0: no delay). */
  delay(ms: number): void;
  /** Ends cut, blackhole and delay for new traffic; connections already blackholed stay dead. */
  restore(): void;
  /** Connections currently forwarding and connections blackholed (for assertions and fault figures). */
  counts(): { live: number; dead: number };
  close(): Promise<void>;
}

interface Link {
  client: net.Socket;
  upstream: net.Socket | null;
  dead: boolean;
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  let mode: 'open' | 'cut' | 'blackhole' = 'open';
  let delayMs = 0;
  const links = new Set<Link>();

  // Bytes are written in arrival order, each no earlier than delayMs after it arrived.
  const forwarder = (to: net.Socket, link: Link) => {
    const queue: { due: number; chunk: Buffer }[] = [];
    let timer: NodeJS.Timeout | null = null;
    const pump = () => {
      timer = null;
      while (queue.length > 0 && queue[0].due <= Date.now()) {
        const { chunk } = queue.shift()!;
        if (!link.dead && !to.destroyed) to.write(chunk);
      }
      if (queue.length > 0) timer = setTimeout(pump, queue[0].due - Date.now());
    };
    return (chunk: Buffer) => {
      if (link.dead) return;
      if (delayMs === 0 && queue.length === 0) {
        if (!to.destroyed) to.write(chunk);
        return;
      }
      const last = queue.length > 0 ? queue[queue.length - 1].due : 0;
      queue.push({ due: Math.max(Date.now() + delayMs, last), chunk });
      timer ??= setTimeout(pump, queue[0].due - Date.now());
    };
  };

  const server = net.createServer((client) => {
    if (mode === 'cut') return client.destroy();
    const link: Link = { client, upstream: null, dead: mode === 'blackhole' };
    links.add(link);
    const drop = () => {
      // A dead link tells neither end anything; a live one passes the close on.
      if (link.dead) return;
      client.destroy();
      link.upstream?.destroy();
      links.delete(link);
    };
    client.on('error', drop).on('close', drop);
    if (link.dead) {
      // Accepted, then silence: the connecting side sees an open socket that never answers.
      client.on('data', () => undefined);
      return;
    }
    const upstream = net.connect(targetPort, targetHost);
    link.upstream = upstream;
    client.on('data', forwarder(upstream, link));
    upstream.on('data', forwarder(client, link));
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const destroyAll = () => {
    for (const l of links) {
      l.client.destroy();
      l.upstream?.destroy();
    }
    links.clear();
  };
  return {
    port,
    cut() {
      mode = 'cut';
      destroyAll();
    },
    blackhole() {
      mode = 'blackhole';
      for (const l of links) l.dead = true;
    },
    delay(ms: number) {
      delayMs = ms;
    },
    restore() {
      mode = 'open';
      delayMs = 0;
    },
    counts() {
      let dead = 0;
      for (const l of links) if (l.dead) dead++;
      return { live: links.size - dead, dead };
    },
    close: () =>
      new Promise<void>((r) => {
        destroyAll();
        server.close(() => r());
      }),
  };
}
