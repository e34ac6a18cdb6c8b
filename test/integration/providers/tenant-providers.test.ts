/**
 * Custom providers per tenant, through the real app: save, read, list and delete; the schema and key rules;
 * the SSRF guard on every URL at save (http: only for allow-listed hosts); tenant isolation; connectors,
 * credential imports and the token endpoint using a custom provider; and the audit trail.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AuditService } from '../../../src/audit/audit.service.js';
import { CustosException } from '../../../src/common/errors.js';
import { OutboundHttpClient } from '../../../src/common/outbound-http.js';
import { ProviderAppsRepository } from '../../../src/providers/provider-apps.repository.js';
import { ProviderCatalog } from '../../../src/providers/provider-catalog.js';
import { ProviderRegistry } from '../../../src/providers/provider-registry.js';
import { TenantProvidersRepository } from '../../../src/providers/tenant-providers.repository.js';
import { TenantProvidersService } from '../../../src/providers/tenant-providers.service.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, uniqueSecret, type TenantFixture } from '../../support/factories.js';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const USER_ID_TYPE = 'urn:custos:params:oauth:token-type:user-id';
/** Allow-listed without a port: saved without DNS, and https only matters for the schema. */
const SSO_HOST = 'sso.corp.test';
/** A public address literal: passes the guard's address check without DNS and without the allow-list. */
const PUBLIC_IP = '93.184.215.14';
/** A fixed header value in a definition: it must never reach the audit trail. */
const HEADER_VALUE = uniqueSecret('static-header');

let app: TestApp;
let a: TenantFixture;
let b: TenantFixture;
/** A loopback server whose host:port is allow-listed, as oidc-provider's would be. */
let loopback: http.Server;
let allowed: string;

beforeAll(async () => {
  loopback = http.createServer((_req, res) => res.end('{}'));
  await new Promise<void>((resolve) => loopback.listen(0, '127.0.0.1', resolve));
  allowed = `127.0.0.1:${(loopback.address() as AddressInfo).port}`;
  app = await startTestApp({ CUSTOS_OUTBOUND_ALLOW_HOSTS: `${allowed},${SSO_HOST}` });
  a = await createTenant(app);
  b = await createTenant(app);
});
afterAll(async () => {
  await app.close();
  await new Promise((resolve) => loopback.close(resolve));
});

const db = () => app.custos.runtime.dataSource;
const base = (t: TenantFixture) => `/v1/tenants/${t.tenantId}/providers`;
let counter = 0;
const freshKey = (label: string) => `${label}-${++counter}-${Math.random().toString(36).slice(2, 8)}`;

/** Factories: an OAuth provider on the allow-listed SSO host, and an API-key provider on a public address. */
const oauthProvider = (key: string, overrides: Record<string, unknown> = {}) => ({
  key,
  name: 'Corp SSO',
  authMode: 'oauth2',
  oauth2: {
    authorizationUrl: `https://${SSO_HOST}/oauth/authorize`,
    tokenUrl: `https://${SSO_HOST}/oauth/token`,
    scopes: ['read'],
  },
  ...overrides,
});
const apiKeyProvider = (key: string, overrides: Record<string, unknown> = {}) => ({
  key,
  name: 'Corp API',
  authMode: 'api_key',
  docsUrl: `https://${PUBLIC_IP}/docs`,
  apiKey: { verify: { url: `https://${PUBLIC_IP}/v1/me`, headers: { 'x-corp-client': HEADER_VALUE } } },
  ...overrides,
});

const put = (t: TenantFixture, key: string, body: unknown, adminKey = t.adminKey) =>
  app.request('PUT', `${base(t)}/${key}`, { key: adminKey, body });
const rowCount = async (t: TenantFixture, key: string) =>
  (
    await db().query('SELECT count(*)::int AS n FROM tenant_providers WHERE tenant_id = $1 AND key = $2', [
      t.tenantId,
      key,
    ])
  )[0].n as number;
const auditEvents = async (t: TenantFixture, action: string) =>
  (
    await app.request('GET', `/v1/tenants/${t.tenantId}/audit/events?action=${action}&limit=500`, {
      key: t.auditorKey,
    })
  ).body.items as { provider: string; details: Record<string, unknown>; actor: unknown }[];

