/**
 * Hostile input at the admin API's edge (issue 12, findings 6 and 9): NUL bytes, lone surrogates and control
 * characters in every kind of field, deeply nested and oversized bodies, invalid UTF-8, path parameters and
 * query strings, URLs whose host does not resolve, and CR/LF aimed at redirect targets. Each must be a 4xx
 * with a stable error code; nothing reaches the database or a Location header.
 */
import fc from 'fast-check';
import { ERROR_CODES } from '../../src/http/error-codes.js';
import { MAX_JSON_DEPTH, textProblem } from '../../src/common/validation.js';
import { startTestApp, type Reply, type TestApp } from '../support/app.js';
import { createTenant, type TenantFixture } from '../support/factories.js';
import { hostileString } from '../support/naughty-strings.js';

/** A public address literal: URLs on it pass the SSRF guard without DNS. */
const PUBLIC_IP = '93.184.215.14';
const NUL = 'a\u0000b';
const HIGH = 'a\ud800b';
const LOW = 'a\udc00b';

let app: TestApp;
let t: TenantFixture;

beforeAll(async () => {
  app = await startTestApp();
  t = await createTenant(app);
});
afterAll(async () => {
  await app.close();
});

const tenantBase = () => `/v1/tenants/${t.tenantId}`;

/** A 4xx in the admin API's stable shape, with a known code. */
function expectStableRefusal(res: Reply, status: number, code: string): void {
  expect({ status: res.status, error: res.body?.error }).toEqual({ status, error: code });
  expect(ERROR_CODES).toContain(res.body.error);
  expect(typeof res.body.message).toBe('string');
  expect(typeof res.body.requestId).toBe('string');
}

/** The field a validation_failed answer names (issues[].path), joined. */
const issuePaths = (res: Reply): string[] =>
  ((res.body?.details?.issues ?? []) as { path: string }[]).map((i) => i.path);

const customProvider = (key: string, overrides: Record<string, unknown> = {}) => ({
  key,
  name: 'Corp API',
  authMode: 'api_key',
  docsUrl: `https://${PUBLIC_IP}/docs`,
  connectionConfig: [{ key: 'tenant', label: 'Tenant' }],
  apiKey: { verify: { url: `https://${PUBLIC_IP}/api/{tenant}/me` } },
  ...overrides,
});

