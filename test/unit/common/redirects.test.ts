import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CustosException } from '../../../src/common/errors.js';
import { OutboundHttpClient } from '../../../src/common/outbound-http.js';

interface TestServer {
  port: number;
  origin: string;
  readonly connections: number;
  close(): Promise<void>;
}

async function startServer(handler: http.RequestListener, host = '127.0.0.1'): Promise<TestServer> {
  const server = http.createServer(handler);
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    origin: `http://${host}:${port}`,
    get connections() {
      return connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface Echo {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

const echo: http.RequestListener = (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    res.setHeader('content-type', 'application/json');
    res.end(
      JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      }),
    );
  });
};

async function refusal(promise: Promise<unknown>): Promise<CustosException> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CustosException);
  return error as CustosException;
}

describe('OutboundHttpClient redirects', () => {
  let target: TestServer;
  let other: TestServer;
  /** Listens on 127.0.0.2, which is never allow-listed: it must never see a connection. */
  let unlisted: TestServer;
  let origin: TestServer;
  let client: OutboundHttpClient;

  beforeAll(async () => {
    target = await startServer(echo);
    other = await startServer(echo);
    unlisted = await startServer(echo, '127.0.0.2');
    origin = await startServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/echo') {
        echo(req, res);
        return;
      }
      // Drain the request body so keep-alive sockets stay usable.
      req.resume();
      const status = Number(url.searchParams.get('status') ?? 302);
      const to = url.searchParams.get('to');
      const hops = Number(url.searchParams.get('hops') ?? 0);
      const location = to ?? (hops > 0 ? `/chain?hops=${hops - 1}` : '/echo');
      res.writeHead(status, { location });
      res.end('redirecting');
    });
    client = new OutboundHttpClient({
      allowHosts: [`127.0.0.1:${origin.port}`, `127.0.0.1:${target.port}`, `127.0.0.1:${other.port}`],
    });
  });
  afterAll(async () => {
    client.destroy();
    await Promise.all([target.close(), other.close(), unlisted.close(), origin.close()]);
  });

  const redirectTo = (to: string, status = 302): string =>
    `${origin.origin}/r?status=${status}&to=${encodeURIComponent(to)}`;

  it('follows a redirect to another allow-listed origin and reports the final URL', async () => {
    const res = await client.request(redirectTo(`${target.origin}/echo?landed=1`));
    expect(res.status).toBe(200);
    expect(res.json<Echo>().url).toBe('/echo?landed=1');
    expect(res.url).toBe(`${target.origin}/echo?landed=1`);
  });

  it.each([
    ['http://127.0.0.2:PORT/', 'scheme_not_allowed'],
    ['https://127.0.0.2:PORT/', 'address_refused'],
    ['http://169.254.169.254/latest/meta-data', 'scheme_not_allowed'],
    ['https://169.254.169.254/latest/meta-data', 'address_refused'],
    ['https://[::ffff:a9fe:a9fe]/', 'address_refused'],
    ['https://2130706433/', 'address_refused'],
    ['https://user:pass@example.com/', 'credentials_in_url'],
    ['file:///etc/passwd', 'scheme_not_allowed'],
    ['http://[::1', 'invalid_url'],
  ])('refuses a redirect to %s (%s)', async (to, reason) => {
    const before = unlisted.connections;
    const error = await refusal(client.request(redirectTo(to.replace('PORT', String(unlisted.port)))));
    expect(error.code).toBe('outbound_url_refused');
    expect(error.details).toEqual({ reason });
    expect(unlisted.connections).toBe(before);
  });

  it('refuses a redirect to a name that resolves to a refused address', async () => {
    const resolving = new OutboundHttpClient({
      allowHosts: [`127.0.0.1:${origin.port}`],
      resolve: async () => ['127.0.0.1'],
    });
    try {
      const before = target.connections;
      const error = await refusal(resolving.request(redirectTo(`https://internal.example:${target.port}/`)));
      expect(error.details).toEqual({ reason: 'address_refused' });
      expect(target.connections).toBe(before);
    } finally {
      resolving.destroy();
    }
  });

  it('follows up to maxRedirects hops and refuses one more', async () => {
    const ok = await client.request(`${origin.origin}/chain?hops=4`); // 5 redirects in all
    expect(ok.status).toBe(200);
    const error = await refusal(client.request(`${origin.origin}/chain?hops=5`));
    expect(error.details).toEqual({ reason: 'too_many_redirects' });
  });

  it('honours a configured maxRedirects', async () => {
    const strict = new OutboundHttpClient({ allowHosts: ['127.0.0.1'], maxRedirects: 1 });
    try {
      expect((await strict.request(`${origin.origin}/chain?hops=0`)).status).toBe(200);
      const error = await refusal(strict.request(`${origin.origin}/chain?hops=1`));
      expect(error.details).toEqual({ reason: 'too_many_redirects' });
    } finally {
      strict.destroy();
    }
  });

  it('returns the redirect itself when followRedirects is false', async () => {
    const res = await client.request(redirectTo('https://169.254.169.254/'), { followRedirects: false });
    expect(res.status).toBe(302);
    expect(res.headers.location).toBe('https://169.254.169.254/');
    expect(res.text()).toBe('redirecting');
  });

  it.each([301, 302, 303])('turns a POST into a GET without body on %i', async (status) => {
    const res = await client.request(redirectTo('/echo', status), {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-keep': 'kept' },
      body: '{"secret":"body"}',
    });
    const echoed = res.json<Echo>();
    expect(echoed.method).toBe('GET');
    expect(echoed.body).toBe('');
    expect(echoed.headers['content-type']).toBeUndefined();
    expect(echoed.headers['content-length']).toBeUndefined();
    expect(echoed.headers['x-keep']).toBe('kept');
  });

  it('turns a PUT into a GET on 303', async () => {
    const res = await client.request(redirectTo('/echo', 303), { method: 'PUT', body: Buffer.from('x') });
    expect(res.json<Echo>()).toMatchObject({ method: 'GET', body: '' });
  });

  it.each([307, 308])('keeps method and body on %i', async (status) => {
    const res = await client.request(redirectTo('/echo', status), {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: Buffer.from('payload'),
    });
    const echoed = res.json<Echo>();
    expect(echoed.method).toBe('POST');
    expect(echoed.body).toBe('payload');
    expect(echoed.headers['content-type']).toBe('text/plain');
  });

  it('drops Authorization and Cookie on a cross-origin redirect', async () => {
    const res = await client.request(redirectTo(`${other.origin}/echo`, 307), {
      headers: { Authorization: 'Bearer SECRET', Cookie: 'session=SECRET', 'X-Other': 'kept' },
    });
    const headers = res.json<Echo>().headers;
    expect(headers.authorization).toBeUndefined();
    expect(headers.cookie).toBeUndefined();
    expect(headers['x-other']).toBe('kept');
    expect(headers.host).toBe(`127.0.0.1:${other.port}`);
  });

  it('keeps Authorization on a same-origin redirect', async () => {
    const res = await client.request(redirectTo('/echo', 302), {
      headers: { authorization: 'Bearer token' },
    });
    expect(res.json<Echo>().headers.authorization).toBe('Bearer token');
  });

  it('does not name the redirect target query in a refusal', async () => {
    const error = await refusal(client.request(redirectTo('https://169.254.169.254/x?token=SECRET')));
    expect(error.message).not.toContain('SECRET');
    expect(JSON.stringify(error.details)).not.toContain('SECRET');
  });
});