describe('PUT /v1/tenants/:tenantId/providers/:key', () => {
  it('creates a custom provider with defaults applied, then replaces it with a new version', async () => {
    const key = freshKey('corp');
    const created = await put(a, key, oauthProvider(key));
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      key,
      custom: true,
      version: 1,
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
      definition: {
        key,
        name: 'Corp SSO',
        authMode: 'oauth2',
        oauth2: {
          authorizationUrl: `https://${SSO_HOST}/oauth/authorize`,
          tokenUrl: `https://${SSO_HOST}/oauth/token`,
          scopes: ['read'],
          scopeSeparator: ' ',
          pkce: true,
          tokenEndpointAuthMethod: 'client_secret_basic',
          authorizationParams: {},
          rotatesRefreshToken: false,
          narrowsScopesOnRefresh: false,
          defaultExpiresIn: 3600,
        },
      },
    });
    const got = await app.request('GET', `${base(a)}/${key}`, { key: a.adminKey });
    expect(got.status).toBe(200);
    expect(got.body).toEqual(created.body);

    const replaced = await put(a, key, oauthProvider(key, { name: 'Corp SSO v2' }));
    expect(replaced.status).toBe(200);
    expect(replaced.body.version).toBe(2);
    expect(replaced.body.definition.name).toBe('Corp SSO v2');
    expect(replaced.body.createdAt).toBe(created.body.createdAt);
    const [row] = await db().query(
      'SELECT tenant_id, version, definition FROM tenant_providers WHERE tenant_id = $1 AND key = $2',
      [a.tenantId, key],
    );
    expect(row).toEqual({ tenant_id: a.tenantId, version: 2, definition: replaced.body.definition });
  });

  const invalid: [string, string, string, (k: string) => unknown][] = [
    [
      'a body key that differs from the path key',
      'validation_failed',
      'key',
      (k) => oauthProvider(`${k}-other`),
    ],
    [
      'oauth2 missing for an oauth2 provider',
      'validation_failed',
      'oauth2',
      (k) => oauthProvider(k, { oauth2: undefined }),
    ],
    [
      'a reserved authorization parameter',
      'validation_failed',
      'oauth2.authorizationParams.state',
      (k) =>
        oauthProvider(k, { oauth2: { ...oauthProvider(k).oauth2, authorizationParams: { state: 'x' } } }),
    ],
    [
      'a URL with credentials',
      'validation_failed',
      'oauth2.tokenUrl',
      (k) =>
        oauthProvider(k, { oauth2: { ...oauthProvider(k).oauth2, tokenUrl: `https://u:p@${SSO_HOST}/t` } }),
    ],
    [
      'an ftp: URL',
      'validation_failed',
      'docsUrl',
      (k) => apiKeyProvider(k, { docsUrl: `ftp://${PUBLIC_IP}/docs` }),
    ],
    [
      'an http: URL with a placeholder in its host',
      'validation_failed',
      'apiKey.verify.url',
      (k) =>
        apiKeyProvider(k, {
          connectionConfig: [{ key: 'tenant', label: 'Tenant' }],
          apiKey: { verify: { url: 'http://{tenant}.corp.test/me' } },
        }),
    ],
    ['an unknown field', 'unknown_field', 'colour', (k) => ({ ...apiKeyProvider(k), colour: 'blue' })],
  ];

  it.each(invalid)('refuses %s (400 %s at %s) and stores nothing', async (_name, code, path, body) => {
    const key = freshKey('bad');
    const res = await put(a, key, body(key));
    expect(res.status).toBe(400);
    expect(res.body.error).toBe(code);
    expect(res.body.details.issues.map((i: { path: string }) => i.path)).toContain(path);
    expect(await rowCount(a, key)).toBe(0);
  });

  it('refuses a malformed path key and a body that is not an object', async () => {
    const upper = await put(a, 'Corp', apiKeyProvider('Corp'));
    expect(upper.status).toBe(400);
    expect(upper.body.error).toBe('malformed_id');
    const key = freshKey('arr');
    const array = await put(a, key, [apiKeyProvider(key)]);
    expect(array.status).toBe(400);
    expect(array.body.error).toBe('invalid_request');
    expect(await rowCount(a, key)).toBe(0);
  });

  it('refuses a catalog key with 409, for saving and for deleting', async () => {
    const res = await put(a, 'github', apiKeyProvider('github'));
    expect(res.status).toBe(409);
    expect(res.body.error).toBe('conflict');
    expect(res.body.message).toMatch(/"github" is a built-in provider/);
    const del = await app.request('DELETE', `${base(a)}/github`, { key: a.adminKey });
    expect(del.status).toBe(409);
    expect(del.body.message).toMatch(/built-in provider/);
    expect(await rowCount(a, 'github')).toBe(0);
    // The built-in definition is what the tenant gets under that key.
    const got = await app.request('GET', `${base(a)}/github`, { key: a.adminKey });
    expect(got.body.custom).toBe(false);
    expect(got.body.definition.name).toBe('GitHub');
  });

  it('lets an auditor read custom providers but not save or delete them', async () => {
    const key = freshKey('audit-only');
    expect((await put(a, key, apiKeyProvider(key), a.auditorKey)).status).toBe(403);
    expect(await rowCount(a, key)).toBe(0);
    expect((await put(a, key, apiKeyProvider(key))).status).toBe(201);
    expect((await app.request('GET', `${base(a)}/${key}`, { key: a.auditorKey })).status).toBe(200);
    expect((await app.request('GET', base(a), { key: a.auditorKey })).status).toBe(200);
    const del = await app.request('DELETE', `${base(a)}/${key}`, { key: a.auditorKey });
    expect(del.status).toBe(403);
    expect(await rowCount(a, key)).toBe(1);
  });
});