describe('NUL bytes and lone surrogates in text fields (finding 6)', () => {
  const cases: [string, string, () => string, (bad: string) => unknown, string][] = [
    ['tenant name', 'POST', () => '/v1/tenants', (bad) => ({ name: bad }), 'name'],
    ['tenant rename', 'PATCH', () => tenantBase(), (bad) => ({ name: bad }), 'name'],
    [
      'admin key name',
      'POST',
      () => `${tenantBase()}/admin-keys`,
      (bad) => ({ name: bad, role: 'auditor' }),
      'name',
    ],
    [
      'connector name',
      'POST',
      () => `${tenantBase()}/connectors`,
      (bad) => ({
        name: bad,
        allowedProviders: ['github'],
        delegation: 'user_token',
        auth: { method: 'client_secret_basic' },
      }),
      'name',
    ],
    [
      'connector owner',
      'POST',
      () => `${tenantBase()}/connectors`,
      (bad) => ({
        name: 'ok',
        owner: bad,
        allowedProviders: ['github'],
        delegation: 'user_token',
        auth: { method: 'client_secret_basic' },
      }),
      'owner',
    ],
    [
      'identity-provider issuer',
      'PUT',
      () => `${tenantBase()}/identity-providers/main`,
      (bad) => ({
        issuer: `https://${PUBLIC_IP}/${bad}`,
        jwksUri: `https://${PUBLIC_IP}/jwks`,
        audiences: ['custos'],
      }),
      'issuer',
    ],
    [
      'identity-provider audience',
      'PUT',
      () => `${tenantBase()}/identity-providers/main`,
      (bad) => ({ issuer: `https://${PUBLIC_IP}/`, jwksUri: `https://${PUBLIC_IP}/jwks`, audiences: [bad] }),
      'audiences.0',
    ],
    [
      'custom provider name',
      'PUT',
      () => `${tenantBase()}/providers/corp`,
      (bad) => customProvider('corp', { name: bad }),
      'name',
    ],
    [
      'custom provider connection-config label',
      'PUT',
      () => `${tenantBase()}/providers/corp`,
      (bad) => customProvider('corp', { connectionConfig: [{ key: 'tenant', label: bad }] }),
      'label',
    ],
    [
      'custom provider URL',
      'PUT',
      () => `${tenantBase()}/providers/corp`,
      (bad) => customProvider('corp', { docsUrl: `https://${PUBLIC_IP}/${bad}` }),
      'docsUrl',
    ],
    [
      'connect session returnTo',
      'POST',
      () => `${tenantBase()}/connect/sessions`,
      (bad) => ({ userId: 'alice', provider: 'github', returnTo: `https://app.example/${bad}` }),
      'returnTo',
    ],
    [
      'imported API key',
      'PUT',
      () => `${tenantBase()}/users/alice/connections/openai`,
      (bad) => ({ type: 'api_key', apiKey: bad }),
      'apiKey',
    ],
  ];

  it.each(cases)(
    '%s: 400 validation_failed naming the field, for NUL, lone high and lone low surrogates',
    async (_label, method, url, body, field) => {
      for (const bad of [NUL, HIGH, LOW]) {
        const res = await app.request(method, url(), {
          key: url() === '/v1/tenants' ? app.bootstrapKey : t.adminKey,
          body: body(bad),
        });
        expectStableRefusal(res, 400, 'validation_failed');
        expect(issuePaths(res).join(' ')).toContain(field);
      }
    },
  );

  it('refuses NUL and lone surrogates in JSON object keys and in fields no schema names', async () => {
    for (const bad of [NUL, HIGH]) {
      const res = await app.request('PUT', `${tenantBase()}/providers/github/app`, {
        key: t.adminKey,
        body: { clientId: 'abc', privateKeyJwk: { kty: 'EC', d: 'x', [bad]: 'y' } },
      });
      expectStableRefusal(res, 400, 'validation_failed');
    }
  });

  it('refuses NUL in a path parameter and in a query string with 400, not 500', async () => {
    const cases = [
      ['PUT', `${tenantBase()}/users/alice/connections/git%00hub`, { type: 'api_key', apiKey: 'k' }],
      ['GET', `${tenantBase()}/providers/corp%00x/app`, undefined],
      ['GET', `${tenantBase()}/audit/events?cursor=a%00b`, undefined],
      ['GET', `${tenantBase()}/audit/events?userId=al%00ice`, undefined],
      ['GET', `${tenantBase()}/users/al%00ice/connections`, undefined],
    ] as const;
    for (const [method, url, body] of cases) {
      const res = await app.request(method, url, { key: t.adminKey, body });
      expect(res.status).toBe(400);
      expect(ERROR_CODES).toContain(res.body.error);
    }
  });

  it('leaves no row behind for a refused value', async () => {
    await app.request('POST', '/v1/tenants', { key: app.bootstrapKey, body: { name: `bad${NUL}` } });
    const rows = await app.custos.runtime.dataSource.query(
      `SELECT count(*)::int AS n FROM tenants WHERE position(E'\\\\000' in name) > 0 OR name LIKE 'bad%'`,
    );
    expect(rows[0].n).toBe(0);
  });
});

describe('control characters', () => {
  it('refuses CR/LF and other control characters in single-line fields', async () => {
    for (const bad of ['a\r\nb', 'a\tb', 'a\u0085b', 'a\u001bb']) {
      const res = await app.request('PATCH', tenantBase(), { key: t.adminKey, body: { name: bad } });
      expectStableRefusal(res, 400, 'validation_failed');
    }
  });

  it('still accepts ordinary Unicode: accents, CJK, emoji (surrogate pairs), right-to-left text', async () => {
    for (const name of ['Société Générale', '株式会社', 'Team 🚀', 'שלום']) {
      const res = await app.request('PATCH', tenantBase(), { key: t.adminKey, body: { name } });
      expect(res.status).toBe(200);
      expect(res.body.name).toBe(name);
    }
  });
});

