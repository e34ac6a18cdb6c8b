import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CustosException } from '../../../src/common/errors.js';
import { OutboundHttpClient } from '../../../src/common/outbound-http.js';

interface TestServer {
  port: number;
  origin: string;
  close(): Promise<void>;
}

async function startServer(handler: http.RequestListener): Promise<TestServer> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function failure(promise: Promise<unknown>): Promise<CustosException> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CustosException);
  return error as CustosException;
}

const MiB = 1024 * 1024;

describe('OutboundHttpClient limits', () => {
  let server: TestServer;
  let client: OutboundHttpClient;

  beforeAll(async () => {
    server = await startServer((req, res) => {
      switch (req.url ?? '/') {
        case '/hang':
          return; // never answers
        case '/hang-body':
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('partial');
          return; // never ends
        case '/stream-2mib': {
          // Chunked, no Content-Length: only counting can catch it.
          const chunk = Buffer.alloc(64 * 1024, 0x61);
          let sent = 0;
          const push = (): void => {
            while (sent < 2 * MiB) {
              sent += chunk.length;
              if (!res.write(chunk)) {
                res.once('drain', push);
                return;
              }
            }
            res.end();
          };
          push();
          return;
        }
        case '/announce-2mib':
          // Announces too much, then sends nothing: must fail on the header, not wait for the timeout.
          res.writeHead(200, { 'content-length': String(2 * MiB) });
          if (req.method === 'HEAD') res.end();
          else res.flushHeaders();
          return;
        case '/exactly-1kib':
          res.end(Buffer.alloc(1024, 0x62));
          return;
        default:
          res.end('ok');
      }
    });
    client = new OutboundHttpClient({ allowHosts: ['127.0.0.1'] });
  });
  afterAll(async () => {
    client.destroy();
    await server.close();
  });

  it('times out on a server that never answers', async () => {
    const error = await failure(client.request(`${server.origin}/hang`, { timeoutMs: 200 }));
    expect(error.code).toBe('outbound_request_failed');
    expect(error.details).toEqual({ reason: 'timeout' });
  });

  it('times out on a body that never ends, using the client default', async () => {
    const quick = new OutboundHttpClient({ allowHosts: ['127.0.0.1'], timeoutMs: 200 });
    try {
      const error = await failure(quick.request(`${server.origin}/hang-body`));
      expect(error.details).toEqual({ reason: 'timeout' });
    } finally {
      quick.destroy();
    }
  });

  it('times out on a resolver that never answers', async () => {
    const stuck = new OutboundHttpClient({ timeoutMs: 200, resolve: () => new Promise<string[]>(() => {}) });
    expect((await failure(stuck.request('https://slow-dns.example/'))).details).toEqual({
      reason: 'timeout',
    });
    expect((await failure(stuck.assertUrlAllowed('https://slow-dns.example/'))).details).toEqual({
      reason: 'timeout',
    });
  });

  it('aborts a 2 MiB streamed response at the default 1 MiB limit', async () => {
    const error = await failure(client.request(`${server.origin}/stream-2mib`));
    expect(error.code).toBe('outbound_request_failed');
    expect(error.details).toEqual({ reason: 'response_too_large' });
  });

  it('refuses a response whose Content-Length announces more than the limit', async () => {
    const error = await failure(client.request(`${server.origin}/announce-2mib`, { timeoutMs: 20_000 }));
    expect(error.details).toEqual({ reason: 'response_too_large' });
  });

  it('accepts a HEAD response announcing a large body it does not send', async () => {
    const res = await client.request(`${server.origin}/announce-2mib`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.body).toHaveLength(0);
  });

  it('applies a per-request and a per-client size limit, inclusive', async () => {
    expect(
      (await client.request(`${server.origin}/exactly-1kib`, { maxResponseBytes: 1024 })).body,
    ).toHaveLength(1024);
    const error = await failure(client.request(`${server.origin}/exactly-1kib`, { maxResponseBytes: 1023 }));
    expect(error.details).toEqual({ reason: 'response_too_large' });
    const small = new OutboundHttpClient({ allowHosts: ['127.0.0.1'], maxResponseBytes: 100 });
    try {
      expect((await failure(small.request(`${server.origin}/exactly-1kib`))).details).toEqual({
        reason: 'response_too_large',
      });
    } finally {
      small.destroy();
    }
  });

  it('keeps working after a refused and an aborted response', async () => {
    expect((await client.request(`${server.origin}/`)).text()).toBe('ok');
  });

  it('reports a refused connection as connection_failed', async () => {
    const closed = await startServer(() => {});
    await closed.close();
    const error = await failure(client.request(`${closed.origin}/`));
    expect(error.code).toBe('outbound_request_failed');
    expect(error.details).toEqual({ reason: 'connection_failed' });
  });

  it('reports a failed TLS handshake as connection_failed', async () => {
    const error = await failure(client.request(`https://127.0.0.1:${server.port}/`));
    expect(error.details).toEqual({ reason: 'connection_failed' });
  });

  it('reports a header value that cannot be sent as invalid_request, without the value', async () => {
    const error = await failure(
      client.request(`${server.origin}/`, { headers: { authorization: 'Bearer SECRET\r\nx-injected: 1' } }),
    );
    expect(error.details).toEqual({ reason: 'invalid_request' });
    expect(error.message).not.toContain('SECRET');
  });
});