describe('the SSRF guard at save', () => {
  const refusals: [string, (k: string) => Record<string, unknown>, string, string][] = [
    [
      'the metadata address over http',
      (k) =>
        oauthProvider(k, {
          oauth2: {
            ...oauthProvider(k).oauth2,
            authorizationUrl: 'http://169.254.169.254/latest/meta-data/',
          },
        }),
      'oauth2.authorizationUrl',
      'scheme_not_allowed',
    ],
    [
      'the metadata address over https',
      (k) =>
        oauthProvider(k, {
          oauth2: { ...oauthProvider(k).oauth2, tokenUrl: 'https://169.254.169.254/token' },
        }),
      'oauth2.tokenUrl',
      'address_refused',
    ],
    [
      'the metadata address as IPv4-mapped IPv6',
      (k) =>
        oauthProvider(k, {
          oauth2: { ...oauthProvider(k).oauth2, tokenUrl: 'https://[::ffff:a9fe:a9fe]/token' },
        }),
      'oauth2.tokenUrl',
      'address_refused',
    ],
    [
      'loopback written in hex',
      (k) =>
        oauthProvider(k, {
          oauth2: { ...oauthProvider(k).oauth2, revocationUrl: 'http://0x7f000001/revoke' },
        }),
      'oauth2.revocationUrl',
      'scheme_not_allowed',
    ],
    [
      'loopback written in hex, over https',
      (k) =>
        oauthProvider(k, {
          oauth2: { ...oauthProvider(k).oauth2, revocationUrl: 'https://0x7f000001/revoke' },
        }),
      'oauth2.revocationUrl',
      'address_refused',
    ],
    [
      'loopback on a port that is not allow-listed',
      (k) =>
        oauthProvider(k, { oauth2: { ...oauthProvider(k).oauth2, tokenUrl: 'http://127.0.0.1:9/token' } }),
      'oauth2.tokenUrl',
      'scheme_not_allowed',
    ],
    [
      'a name that resolves to loopback',
      (k) => oauthProvider(k, { oauth2: { ...oauthProvider(k).oauth2, issuer: 'https://localhost/' } }),
      'oauth2.issuer',
      'address_refused',
    ],
    [
      'a private address in the verify URL',
      (k) => apiKeyProvider(k, { apiKey: { verify: { url: 'https://10.0.0.7/me' } } }),
      'apiKey.verify.url',
      'address_refused',
    ],
    [
      'a private address in docsUrl',
      (k) => apiKeyProvider(k, { docsUrl: 'https://192.168.1.1/docs' }),
      'docsUrl',
      'address_refused',
    ],
  ];

  it.each(refusals)(
    'refuses %s (400 outbound_url_refused) and stores nothing',
    async (_name, body, path, reason) => {
      const key = freshKey('ssrf');
      const res = await put(a, key, body(key));
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('outbound_url_refused');
      expect(res.body.message.startsWith(`${path}: `)).toBe(true);
      expect(res.body.details).toEqual({ reason, path });
      expect(await rowCount(a, key)).toBe(0);
      expect((await auditEvents(a, 'provider.saved')).some((e) => e.provider === key)).toBe(false);
    },
  );

  it('accepts http: for an allow-listed host:port (a test OAuth server on loopback), and https: to a public address', async () => {
    const key = freshKey('loopback');
    const res = await put(
      a,
      key,
      oauthProvider(key, {
        docsUrl: `https://${PUBLIC_IP}/docs`,
        oauth2: {
          authorizationUrl: `http://${allowed}/auth`,
          tokenUrl: `http://${allowed}/token`,
          revocationUrl: `http://${allowed}/token/revocation`,
          issuer: `http://${allowed}`,
        },
      }),
    );
    expect(res.status).toBe(201);
    expect(res.body.definition.oauth2.tokenUrl).toBe(`http://${allowed}/token`);
    expect(res.body.definition.docsUrl).toBe(`https://${PUBLIC_IP}/docs`);
  });

  describe('with names resolved by a stand-in DNS', () => {
    const dns: Record<string, string[]> = {
      'metadata.corp.example': ['169.254.169.254'],
      'mixed.corp.example': [PUBLIC_IP, '127.0.0.1'],
      'public.corp.example': [PUBLIC_IP],
      'internal.corp.example': ['10.1.2.3'],
    };
    const asked: string[] = [];
    const service = () =>
      new TenantProvidersService(
        db(),
        app.custos.app.get(TenantProvidersRepository),
        app.custos.app.get(ProviderAppsRepository),
        app.custos.app.get(AuditService),
        app.custos.app.get(ProviderCatalog),
        app.custos.app.get(ProviderRegistry),
        new OutboundHttpClient({
          resolve: async (host) => {
            asked.push(host);
            const found = dns[host];
            if (!found)
              throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
            return found;
          },
        }),
      );
    const actor = { type: 'admin_key' as const, id: null };
    const templated = (key: string, host: string) =>
      apiKeyProvider(key, {
        docsUrl: undefined,
        connectionConfig: [{ key: 'tenant', label: 'Tenant' }],
        apiKey: { verify: { url: `https://${host}/api/{tenant}/me` } },
      });
    const saveError = async (key: string, body: unknown) =>
      service()
        .saveCustomProvider(actor, a.tenantId, key, body)
        .then(
          () => undefined,
          (err: unknown) => err,
        );

    it.each([
      ['a name that resolves to the metadata address', 'metadata.corp.example'],
      ['a name with one private address among public ones', 'mixed.corp.example'],
    ])('refuses %s', async (_name, host) => {
      const key = freshKey('dns');
      const err = await saveError(
        key,
        apiKeyProvider(key, { docsUrl: undefined, apiKey: { verify: { url: `https://${host}/me` } } }),
      );
      expect(err).toBeInstanceOf(CustosException);
      expect((err as CustosException).code).toBe('outbound_url_refused');
      expect((err as CustosException).details).toEqual({
        reason: 'address_refused',
        path: 'apiKey.verify.url',
      });
      expect(await rowCount(a, key)).toBe(0);
    });

    it('judges a templated host by its fixed domain, and lets an unresolvable fixed domain through', async () => {
      asked.length = 0;
      const refusedKey = freshKey('tpl');
      const err = await saveError(refusedKey, templated(refusedKey, '{tenant}.internal.corp.example'));
      expect((err as CustosException).code).toBe('outbound_url_refused');
      expect(asked).toEqual(['internal.corp.example']);

      const okKey = freshKey('tpl');
      await expect(
        service().saveCustomProvider(
          actor,
          a.tenantId,
          okKey,
          templated(okKey, '{tenant}.wildcard.corp.example'),
        ),
      ).resolves.toMatchObject({ created: true });
      expect(asked).toContain('wildcard.corp.example');
    });

    it('refuses a fixed host that does not resolve with 400 outbound_url_unresolvable, storing nothing', async () => {
      const key = freshKey('nxdomain');
      const err = await saveError(
        key,
        apiKeyProvider(key, {
          docsUrl: undefined,
          apiKey: { verify: { url: 'https://nowhere.corp.example/me' } },
        }),
      );
      expect((err as CustosException).code).toBe('outbound_url_unresolvable');
      expect((err as CustosException).details).toMatchObject({ reason: 'dns_resolution_failed' });
      expect(await rowCount(a, key)).toBe(0);
      await expect(
        service().saveCustomProvider(
          actor,
          a.tenantId,
          key,
          apiKeyProvider(key, {
            docsUrl: undefined,
            apiKey: { verify: { url: 'https://public.corp.example/me' } },
          }),
        ),
      ).resolves.toMatchObject({ created: true });
    });
  });
});