describe('deeply nested and oversized bodies', () => {
  const nested = (depth: number): unknown => {
    let v: unknown = 'x';
    for (let i = 0; i < depth; i++) v = i % 2 === 0 ? { a: v } : [v];
    return v;
  };

  it(`refuses a body nested deeper than ${MAX_JSON_DEPTH} with 400 json_too_deep, before validation`, async () => {
    const res = await app.request('PUT', `${tenantBase()}/providers/github/app`, {
      key: t.adminKey,
      body: { clientId: 'abc', privateKeyJwk: { kty: 'EC', d: 'x', deep: nested(MAX_JSON_DEPTH + 5) } },
    });
    expectStableRefusal(res, 400, 'json_too_deep');
  });

  it('refuses a body of 20,000 nested arrays (within the size limit) with 400, not 500', async () => {
    const depth = 20_000;
    const payload = `{"name":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    const res = await app.request('POST', '/v1/tenants', {
      key: app.bootstrapKey,
      payload,
      headers: { 'content-type': 'application/json' },
    });
    expectStableRefusal(res, 400, 'json_too_deep');
  });

  it(`accepts a body nested exactly ${MAX_JSON_DEPTH} deep as far as depth goes`, async () => {
    // {jwk: {deep: ...}} at depth MAX: refused by the schema, not by the depth limit.
    const res = await app.request('PUT', `${tenantBase()}/providers/github/app`, {
      key: t.adminKey,
      body: { clientId: 'abc', privateKeyJwk: { kty: 'EC', d: 'x', deep: nested(MAX_JSON_DEPTH - 3) } },
    });
    expect(res.body.error).not.toBe('json_too_deep');
  });

  it('answers an oversized body with 413 payload_too_large', async () => {
    const res = await app.request('POST', '/v1/tenants', {
      key: app.bootstrapKey,
      body: { name: 'x'.repeat(70_000) },
    });
    expectStableRefusal(res, 413, 'payload_too_large');
  });

  it('answers invalid UTF-8 bytes (read as U+FFFD) and malformed JSON without a 5xx', async () => {
    const fastify = app.custos.app.getHttpAdapter().getInstance();
    for (const bytes of [
      Buffer.from([0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0xc0, 0x80, 0x22, 0x7d]),
      Buffer.from('{"name":"\\ud800"}'),
      Buffer.from('{"name":"\\u0000"}'),
      Buffer.from('{"name": '),
      Buffer.from('{"__proto__":{"x":1},"name":"a"}'),
    ]) {
      const res = await fastify.inject({
        method: 'PATCH',
        url: tenantBase(),
        headers: { authorization: `Bearer ${t.adminKey}`, 'content-type': 'application/json' },
        payload: bytes,
      });
      expect(res.statusCode).toBeLessThan(500);
      if (res.statusCode >= 400) expect(ERROR_CODES).toContain(res.json().error);
      else expect(res.json().name).toBe('\ufffd\ufffd\ufffd\ufffd');
    }
  });
});

describe('a URL whose host does not resolve, at save time (finding 9)', () => {
  const unresolvable = 'https://nowhere.invalid/hook';

  it.each([
    ['the tenant webhook', 'PATCH', () => tenantBase(), { webhookUrl: unresolvable }],
    [
      'an identity provider’s JWKS',
      'PUT',
      () => `${tenantBase()}/identity-providers/main`,
      { issuer: 'https://nowhere.invalid/', jwksUri: unresolvable, audiences: ['custos'] },
    ],
    [
      'a connector’s JWKS',
      'POST',
      () => `${tenantBase()}/connectors`,
      {
        name: 'keyed',
        allowedProviders: ['github'],
        delegation: 'user_token',
        auth: { method: 'private_key_jwt', jwksUri: unresolvable },
      },
    ],
    [
      'a custom provider URL',
      'PUT',
      () => `${tenantBase()}/providers/corp`,
      customProvider('corp', { docsUrl: 'https://docs.nowhere.invalid/' }),
    ],
  ])('%s: 400 outbound_url_unresolvable with the reason, no stack trace logged', async (_l, m, url, body) => {
    const before = app.logs.length;
    const res = await app.request(m, url(), { key: t.adminKey, body });
    expectStableRefusal(res, 400, 'outbound_url_unresolvable');
    expect(res.body.details).toMatchObject({ reason: 'dns_resolution_failed' });
    expect(res.body.message).toMatch(/nowhere\.invalid/);
    const logged = app.logs.slice(before).join('');
    expect(logged).not.toMatch(/"stack"|\n\s+at /);
    expect(logged).not.toMatch(/"level":50/);
  });
});

describe('CR/LF aimed at redirect targets', () => {
  it('refuses CR/LF (raw and percent-decoded forms) in allowed return URLs and in returnTo', async () => {
    for (const bad of [
      'https://app.example/\r\nSet-Cookie: x=1',
      'https://app.example/\nLocation: https://evil.example',
      'https://app.example/\u2028x',
      'https://app.example/%0d%0aSet-Cookie:%20x=1\r',
    ]) {
      const urls = await app.request('PATCH', tenantBase(), {
        key: t.adminKey,
        body: { allowedReturnUrls: [bad] },
      });
      expectStableRefusal(urls, 400, 'validation_failed');
      const session = await app.request('POST', `${tenantBase()}/connect/sessions`, {
        key: t.adminKey,
        body: { userId: 'alice', provider: 'github', returnTo: bad },
      });
      expect(session.status).toBe(400);
      expect(ERROR_CODES).toContain(session.body.error);
    }
  });
});

describe('connect-flow redirects never carry CR or LF', () => {
  const cookieHeader = (setCookie: string | string[] | number | undefined) =>
    [setCookie ?? []]
      .flat()
      .map((c) => String(c).split(';')[0])
      .join('; ');

  /**
   * The return URL exactly as registered, with the session's id and outcome appended to its query (RFC 3986:
   * `?` or `&`), and no CR or LF anywhere.
   */
  function expectReturnedTo(location: unknown, returnTo: string): void {
    expect(typeof location).toBe('string');
    const sep = returnTo.includes('?') ? '&' : '?';
    expect((location as string).slice(0, returnTo.length + 1)).toBe(returnTo + sep);
    expect((location as string).slice(returnTo.length + 1)).toMatch(
      /^custos_session=[0-9a-f-]{36}&custos_outcome=connected$/,
    );
    expect(location).not.toMatch(/[\r\n]/);
  }

  /** Runs the hosted API-key flow for a session returning to `returnTo`; gives the final answer. */
  async function connectWithKey(returnTo: string): Promise<Reply> {
    const session = await app.request('POST', `${tenantBase()}/connect/sessions`, {
      key: t.adminKey,
      body: { userId: 'alice', provider: 'plainkey', returnTo },
    });
    expect(session.status).toBe(201);
    const link = new URL(session.body.url as string).pathname;
    const page = await app.request('GET', link);
    expect(page.status).toBe(200);
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.raw)![1];
    return app.request('POST', `${link}/api-key`, {
      payload: `csrf=${csrf}&apiKey=key-${Math.random().toString(36).slice(2)}`,
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        cookie: cookieHeader(page.headers['set-cookie']),
      },
    });
  }

  beforeAll(async () => {
    // An API-key provider with no verification call: the flow completes without leaving this machine.
    const saved = await app.request('PUT', `${tenantBase()}/providers/plainkey`, {
      key: t.adminKey,
      body: { key: 'plainkey', name: 'Plain key', authMode: 'api_key' },
    });
    expect(saved.status).toBeLessThan(300);
  });

  it('redirects to a return URL holding percent-encoded CR LF exactly as registered', async () => {
    const returnTo = 'https://app.example/done?next=%0d%0aSet-Cookie:%20x%3D1';
    const urls = await app.request('PATCH', tenantBase(), {
      key: t.adminKey,
      body: { allowedReturnUrls: [returnTo] },
    });
    expect(urls.status).toBe(200);
    const done = await connectWithKey(returnTo);
    expect(done.status).toBe(303);
    expectReturnedTo(done.headers.location, returnTo);
    expect(done.headers['set-cookie'] ?? '').not.toContain('x=1');
  });

  it('property: any return URL is either refused (stable 400) or redirected to verbatim, without CR/LF', async () => {
    const percent = (s: string) =>
      [...Buffer.from(s, 'utf8')]
        .map((b) =>
          /[A-Za-z0-9]/.test(String.fromCharCode(b))
            ? String.fromCharCode(b)
            : `%${b.toString(16).toUpperCase().padStart(2, '0')}`,
        )
        .join('');
    const candidate = fc.oneof(
      hostileString.map((s) => `https://app.example/r/${s}`),
      hostileString.map((s) => `https://app.example/r/${percent(s).slice(0, 1500)}`),
      hostileString.map((s) => `https://app.example/r?x=${s}`),
    );
    let followed = 0;
    await fc.assert(
      fc.asyncProperty(candidate, async (returnTo) => {
        const urls = await app.request('PATCH', tenantBase(), {
          key: t.adminKey,
          body: { allowedReturnUrls: [returnTo] },
        });
        if (urls.status !== 200) {
          expectStableRefusal(urls, 400, 'validation_failed');
          return;
        }
        expect(textProblem(returnTo)).toBeNull();
        expect(returnTo).not.toMatch(/\s/);
        const done = await connectWithKey(returnTo);
        expect(done.status).toBe(303);
        expectReturnedTo(done.headers.location, returnTo);
        followed++;
      }),
      { numRuns: 60 },
    );
    // The property must have exercised real redirects, not only refusals.
    expect(followed).toBeGreaterThan(5);
  });
});

