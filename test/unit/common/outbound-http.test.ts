import dns from 'node:dns';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { CustosException } from '../../../src/common/errors.js';
import { OutboundHttpClient } from '../../../src/common/outbound-http.js';

// Every server here listens on loopback; the clients reach them only through the allow-list (or an injected
// resolver), and every refused destination must be refused before a socket connects.

interface TestServer {
  port: number;
  origin: string;
  readonly connections: number;
  close(): Promise<void>;
}

async function startServer(handler: http.RequestListener, host = '127.0.0.1', port = 0): Promise<TestServer> {
  const server = http.createServer(handler);
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    port: actual,
    origin: `http://${host.includes(':') ? `[${host}]` : host}:${actual}`,
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

const echo: http.RequestListener = (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    res.setHeader('content-type', 'application/json');
    res.setHeader('x-echo', 'yes');
    res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }));
  });
};

interface Echo {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

async function refusal(promise: Promise<unknown>): Promise<CustosException> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CustosException);
  return error as CustosException;
}

const PUBLIC_ADDRESS = '93.184.215.14';

describe('OutboundHttpClient with an allow-listed loopback server', () => {
  let server: TestServer;
  let client: OutboundHttpClient;

  beforeAll(async () => {
    server = await startServer(echo);
    client = new OutboundHttpClient({ allowHosts: [`127.0.0.1:${server.port}`] });
  });
  afterAll(async () => {
    client.destroy();
    await server.close();
  });

  it('GETs with status, headers, body, json() and the final URL', async () => {
    const res = await client.request(`${server.origin}/things?x=1#frag`);
    expect(res.status).toBe(200);
    expect(res.headers['x-echo']).toBe('yes');
    expect(res.headers['content-type']).toBe('application/json');
    const echoed = res.json<Echo>();
    expect(echoed).toMatchObject({ method: 'GET', url: '/things?x=1', body: '' });
    expect(echoed.headers['user-agent']).toBe('Custos');
    expect(echoed.headers.host).toBe(`127.0.0.1:${server.port}`);
    expect(JSON.parse(res.text())).toEqual(echoed);
    expect(res.body.equals(Buffer.from(res.text()))).toBe(true);
    expect(res.url).toBe(`${server.origin}/things?x=1`);
  });

  it('POSTs a string body with its headers and a computed content-length', async () => {
    const res = await client.request(`${server.origin}/form`, {
      method: 'post',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'User-Agent': 'custom/1' },
      body: 'a=1&b=é',
    });
    const echoed = res.json<Echo>();
    expect(echoed.method).toBe('POST');
    expect(echoed.body).toBe('a=1&b=é');
    expect(echoed.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(echoed.headers['content-length']).toBe(String(Buffer.byteLength('a=1&b=é')));
    expect(echoed.headers['user-agent']).toBe('custom/1');
  });

  it('POSTs a Buffer body', async () => {
    const res = await client.request(`${server.origin}/bin`, { method: 'PUT', body: Buffer.from([1, 2, 3]) });
    const echoed = res.json<Echo>();
    expect(echoed.method).toBe('PUT');
    expect(echoed.headers['content-length']).toBe('3');
    expect(echoed.body).toBe('\u0001\u0002\u0003');
  });

  it('uses the client user agent when configured', async () => {
    const custom = new OutboundHttpClient({ allowHosts: ['127.0.0.1'], userAgent: 'Custos/test' });
    try {
      const res = await custom.request(`${server.origin}/`);
      expect(res.json<Echo>().headers['user-agent']).toBe('Custos/test');
    } finally {
      custom.destroy();
    }
  });

  it('refuses json() on a body that is not JSON without quoting the body', async () => {
    const plain = await startServer((_req, res) => res.end('not json SECRET'));
    const c = new OutboundHttpClient({ allowHosts: ['127.0.0.1'] });
    try {
      const res = await c.request(plain.origin);
      const error = (() => {
        try {
          res.json();
        } catch (e) {
          return e as CustosException;
        }
        throw new Error('json() did not throw');
      })();
      expect(error).toBeInstanceOf(CustosException);
      expect(error.code).toBe('outbound_request_failed');
      expect(error.details).toEqual({ reason: 'invalid_json' });
      expect(error.message).not.toContain('SECRET');
    } finally {
      c.destroy();
      await plain.close();
    }
  });
});