describe('GET /v1/tenants/:tenantId/providers and tenant isolation', () => {
  it('lists the catalog merged with the tenant’s own providers, each marked, sorted by key', async () => {
    const key = freshKey('listed');
    expect((await put(a, key, apiKeyProvider(key))).status).toBe(201);
    const bKey = freshKey('b-only');
    expect((await put(b, bKey, apiKeyProvider(bKey))).status).toBe(201);

    const list = await app.request('GET', base(a), { key: a.adminKey });
    expect(list.status).toBe(200);
    const items = list.body.items as { key: string; custom: boolean; version?: number }[];
    const keys = items.map((i) => i.key);
    expect(keys).toEqual([...keys].sort());
    expect(items.find((i) => i.key === 'github')).toMatchObject({ custom: false, authMode: 'oauth2' });
    expect(items.find((i) => i.key === key)).toMatchObject({
      custom: true,
      version: 1,
      name: 'Corp API',
      authMode: 'api_key',
      docsUrl: `https://${PUBLIC_IP}/docs`,
    });
    expect(keys).not.toContain(bKey);
    const catalogSize = app.custos.app.get(ProviderCatalog).list().length;
    expect(items.filter((i) => !i.custom)).toHaveLength(catalogSize);
    // Nothing about how Custos calls the provider (verify headers) is in the list.
    expect(list.raw).not.toContain(HEADER_VALUE);
  });

  it('hides one tenant’s providers from another: 404 by key, and a foreign key is refused by the guard', async () => {
    const key = freshKey('mine');
    expect((await put(a, key, apiKeyProvider(key))).status).toBe(201);
    const fromB = await app.request('GET', `${base(b)}/${key}`, { key: b.adminKey });
    expect(fromB.status).toBe(404);
    expect(fromB.body.error).toBe('not_found');
    expect((await app.request('DELETE', `${base(b)}/${key}`, { key: b.adminKey })).status).toBe(404);

    const viaForeignKey = await app.request('GET', `${base(a)}/${key}`, { key: b.adminKey });
    expect(viaForeignKey.status).toBe(404);
    expect((await put(a, key, apiKeyProvider(key, { name: 'Hijacked' }), b.adminKey)).status).toBe(404);
    expect((await app.request('GET', `${base(a)}/${key}`, { key: a.adminKey })).body.definition.name).toBe(
      'Corp API',
    );

    // The same key is independent in each tenant.
    const inB = await put(b, key, oauthProvider(key));
    expect(inB.status).toBe(201);
    expect(inB.body.definition.authMode).toBe('oauth2');
    expect(
      (await app.request('GET', `${base(a)}/${key}`, { key: a.adminKey })).body.definition.authMode,
    ).toBe('api_key');
  });
});