describe('OutboundHttpClient error messages', () => {
  let server: TestServer;
  let closedOrigin: string;

  beforeAll(async () => {
    server = await startServer((req) => {
      req.resume(); // never answers
    });
    const closed = await startServer(() => {});
    closedOrigin = closed.origin;
    await closed.close();
  });
  afterAll(async () => {
    await server.close();
  });

  const cases: [string, () => Promise<unknown>][] = [
    ['address_refused', () => new OutboundHttpClient().request('https://10.0.0.1/cb?token=SECRET')],
    ['scheme_not_allowed', () => new OutboundHttpClient().request('http://example.com/p?token=SECRET')],
    ['credentials_in_url', () => new OutboundHttpClient().request('https://user:SECRET@example.com/?a=1')],
    ['invalid_url', () => new OutboundHttpClient().request('https://exa mple.com/?token=SECRET')],
    [
      'address_refused (resolved name)',
      () =>
        new OutboundHttpClient({ resolve: async () => ['10.1.2.3'] }).request(
          'https://idp.example/?token=SECRET',
          {
            headers: { authorization: 'Bearer SECRET' },
            body: 'SECRET',
            method: 'POST',
          },
        ),
    ],
    [
      'assertUrlAllowed',
      () => new OutboundHttpClient().assertUrlAllowed('https://169.254.169.254/latest?token=SECRET'),
    ],
    [
      'connection_failed',
      () =>
        new OutboundHttpClient({ allowHosts: ['127.0.0.1'] }).request(`${closedOrigin}/x?token=SECRET`, {
          headers: { authorization: 'Bearer SECRET' },
        }),
    ],
    [
      'timeout',
      () =>
        new OutboundHttpClient({ allowHosts: ['127.0.0.1'] }).request(`${server.origin}/x?token=SECRET`, {
          timeoutMs: 100,
          method: 'POST',
          body: 'SECRET',
        }),
    ],
  ];

  it.each(cases)('%s: names neither query, credentials, headers nor body', async (_name, run) => {
    const error = await failure(run());
    expect(error.message).not.toContain('SECRET');
    expect(JSON.stringify(error.details)).not.toContain('SECRET');
    expect(error.message).not.toContain('token');
  });

  it('names the scheme and host', async () => {
    const error = await failure(new OutboundHttpClient().request('https://10.0.0.1:8443/cb?token=SECRET'));
    expect(error.message).toContain('https://10.0.0.1:8443');
  });
});
