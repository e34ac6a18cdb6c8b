/**
 * AWS test identities, made at run time (never a key in the repository), and a server that records what
 * reaches it: where a followed redirect, a tenant's own endpoint or the instance-metadata service would land.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A made-up access key pair of the shape AWS uses, for the emulators. */
export function randomAwsCredentials(): { accessKeyId: string; secretAccessKey: string } {
  return {
    accessKeyId: 'AKIA' + randomBytes(8).toString('hex').toUpperCase(),
    secretAccessKey: randomBytes(30).toString('base64'),
  };
}

export interface Trap {
  url: string;
  port: number;
  received: { method: string; url: string; headers: http.IncomingHttpHeaders }[];
  close(): Promise<void>;
}

/** Records every request and answers `{}` with `contentType`. */
export async function startTrap(contentType: string): Promise<Trap> {
  const received: Trap['received'] = [];
  const server = http.createServer((req, res) => {
    received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    res.writeHead(200, { 'content-type': contentType });
    res.end('{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    received,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