describe('using a custom provider', () => {
  const connectorBody = (providers: string[], scopes?: Record<string, string[]>) => ({
    name: 'In-house agent',
    allowedProviders: providers,
    ...(scopes ? { allowedScopes: scopes } : {}),
    delegation: 'trusted',
    auth: { method: 'client_secret_basic' },
  });

  it('registers a connector allowed to use the tenant’s custom providers, and no other tenant’s', async () => {
    const oauthKey = freshKey('sso');
    const apiKey = freshKey('api');
    expect((await put(a, oauthKey, oauthProvider(oauthKey))).status).toBe(201);
    expect((await put(a, apiKey, apiKeyProvider(apiKey))).status).toBe(201);

    const ok = await app.request('POST', `/v1/tenants/${a.tenantId}/connectors`, {
      key: a.adminKey,
      body: connectorBody([oauthKey, apiKey, 'github'], { [oauthKey]: ['read'] }),
    });
    expect(ok.status).toBe(201);
    expect(ok.body.allowedProviders).toEqual([oauthKey, apiKey, 'github']);
    expect(ok.body.allowedScopes).toEqual({ [oauthKey]: ['read'] });

    const noScopes = await app.request('POST', `/v1/tenants/${a.tenantId}/connectors`, {
      key: a.adminKey,
      body: connectorBody([apiKey], { [apiKey]: ['read'] }),
    });
    expect(noScopes.status).toBe(400);
    expect(noScopes.body.message).toMatch(/does not use OAuth scopes/);

    const inB = await app.request('POST', `/v1/tenants/${b.tenantId}/connectors`, {
      key: b.adminKey,
      body: connectorBody([apiKey]),
    });
    expect(inB.status).toBe(400);
    expect(inB.body.error).toBe('validation_failed');
    expect(inB.body.message).toContain(`unknown provider "${apiKey}"`);

    // Changing the policy later is checked the same way.
    const patched = await app.request('PATCH', `/v1/tenants/${a.tenantId}/connectors/${ok.body.id}`, {
      key: a.adminKey,
      body: { allowedProviders: [apiKey, 'nope-not-here'] },
    });
    expect(patched.status).toBe(400);
    expect(patched.body.message).toContain('"nope-not-here"');
  });

  it('imports a credential for a custom provider with the type its auth mode takes, in its own tenant only', async () => {
    const key = freshKey('import');
    expect((await put(a, key, apiKeyProvider(key))).status).toBe(201);
    const url = (t: TenantFixture) => `/v1/tenants/${t.tenantId}/users/alice/connections/${key}`;
    const imported = await app.request('PUT', url(a), {
      key: a.adminKey,
      body: { type: 'api_key', apiKey: uniqueSecret('corp-key') },
    });
    expect(imported.status).toBe(201);
    expect(imported.body).toMatchObject({ provider: key, type: 'api_key', status: 'active' });

    const wrongType = await app.request('PUT', url(a), {
      key: a.adminKey,
      body: { type: 'oauth2', accessToken: uniqueSecret('at') },
    });
    expect(wrongType.status).toBe(400);
    expect(wrongType.body.error).toBe('credential_type_mismatch');

    const inB = await app.request('PUT', url(b), {
      key: b.adminKey,
      body: { type: 'api_key', apiKey: uniqueSecret('corp-key') },
    });
    expect(inB.status).toBe(404);
    expect(inB.body.error).toBe('unknown_provider');
  });

  it('refuses to delete, or to change the auth mode of, a provider that a live connection uses', async () => {
    const key = freshKey('inuse');
    expect((await put(a, key, apiKeyProvider(key))).status).toBe(201);
    const conn = await app.request('PUT', `/v1/tenants/${a.tenantId}/users/bob/connections/${key}`, {
      key: a.adminKey,
      body: { type: 'api_key', apiKey: uniqueSecret('corp-key') },
    });
    expect(conn.status).toBe(201);

    const del = await app.request('DELETE', `${base(a)}/${key}`, { key: a.adminKey });
    expect(del.status).toBe(409);
    expect(del.body.error).toBe('conflict');
    expect(del.body.details).toEqual({ liveConnections: 1 });
    const toOauth = await put(a, key, oauthProvider(key));
    expect(toOauth.status).toBe(409);
    expect((await app.request('GET', `${base(a)}/${key}`, { key: a.adminKey })).body).toMatchObject({
      version: 1,
      definition: { authMode: 'api_key' },
    });
    // Same auth mode: a replacement is fine while connections exist.
    expect((await put(a, key, apiKeyProvider(key, { name: 'Corp API (renamed)' }))).status).toBe(200);

    const revoked = await app.request('DELETE', `/v1/tenants/${a.tenantId}/connections/${conn.body.id}`, {
      key: a.adminKey,
    });
    expect(revoked.status).toBe(204);
    const deleted = await app.request('DELETE', `${base(a)}/${key}`, { key: a.adminKey });
    expect(deleted.status).toBe(204);
    expect(await rowCount(a, key)).toBe(0);
    expect((await app.request('GET', `${base(a)}/${key}`, { key: a.adminKey })).status).toBe(404);
    expect((await app.request('DELETE', `${base(a)}/${key}`, { key: a.adminKey })).status).toBe(404);
    const importAfter = await app.request('PUT', `/v1/tenants/${a.tenantId}/users/bob/connections/${key}`, {
      key: a.adminKey,
      body: { type: 'api_key', apiKey: uniqueSecret('corp-key') },
    });
    expect(importAfter.status).toBe(404);
    expect(importAfter.body.error).toBe('unknown_provider');
  });

  it('releases a custom provider’s credential at the token endpoint, and forgets the provider once deleted', async () => {
    const key = freshKey('broker');
    expect((await put(a, key, apiKeyProvider(key))).status).toBe(201);
    const connector = await app.request('POST', `/v1/tenants/${a.tenantId}/connectors`, {
      key: a.adminKey,
      body: connectorBody([key]),
    });
    expect(connector.status).toBe(201);
    const secret = uniqueSecret('corp-key');
    const conn = await app.request('PUT', `/v1/tenants/${a.tenantId}/users/carol/connections/${key}`, {
      key: a.adminKey,
      body: { type: 'api_key', apiKey: secret },
    });
    expect(conn.status).toBe(201);

    const exchange = () =>
      app.request('POST', '/oauth/token', {
        payload: new URLSearchParams({
          grant_type: EXCHANGE,
          subject_token: 'carol',
          subject_token_type: USER_ID_TYPE,
          audience: key,
        }).toString(),
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization:
            'Basic ' +
            Buffer.from(`${connector.body.clientId}:${connector.body.clientSecret}`).toString('base64'),
        },
      });
    const released = await exchange();
    expect(released.status).toBe(200);
    expect(released.body.access_token).toBe(secret);

    expect(
      (
        await app.request('DELETE', `/v1/tenants/${a.tenantId}/connections/${conn.body.id}`, {
          key: a.adminKey,
        })
      ).status,
    ).toBe(204);
    expect((await app.request('DELETE', `${base(a)}/${key}`, { key: a.adminKey })).status).toBe(204);
    // The token endpoint had the definition cached; the delete dropped it in this process.
    const after = await exchange();
    expect(after.status).toBe(400);
    expect(after.body.error).toBe('invalid_target');
    expect(after.body.error_description).toBe('Unknown provider');
  });

  it('leaves nothing behind when deleted: the OAuth app, connectors’ permission and open links go with it', async () => {
    const key = freshKey('gone');
    expect((await put(a, key, oauthProvider(key))).status).toBe(201);
    const appPut = await app.request('PUT', `${base(a)}/${key}/app`, {
      key: a.adminKey,
      body: { clientId: 'corp-client', clientSecret: uniqueSecret('corp-secret') },
    });
    expect(appPut.status).toBeLessThan(300);
    const connector = await app.request('POST', `/v1/tenants/${a.tenantId}/connectors`, {
      key: a.adminKey,
      body: connectorBody([key, 'github'], { [key]: ['read'] }),
    });
    expect(connector.status).toBe(201);
    const session = await app.request('POST', `/v1/tenants/${a.tenantId}/connect/sessions`, {
      key: a.adminKey,
      body: { userId: 'dora', provider: key },
    });
    expect(session.status).toBe(201);

    expect((await app.request('DELETE', `${base(a)}/${key}`, { key: a.adminKey })).status).toBe(204);

    const apps = await db().query('SELECT 1 FROM provider_apps WHERE tenant_id = $1 AND provider = $2', [
      a.tenantId,
      key,
    ]);
    expect(apps).toEqual([]);
    const updated = await app.request('GET', `/v1/tenants/${a.tenantId}/connectors/${connector.body.id}`, {
      key: a.adminKey,
    });
    expect(updated.body.allowedProviders).toEqual(['github']);
    expect(updated.body.allowedScopes ?? {}).toEqual({});
    const link = await app.request('GET', `/v1/tenants/${a.tenantId}/connect/sessions/${session.body.id}`, {
      key: a.adminKey,
    });
    expect(link.body.status).toBe('failed');
    const [event] = await db().query(
      `SELECT details FROM audit_events WHERE tenant_id = $1 AND action = 'provider.deleted' AND provider = $2`,
      [a.tenantId, key],
    );
    expect(event.details).toMatchObject({
      appDeleted: true,
      connectorsUpdated: 1,
      sessionsClosed: 1,
      revocationsDropped: 0,
    });

    // A provider created again under the same key (at another host) inherits none of it.
    const again = oauthProvider(key, {
      oauth2: {
        authorizationUrl: `https://${PUBLIC_IP}/authorize`,
        tokenUrl: `https://${PUBLIC_IP}/token`,
        scopes: ['read'],
      },
    });
    expect((await put(a, key, again)).status).toBe(201);
    expect((await app.request('GET', `${base(a)}/${key}/app`, { key: a.adminKey })).status).toBe(404);
    const exchange = await app.request('POST', '/oauth/token', {
      payload: new URLSearchParams({
        grant_type: EXCHANGE,
        subject_token: 'dora',
        subject_token_type: USER_ID_TYPE,
        audience: key,
      }).toString(),
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization:
          'Basic ' +
          Buffer.from(`${connector.body.clientId}:${connector.body.clientSecret}`).toString('base64'),
      },
    });
    expect(exchange.status).toBe(400);
    expect(exchange.body.error).toBe('invalid_target');
  });
});