describe('OutboundHttpClient refusals before connecting', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startServer(echo);
  });
  afterAll(async () => {
    await server.close();
  });

  it('refuses http://127.0.0.1 without the allow-list, and the server sees no connection', async () => {
    const client = new OutboundHttpClient();
    const before = server.connections;
    const error = await refusal(client.request(`${server.origin}/`));
    expect(error.code).toBe('outbound_url_refused');
    expect(error.details).toEqual({ reason: 'scheme_not_allowed' });
    const viaHttps = await refusal(client.request(`https://127.0.0.1:${server.port}/`));
    expect(viaHttps.details).toEqual({ reason: 'address_refused' });
    expect(server.connections).toBe(before);
  });

  it('does not let an allow-list entry for one port cover another', async () => {
    const client = new OutboundHttpClient({ allowHosts: [`127.0.0.1:${server.port + 1}`] });
    const before = server.connections;
    const error = await refusal(client.request(`${server.origin}/`));
    expect(error.details).toEqual({ reason: 'scheme_not_allowed' });
    expect(server.connections).toBe(before);
  });

  describe('the refusal table', () => {
    let connect: jest.SpyInstance;
    let lookup: jest.SpyInstance;
    const client = new OutboundHttpClient();

    beforeEach(() => {
      connect = jest.spyOn(net.Socket.prototype, 'connect');
      lookup = jest.spyOn(dns.promises, 'lookup');
    });
    afterEach(() => {
      connect.mockRestore();
      lookup.mockRestore();
    });

    it.each([
      ['https://169.254.169.254/latest/meta-data', 'address_refused'],
      ['https://[::ffff:a9fe:a9fe]/', 'address_refused'],
      ['https://[::ffff:169.254.169.254]/', 'address_refused'],
      ['https://[::ffff:127.0.0.1]/', 'address_refused'],
      ['https://0x7f000001/', 'address_refused'],
      ['https://2130706433/', 'address_refused'],
      ['https://0177.0.0.1/', 'address_refused'],
      ['https://127.1/', 'address_refused'],
      ['https://127.0.0.1/', 'address_refused'],
      ['https://10.0.0.1/', 'address_refused'],
      ['https://172.16.0.1/', 'address_refused'],
      ['https://192.168.1.1/', 'address_refused'],
      ['https://100.64.0.1/', 'address_refused'],
      ['https://224.0.0.1/', 'address_refused'],
      ['https://255.255.255.255/', 'address_refused'],
      ['https://192.0.2.1/', 'address_refused'],
      ['https://[::1]/', 'address_refused'],
      ['https://[fd00::1]/', 'address_refused'],
      ['https://[fd00:ec2::254]/', 'address_refused'],
      ['https://[fe80::1]/', 'address_refused'],
      ['https://[ff02::1]/', 'address_refused'],
      ['https://[2001:db8::1]/', 'address_refused'],
      ['https://0.0.0.0/', 'address_refused'],
      ['https://0/', 'address_refused'],
      ['https://[::]/', 'address_refused'],
      ['https://[::127.0.0.1]/', 'address_refused'],
      ['https://[64:ff9b::7f00:1]/', 'address_refused'],
      ['https://[64:ff9b::169.254.169.254]/', 'address_refused'],
      ['https://[2002:7f00:1::]/', 'address_refused'],
      ['https://localhost/', 'address_refused'],
      ['https://LOCALHOST:8443/', 'address_refused'],
      ['http://example.com/', 'scheme_not_allowed'],
      ['http://169.254.169.254/latest/meta-data', 'scheme_not_allowed'],
      ['https://user:pass@example.com/', 'credentials_in_url'],
      ['https://user@example.com/', 'credentials_in_url'],
      ['ftp://x/', 'scheme_not_allowed'],
      ['file:///etc/passwd', 'scheme_not_allowed'],
      ['javascript:alert(1)', 'scheme_not_allowed'],
      ['data:text/plain,hi', 'scheme_not_allowed'],
      ['gopher://127.0.0.1:6379/_INFO', 'scheme_not_allowed'],
      ['not a url', 'invalid_url'],
      ['https://exa mple.com/', 'invalid_url'],
      ['//example.com/', 'invalid_url'],
    ])('refuses %s (%s) without connecting', async (url, reason) => {
      const error = await refusal(client.request(url));
      expect(error.code).toBe('outbound_url_refused');
      expect(error.details).toEqual({ reason });
      const saveTime = await refusal(client.assertUrlAllowed(url));
      expect(saveTime.details).toEqual({ reason });
      expect(connect).not.toHaveBeenCalled();
      // Only 'localhost' ever reaches the system resolver, which answers it locally.
      for (const [host] of lookup.mock.calls as [string][]) expect(host).toBe('localhost');
    });

    it('sees connections when there are some (control for the spy above)', async () => {
      const allowed = new OutboundHttpClient({ allowHosts: ['127.0.0.1'] });
      try {
        await allowed.request(`${server.origin}/`);
        expect(connect).toHaveBeenCalled();
      } finally {
        allowed.destroy();
      }
    });
  });

  it('refuses https://localhost:<port> and neither loopback address sees a connection', async () => {
    const v6 = await startServer(echo, '::1', server.port).catch(() => undefined);
    try {
      const before = server.connections;
      const error = await refusal(new OutboundHttpClient().request(`https://localhost:${server.port}/`));
      expect(error.details).toEqual({ reason: 'address_refused' });
      expect(server.connections).toBe(before);
      expect(v6?.connections ?? 0).toBe(0);
    } finally {
      await v6?.close();
    }
  });

  it('refuses a name that resolves to a private address', async () => {
    const resolve = jest.fn(async () => ['10.0.0.5']);
    const client = new OutboundHttpClient({ resolve });
    const error = await refusal(client.request('https://idp.tenant.example/.well-known/jwks.json'));
    expect(error.details).toEqual({ reason: 'address_refused' });
    expect(resolve).toHaveBeenCalledWith('idp.tenant.example');
  });

  it('refuses a name when ANY of its addresses is refused', async () => {
    const client = new OutboundHttpClient({
      resolve: async () => [PUBLIC_ADDRESS, '::ffff:169.254.169.254'],
    });
    const error = await refusal(client.request('https://mixed.example/'));
    expect(error.details).toEqual({ reason: 'address_refused' });
  });

  describe.each([true, false])('DNS rebinding (autoSelectFamily %s)', (autoSelectFamily) => {
    const previous = net.getDefaultAutoSelectFamily();
    beforeAll(() => net.setDefaultAutoSelectFamily(autoSelectFamily));
    afterAll(() => net.setDefaultAutoSelectFamily(previous));

    it('refuses at connect time when the name rebinds to loopback after the first check', async () => {
      let calls = 0;
      const resolve = jest.fn(async () => (++calls === 1 ? [PUBLIC_ADDRESS] : ['127.0.0.1']));
      const client = new OutboundHttpClient({ resolve });
      const before = server.connections;
      try {
        const error = await refusal(client.request(`https://rebind.example:${server.port}/?token=SECRET`));
        expect(error.code).toBe('outbound_url_refused');
        expect(error.details).toEqual({ reason: 'address_refused' });
        expect(error.message).not.toContain('SECRET');
        expect(resolve).toHaveBeenCalledTimes(2);
        expect(server.connections).toBe(before);
      } finally {
        client.destroy();
      }
    });

    it('connects through the lookup to what the resolver returned for an allow-listed name', async () => {
      const client = new OutboundHttpClient({
        allowHosts: ['svc.internal'],
        resolve: async () => ['127.0.0.1'],
      });
      try {
        const res = await client.request(`http://svc.internal:${server.port}/hello`);
        expect(res.json<Echo>()).toMatchObject({ url: '/hello' });
        expect(res.json<Echo>().headers.host).toBe(`svc.internal:${server.port}`);
      } finally {
        client.destroy();
      }
    });
  });

  it('reports a name that does not resolve as dns_resolution_failed', async () => {
    const client = new OutboundHttpClient({
      resolve: async () => {
        throw Object.assign(new Error('getaddrinfo ENOTFOUND nowhere.example'), { code: 'ENOTFOUND' });
      },
    });
    const error = await refusal(client.request('https://nowhere.example/'));
    expect(error.code).toBe('outbound_request_failed');
    expect(error.details).toEqual({ reason: 'dns_resolution_failed' });
    const empty = new OutboundHttpClient({ resolve: async () => [] });
    expect((await refusal(empty.request('https://empty.example/'))).details).toEqual({
      reason: 'dns_resolution_failed',
    });
  });
});

