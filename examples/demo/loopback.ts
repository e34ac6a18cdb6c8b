/** The demo's servers listen on 127.0.0.1 only: nothing it starts is reachable from another machine. */
import http from 'node:http';
import net from 'node:net';

/** Listens on 127.0.0.1 (0: any free port); a port already taken is an error naming it. */
export function listen(server: http.Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE' ? new Error(`port ${port} on 127.0.0.1 is already in use`) : err),
    );
    server.listen(port, '127.0.0.1', () => resolve());
  });
}

export function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

/** A port free on 127.0.0.1 now (0 asks the system for one), or an error naming the port in use. */
export async function reservePort(port: number): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE' ? new Error(`port ${port} on 127.0.0.1 is already in use`) : err),
    );
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const chosen = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return chosen;
}