describe('deleting a provider with revocations still queued', () => {
  it('drops them with the provider: their sealed tokens could only go to its endpoints', async () => {
    const key = freshKey('queued');
    const revocationUrl = `https://${SSO_HOST}/oauth/revoke`;
    expect(
      (await put(a, key, oauthProvider(key, { oauth2: { ...oauthProvider(key).oauth2, revocationUrl } })))
        .status,
    ).toBe(201);
    const conn = await app.request('PUT', `/v1/tenants/${a.tenantId}/users/erin/connections/${key}`, {
      key: a.adminKey,
      body: {
        type: 'oauth2',
        accessToken: uniqueSecret('corp-access'),
        refreshToken: uniqueSecret('corp-refresh'),
        scopes: ['read'],
      },
    });
    expect(conn.status).toBe(201);
    // The provider's host does not resolve here: the revocation at the provider fails and stays queued.
    expect(
      (
        await app.request('DELETE', `/v1/tenants/${a.tenantId}/connections/${conn.body.id}`, {
          key: a.adminKey,
        })
      ).status,
    ).toBe(204);
    const queued = async () =>
      (
        await db().query(
          'SELECT count(*)::int AS n FROM pending_revocations WHERE tenant_id = $1 AND provider = $2',
          [a.tenantId, key],
        )
      )[0].n as number;
    const before = await queued();
    expect(before).toBeGreaterThan(0);

    expect((await app.request('DELETE', `${base(a)}/${key}`, { key: a.adminKey })).status).toBe(204);

    expect(await queued()).toBe(0);
    const [event] = await db().query(
      `SELECT details FROM audit_events WHERE tenant_id = $1 AND action = 'provider.deleted' AND provider = $2`,
      [a.tenantId, key],
    );
    expect(event.details).toMatchObject({
      revocationsDropped: before,
      connectorsUpdated: 0,
      sessionsClosed: 0,
    });
  });
});