describe('OutboundHttpClient allow-list', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startServer(echo);
  });
  afterAll(async () => {
    await server.close();
  });

  async function reaches(allowHosts: string[], url: string): Promise<boolean> {
    const client = new OutboundHttpClient({ allowHosts });
    try {
      await client.request(url);
      return true;
    } catch (error) {
      if (error instanceof CustosException && error.code === 'outbound_url_refused') return false;
      throw error;
    } finally {
      client.destroy();
    }
  }

  it('matches a bare host on any port, case-insensitively', async () => {
    expect(await reaches(['127.0.0.1'], `${server.origin}/`)).toBe(true);
    expect(await reaches(['LocalHost'], `http://localhost:${server.port}/`)).toBe(true);
    expect(await reaches(['localhost'], `http://LOCALHOST:${server.port}/`)).toBe(true);
  });

  it('matches host:port only on that port', async () => {
    expect(await reaches([`127.0.0.1:${server.port}`], `${server.origin}/`)).toBe(true);
    expect(await reaches([`127.0.0.1:${server.port + 1}`], `${server.origin}/`)).toBe(false);
    expect(await reaches(['127.0.0.1:80'], `${server.origin}/`)).toBe(false);
  });

  it('matches entries written in another numeric form of the same address', async () => {
    expect(await reaches(['2130706433'], `${server.origin}/`)).toBe(true);
  });

  it('does not treat a listed host as covering other loopback addresses', async () => {
    expect(await reaches(['127.0.0.1'], `http://127.0.0.2:${server.port}/`)).toBe(false);
    expect(await reaches(['127.0.0.1'], `https://127.0.0.2:${server.port}/`)).toBe(false);
  });

  it('matches IPv6 literal entries', async () => {
    const v6 = await startServer(echo, '::1').catch(() => undefined);
    if (v6 === undefined) return; // no IPv6 loopback in this environment
    try {
      expect(await reaches([`[::1]:${v6.port}`], `${v6.origin}/`)).toBe(true);
      expect(await reaches(['[::1]'], `${v6.origin}/`)).toBe(true);
      expect(await reaches(['::1'], `http://[0:0::1]:${v6.port}/`)).toBe(true);
      expect(await reaches([`[::1]:${v6.port + 1}`], `${v6.origin}/`)).toBe(false);
      expect(await reaches(['127.0.0.1'], `${v6.origin}/`)).toBe(false);
    } finally {
      await v6.close();
    }
  });

  it('refuses a malformed entry at construction', () => {
    expect(() => new OutboundHttpClient({ allowHosts: ['http://x/'] })).toThrow(
      /CUSTOS_OUTBOUND_ALLOW_HOSTS/,
    );
  });
});