describe('hosted connect pages read hostile forms and queries without a 5xx', () => {
  const fakeLink = `/connect/cst_${'A'.repeat(43)}`;

  it('a CSRF token of the same length but other bytes is refused with the page, not a crash', async () => {
    const res = await app.request('POST', `${fakeLink}/api-key`, {
      payload: `csrf=ab%C3%A9&apiKey=x`,
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: '__Host-custos_csrf=abc' },
    });
    expect(res.status).toBe(403);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
  });

  it('repeated or hostile callback parameters get a page, not a crash', async () => {
    for (const url of [
      '/connect/callback/github?state=a&state=b',
      '/connect/callback/github?state=abc&error=x&error=y',
      '/connect/login/callback?state=a&state=b',
      '/connect/callback/github?state=%00',
    ]) {
      const res = await app.request('GET', url);
      expect({ url, status: res.status }).toEqual({ url, status: 400 });
    }
  });

  it('property: any form body or query on the hosted routes answers below 500', async () => {
    const routes = [
      ['POST', `${fakeLink}/api-key`],
      ['POST', `${fakeLink}/start`],
      ['POST', `${fakeLink}/login`],
      ['GET', '/connect/callback/github'],
      ['GET', '/connect/login/callback'],
      ['GET', fakeLink],
    ] as const;
    const fields = fc.dictionary(
      fc.oneof(fc.constantFrom('csrf', 'apiKey', 'state', 'code', 'error', 'iss'), hostileString),
      fc.oneof(hostileString, fc.array(hostileString, { maxLength: 2 })),
      { maxKeys: 4 },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        fields,
        hostileString,
        async ([method, url], f, cookieValue) => {
          const sp = new URLSearchParams();
          for (const [k, v] of Object.entries(f)) for (const one of [v].flat()) sp.append(k, one);
          const cookie = `__Host-custos_csrf=${encodeURIComponent(cookieValue.replace(/[\ud800-\udfff]/g, ''))}`;
          const res =
            method === 'GET'
              ? await app.request('GET', `${url}?${sp.toString()}`, { headers: { cookie } })
              : await app.request('POST', url, {
                  payload: sp.toString(),
                  headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
                });
          expect({ url, status: res.status, body: res.raw.slice(0, 200) }).toMatchObject({
            status: expect.any(Number),
          });
          expect(res.status).toBeLessThan(500);
        },
      ),
      { numRuns: 150 },
    );
  });
});