describe('ProviderRegistry', () => {
  const registry = () => app.custos.app.get(ProviderRegistry);

  it('answers catalog keys without I/O and custom keys from a per-tenant cache that saves invalidate', async () => {
    expect(registry().getCached(a.tenantId, 'github')?.name).toBe('GitHub');
    const key = freshKey('cached');
    expect((await put(a, key, apiKeyProvider(key))).status).toBe(201);
    expect(registry().getCached(a.tenantId, key)).toBeUndefined();
    expect((await registry().get(a.tenantId, key))?.name).toBe('Corp API');
    expect(registry().getCached(a.tenantId, key)?.name).toBe('Corp API');
    expect(registry().getCached(b.tenantId, key)).toBeUndefined();
    expect(await registry().get(b.tenantId, key)).toBeUndefined();

    // A change made by another process (here: straight in the database) shows only when asked fresh ...
    await db().query(
      `UPDATE tenant_providers SET definition = jsonb_set(definition, '{name}', '"Elsewhere"')
        WHERE tenant_id = $1 AND key = $2`,
      [a.tenantId, key],
    );
    expect((await registry().get(a.tenantId, key))?.name).toBe('Corp API');
    expect((await registry().get(a.tenantId, key, { fresh: true }))?.name).toBe('Elsewhere');
    // ... while a save through this process drops the cached copy at once.
    expect((await put(a, key, apiKeyProvider(key, { name: 'Saved here' }))).status).toBe(200);
    expect((await registry().get(a.tenantId, key))?.name).toBe('Saved here');

    const listed = await registry().list(a.tenantId);
    expect(listed.find((p) => p.definition.key === key)?.custom).toBe(true);
    expect(listed.find((p) => p.definition.key === 'github')?.custom).toBe(false);
    // Definitions handed out are frozen: a caller cannot change what the next caller sees.
    expect(Object.isFrozen(registry().getCached(a.tenantId, key)?.apiKey?.verify)).toBe(true);
  });
});