describe('assertUrlAllowed', () => {
  it('accepts an https URL whose name resolves to public addresses, without connecting', async () => {
    const connect = jest.spyOn(net.Socket.prototype, 'connect');
    try {
      const client = new OutboundHttpClient({ resolve: async () => [PUBLIC_ADDRESS, '2606:4700::1'] });
      await expect(client.assertUrlAllowed('https://idp.example/jwks?x=1')).resolves.toBeUndefined();
      await expect(client.assertUrlAllowed('https://8.8.8.8/')).resolves.toBeUndefined();
      expect(connect).not.toHaveBeenCalled();
    } finally {
      connect.mockRestore();
    }
  });

  it('refuses a name resolving to a private address and passes allow-listed hosts', async () => {
    const client = new OutboundHttpClient({
      allowHosts: ['vault:8200'],
      resolve: async () => ['192.168.0.10'],
    });
    expect((await refusal(client.assertUrlAllowed('https://kms.example/'))).details).toEqual({
      reason: 'address_refused',
    });
    await expect(client.assertUrlAllowed('http://vault:8200/v1/transit')).resolves.toBeUndefined();
    expect((await refusal(client.assertUrlAllowed('http://vault:8201/'))).details).toEqual({
      reason: 'scheme_not_allowed',
    });
  });
});