describe('deleting while a connection is being written', () => {
  it('waits for a transaction that holds the provider (as a credential import does), then sees its connection', async () => {
    const key = freshKey('locked');
    expect((await put(a, key, apiKeyProvider(key))).status).toBe(201);
    const runner = db().createQueryRunner();
    await runner.connect();
    try {
      await runner.startTransaction();
      const held = await app.custos.app.get(ProviderRegistry).lockCustom(runner.manager, a.tenantId, key);
      expect(held?.key).toBe(key);
      let settled = false;
      const deletion = app.request('DELETE', `${base(a)}/${key}`, { key: a.adminKey }).then((res) => {
        settled = true;
        return res;
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(settled).toBe(false);
      await runner.query(
        `INSERT INTO connections (id, tenant_id, user_id, provider, type, status, version)
         VALUES (gen_random_uuid(), $1, 'dave', $2, 'api_key', 'active', 1)`,
        [a.tenantId, key],
      );
      await runner.commitTransaction();
      const res = await deletion;
      expect(res.status).toBe(409);
      expect(res.body.details).toEqual({ liveConnections: 1 });
      expect(await rowCount(a, key)).toBe(1);
    } finally {
      if (runner.isTransactionActive) await runner.rollbackTransaction();
      await runner.release();
    }
  });
});

describe('audit', () => {
  it('records saves and deletes with the key and the URLs’ hosts, never header values', async () => {
    const key = freshKey('audited');
    expect((await put(a, key, apiKeyProvider(key))).status).toBe(201);
    expect((await put(a, key, apiKeyProvider(key, { name: 'Corp API 2' }))).status).toBe(200);
    expect((await app.request('DELETE', `${base(a)}/${key}`, { key: a.adminKey })).status).toBe(204);

    const saved = (await auditEvents(a, 'provider.saved')).filter((e) => e.provider === key);
    expect(saved.map((e) => e.details)).toEqual([
      { key, created: false, version: 2, name: 'Corp API 2', authMode: 'api_key', hosts: [PUBLIC_IP] },
      { key, created: true, version: 1, name: 'Corp API', authMode: 'api_key', hosts: [PUBLIC_IP] },
    ]);
    expect(saved[0].actor).toEqual({ type: 'admin_key', id: a.adminKeyId });
    const deleted = (await auditEvents(a, 'provider.deleted')).filter((e) => e.provider === key);
    expect(deleted.map((e) => e.details)).toEqual([
      {
        key,
        version: 2,
        hosts: [PUBLIC_IP],
        appDeleted: false,
        connectorsUpdated: 0,
        sessionsClosed: 0,
        revocationsDropped: 0,
      },
    ]);

    const raw = await db().query(
      `SELECT details::text AS d FROM audit_events WHERE tenant_id = $1 AND action LIKE 'provider.%'`,
      [a.tenantId],
    );
    expect(raw.length).toBeGreaterThanOrEqual(3);
    for (const r of raw as { d: string }[]) expect(r.d).not.toContain(HEADER_VALUE);
  });

  it('lists every URL host of an OAuth provider, including allow-listed host:port', async () => {
    const key = freshKey('hosts');
    const res = await put(
      a,
      key,
      oauthProvider(key, {
        oauth2: { ...oauthProvider(key).oauth2, revocationUrl: `http://${allowed}/revoke` },
      }),
    );
    expect(res.status).toBe(201);
    const [event] = (await auditEvents(a, 'provider.saved')).filter((e) => e.provider === key);
    expect(event.details.hosts).toEqual([allowed, SSO_HOST].sort());
  });
});
