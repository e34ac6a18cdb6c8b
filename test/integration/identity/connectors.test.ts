import { createHash, generateKeyPairSync } from 'node:crypto';
import { ClientAuthenticator, ClientAuthError } from '../../../src/identity/client-auth.js';
import { ConnectorsService } from '../../../src/identity/connectors.service.js';
import { IdentityProvidersService } from '../../../src/identity/identity-providers.service.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';
import { dropAuditTrigger } from '../../support/audit.js';

let app: TestApp;
let a: TenantFixture;
let b: TenantFixture;
/** Every client secret handed out in this file: none may reappear anywhere after its one response. */
const issuedSecrets: string[] = [];

// Allow-listed hosts skip DNS and the address checks, so a jwksUri can be saved without a network.
const JWKS_HOST = 'jwks.example.test';

beforeAll(async () => {
  app = await startTestApp({ CUSTOS_OUTBOUND_ALLOW_HOSTS: JWKS_HOST });
  a = await createTenant(app);
  b = await createTenant(app);
});
afterAll(() => app.close());

const connectors = () => app.custos.app.get(ConnectorsService);
const identityProviders = () => app.custos.app.get(IdentityProvidersService);
const db = () => app.custos.runtime.dataSource;
const base = (t: TenantFixture) => `/v1/tenants/${t.tenantId}/connectors`;
const idpBase = (t: TenantFixture) => `/v1/tenants/${t.tenantId}/identity-providers`;
const rawRow = async (id: string) => (await db().query('SELECT * FROM connectors WHERE id = $1', [id]))[0];
const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * The connector behind a client id and secret, or null when client authentication refuses them, read fresh
 * as the connector API does (client-auth.ts holds the one secret check).
 */
async function authenticateSecret(clientId: string, secret: string) {
  const clients = app.custos.app.get(ClientAuthenticator);
  clients.forget(clientId);
  const credentials = `${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`;
  try {
    const client = await clients.authenticate({
      authorization: `Basic ${Buffer.from(credentials).toString('base64')}`,
      clientId: undefined,
      clientSecret: undefined,
      clientAssertion: undefined,
      clientAssertionType: undefined,
    });
    return client.connector;
  } catch (err) {
    if (err instanceof ClientAuthError) return null;
    throw err;
  }
}

/** Factories: a public JWK (and, for the negative tests, its private form). */
function rsaJwk(kid: string) {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    pub: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' },
    priv: { ...privateKey.export({ format: 'jwk' }), kid },
  };
}
function ecJwk(kid: string) {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    pub: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256' },
    priv: { ...privateKey.export({ format: 'jwk' }), kid },
  };
}
const rsa = rsaJwk('rsa-1');
const ec = ecJwk('ec-1');

const secretConnector = (overrides: Record<string, unknown> = {}) => ({
  name: 'Docs MCP',
  owner: 'platform-team',
  allowedProviders: ['github', 'google'],
  allowedScopes: { github: ['repo', 'read:user'] },
  delegation: 'user_token',
  auth: { method: 'client_secret_basic' },
  ...overrides,
});

async function create(t: TenantFixture, body: unknown, key = t.adminKey) {
  const res = await app.request('POST', base(t), { key, body });
  if (typeof res.body?.clientSecret === 'string') issuedSecrets.push(res.body.clientSecret);
  return res;
}

describe('POST /v1/tenants/:tenantId/connectors', () => {
  it('registers a client_secret_basic connector, shows its secret once and stores only its SHA-256', async () => {
    const res = await create(a, secretConnector());
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      id: expect.any(String),
      clientId: expect.stringMatching(/^cus_ci_[A-Za-z0-9_-]{22}$/),
      clientSecret: expect.stringMatching(/^cus_cs_[A-Za-z0-9_-]{43}$/),
      name: 'Docs MCP',
      owner: 'platform-team',
      allowedProviders: ['github', 'google'],
      allowedScopes: { github: ['repo', 'read:user'] },
      delegation: 'user_token',
      auth: { method: 'client_secret_basic' },
      disabled: false,
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
    });
    const secret: string = res.body.clientSecret;

    const row = await rawRow(res.body.id);
    expect(row.secret_hash.equals(sha256(secret))).toBe(true);
    expect(row.tenant_id).toBe(a.tenantId);
    expect(row.version).toBe(1);
    expect(JSON.stringify(row) + row.secret_hash.toString('latin1')).not.toContain(secret);

    const got = await app.request('GET', `${base(a)}/${res.body.id}`, { key: a.adminKey });
    expect(got.status).toBe(200);
    const { clientSecret: _shown, ...withoutSecret } = res.body;
    expect(got.body).toEqual(withoutSecret);
    expect(got.raw).not.toContain(secret);
  });

  it('registers a private_key_jwt connector with inline public keys, without any client secret', async () => {
    const res = await create(
      a,
      secretConnector({
        owner: undefined,
        delegation: 'trusted',
        auth: { method: 'private_key_jwt', jwks: { keys: [rsa.pub, ec.pub] } },
      }),
    );
    expect(res.status).toBe(201);
    expect(res.body.clientSecret).toBeUndefined();
    expect(res.body.owner).toBeNull();
    expect(res.body.delegation).toBe('trusted');
    expect(res.body.auth).toEqual({ method: 'private_key_jwt', jwks: { keys: [rsa.pub, ec.pub] } });
    const row = await rawRow(res.body.id);
    expect(row.secret_hash).toBeNull();
    expect(row.auth_method).toBe('private_key_jwt');
  });

  it('registers a private_key_jwt connector with a jwksUri that passes the outbound guard', async () => {
    const jwksUri = `https://${JWKS_HOST}/.well-known/jwks.json`;
    const res = await create(
      a,
      secretConnector({ allowedScopes: undefined, auth: { method: 'private_key_jwt', jwksUri } }),
    );
    expect(res.status).toBe(201);
    expect(res.body.auth).toEqual({ method: 'private_key_jwt', jwksUri });
    expect(res.body.allowedScopes).toEqual({});
    const found = await connectors().credentialsByClientId(res.body.clientId);
    expect(found).toMatchObject({
      connectorId: res.body.id,
      tenantId: a.tenantId,
      jwksUri,
      jwks: null,
      secretHash: null,
    });
  });

  it('removes duplicate providers and scopes', async () => {
    const res = await create(
      a,
      secretConnector({
        allowedProviders: ['github', 'github', 'openai'],
        allowedScopes: { github: ['repo', 'repo'] },
      }),
    );
    expect(res.status).toBe(201);
    expect(res.body.allowedProviders).toEqual(['github', 'openai']);
    expect(res.body.allowedScopes).toEqual({ github: ['repo'] });
  });

  const bad: [string, unknown, string][] = [
    ['an unknown field', secretConnector({ colour: 'blue' }), 'unknown_field'],
    [
      'an unknown field inside auth',
      secretConnector({ auth: { method: 'client_secret_basic', x: 1 } }),
      'unknown_field',
    ],
    [
      'a provider missing from the catalog',
      secretConnector({ allowedProviders: ['github', 'nope'] }),
      'validation_failed',
    ],
    [
      'allowedScopes naming a provider that is not allowed',
      secretConnector({ allowedScopes: { google: ['email'] }, allowedProviders: ['github'] }),
      'validation_failed',
    ],
    [
      'scopes for a provider without OAuth scopes',
      secretConnector({ allowedProviders: ['openai'], allowedScopes: { openai: ['x'] } }),
      'validation_failed',
    ],
    ['no allowed providers', secretConnector({ allowedProviders: [] }), 'validation_failed'],
    ['an unknown delegation', secretConnector({ delegation: 'impersonate' }), 'validation_failed'],
    ['an unknown auth method', secretConnector({ auth: { method: 'none' } }), 'validation_failed'],
    [
      'a private RSA JWK',
      secretConnector({ auth: { method: 'private_key_jwt', jwks: { keys: [rsa.priv] } } }),
      'validation_failed',
    ],
    [
      'a private EC JWK',
      secretConnector({ auth: { method: 'private_key_jwt', jwks: { keys: [ec.priv] } } }),
      'validation_failed',
    ],
    [
      'a symmetric JWK',
      secretConnector({
        auth: { method: 'private_key_jwt', jwks: { keys: [{ kty: 'oct', k: 'c2VjcmV0' }] } },
      }),
      'validation_failed',
    ],
    [
      'a key that is not a valid public key',
      secretConnector({
        auth: { method: 'private_key_jwt', jwks: { keys: [{ ...ec.pub, x: 'AAAA' }] } },
      }),
      'validation_failed',
    ],
    [
      'an RSA key shorter than 2048 bits',
      secretConnector({
        auth: { method: 'private_key_jwt', jwks: { keys: [{ ...rsa.pub, n: 'AQAB' }] } },
      }),
      'validation_failed',
    ],
    [
      'an alg that does not fit the key',
      secretConnector({
        auth: { method: 'private_key_jwt', jwks: { keys: [{ ...ec.pub, alg: 'RS256' }] } },
      }),
      'validation_failed',
    ],
    [
      'two keys with one kid',
      secretConnector({
        auth: { method: 'private_key_jwt', jwks: { keys: [ec.pub, { ...rsa.pub, kid: ec.pub.kid }] } },
      }),
      'validation_failed',
    ],
    [
      'more than 10 keys',
      secretConnector({
        auth: {
          method: 'private_key_jwt',
          jwks: { keys: Array.from({ length: 11 }, (_, i) => ({ ...ec.pub, kid: `k${i}` })) },
        },
      }),
      'validation_failed',
    ],
    [
      'both jwks and jwksUri',
      secretConnector({
        auth: { method: 'private_key_jwt', jwks: { keys: [ec.pub] }, jwksUri: `https://${JWKS_HOST}/jwks` },
      }),
      'validation_failed',
    ],
    [
      'neither jwks nor jwksUri',
      secretConnector({ auth: { method: 'private_key_jwt' } }),
      'validation_failed',
    ],
    [
      'a jwksUri at the metadata address',
      secretConnector({ auth: { method: 'private_key_jwt', jwksUri: 'https://169.254.169.254/jwks' } }),
      'outbound_url_refused',
    ],
    [
      'an http jwksUri on loopback (not allow-listed)',
      secretConnector({ auth: { method: 'private_key_jwt', jwksUri: 'http://127.0.0.1/jwks' } }),
      'outbound_url_refused',
    ],
    [
      'a jwksUri with credentials',
      secretConnector({ auth: { method: 'private_key_jwt', jwksUri: `https://u:p@${JWKS_HOST}/jwks` } }),
      'outbound_url_refused',
    ],
    [
      'a jwksUri that is not a URL',
      secretConnector({ auth: { method: 'private_key_jwt', jwksUri: 'jwks' } }),
      'validation_failed',
    ],
  ];
  it.each(bad)('refuses %s with 400', async (_label, body, error) => {
    const before = (await db().query('SELECT count(*)::int AS n FROM connectors'))[0].n;
    const res = await create(a, body);
    expect(res.status).toBe(400);
    expect(res.body.error).toBe(error);
    expect(res.body.clientSecret).toBeUndefined();
    expect((await db().query('SELECT count(*)::int AS n FROM connectors'))[0].n).toBe(before);
  });

  it('names the offending provider and never echoes private key material', async () => {
    const unknown = await create(a, secretConnector({ allowedProviders: ['no-such-provider'] }));
    expect(unknown.body.message).toContain('"no-such-provider"');
    const priv = await create(
      a,
      secretConnector({ auth: { method: 'private_key_jwt', jwks: { keys: [rsa.priv] } } }),
    );
    expect(priv.body.message).toContain('private member "d"');
    expect(priv.raw).not.toContain(String(rsa.priv.d));
    expect(app.logs.join('')).not.toContain(String(rsa.priv.d));
  });

  it('is for tenant admin keys only', async () => {
    const auditor = await create(a, secretConnector(), a.auditorKey);
    expect(auditor.status).toBe(403);
    const platform = await create(a, secretConnector(), app.bootstrapKey);
    expect(platform.status).toBe(403);
    const none = await app.request('GET', base(a));
    expect(none.status).toBe(401);
  });
});

describe('PATCH, DELETE and secret rotation', () => {
  it('changes policy, bumps the version, and disabling stops the connector at once', async () => {
    const c = await create(a, secretConnector());
    const secret: string = c.body.clientSecret;
    const patched = await app.request('PATCH', `${base(a)}/${c.body.id}`, {
      key: a.adminKey,
      body: { allowedProviders: ['github', 'slack'], allowedScopes: { slack: ['chat:write'] }, owner: null },
    });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({
      id: c.body.id,
      clientId: c.body.clientId,
      owner: null,
      allowedProviders: ['github', 'slack'],
      allowedScopes: { slack: ['chat:write'] },
      disabled: false,
    });
    expect(patched.body.clientSecret).toBeUndefined();
    expect(patched.raw).not.toContain(secret);
    expect((await rawRow(c.body.id)).version).toBe(2);
    expect(await authenticateSecret(c.body.clientId, secret)).toMatchObject({
      allowedProviders: ['github', 'slack'],
    });

    const disabled = await app.request('PATCH', `${base(a)}/${c.body.id}`, {
      key: a.adminKey,
      body: { disabled: true },
    });
    expect(disabled.status).toBe(200);
    expect(disabled.body.disabled).toBe(true);
    const row = await rawRow(c.body.id);
    expect(row.disabled_at).toBeInstanceOf(Date);
    expect(row.version).toBe(3);
    expect(await authenticateSecret(c.body.clientId, secret)).toBeNull();
    expect((await connectors().credentialsByClientId(c.body.clientId))?.disabled).toBe(true);

    // Disabling again keeps the original moment.
    await app.request('PATCH', `${base(a)}/${c.body.id}`, { key: a.adminKey, body: { disabled: true } });
    expect((await rawRow(c.body.id)).disabled_at).toEqual(row.disabled_at);

    const enabled = await app.request('PATCH', `${base(a)}/${c.body.id}`, {
      key: a.adminKey,
      body: { disabled: false, name: 'Docs MCP v2' },
    });
    expect(enabled.body).toMatchObject({ disabled: false, name: 'Docs MCP v2' });
    expect(await authenticateSecret(c.body.clientId, secret)).not.toBeNull();
  });

  it('validates a PATCH the same way as a create', async () => {
    const c = await create(a, secretConnector());
    const cases: [unknown, number, string][] = [
      [{ clientSecret: 'x' }, 400, 'unknown_field'],
      [{ auth: { method: 'client_secret_basic' } }, 400, 'unknown_field'],
      [{}, 400, 'validation_failed'],
      [{ allowedProviders: ['nope'] }, 400, 'validation_failed'],
      // github's scope list would be left naming a provider that is no longer allowed.
      [{ allowedProviders: ['google'] }, 400, 'validation_failed'],
      [{ allowedScopes: { slack: ['chat:write'] } }, 400, 'validation_failed'],
      [{ delegation: 'x' }, 400, 'validation_failed'],
    ];
    for (const [body, status, error] of cases) {
      const res = await app.request('PATCH', `${base(a)}/${c.body.id}`, { key: a.adminKey, body });
      expect([res.status, res.body.error]).toEqual([status, error]);
    }
    expect((await rawRow(c.body.id)).version).toBe(1);
  });

  it('rotates the client secret: the old one stops authenticating, the new one works', async () => {
    const c = await create(a, secretConnector());
    const old: string = c.body.clientSecret;
    const rotated = await app.request('POST', `${base(a)}/${c.body.id}/secret`, { key: a.adminKey });
    expect(rotated.status).toBe(200);
    expect(Object.keys(rotated.body)).toEqual(['clientSecret']);
    const fresh: string = rotated.body.clientSecret;
    issuedSecrets.push(fresh);
    expect(fresh).toMatch(/^cus_cs_/);
    expect(fresh).not.toBe(old);
    expect(await authenticateSecret(c.body.clientId, old)).toBeNull();
    expect(await authenticateSecret(c.body.clientId, fresh)).toEqual({
      connectorId: c.body.id,
      tenantId: a.tenantId,
      clientId: c.body.clientId,
      name: 'Docs MCP',
      owner: 'platform-team',
      delegation: 'user_token',
      authMethod: 'client_secret_basic',
      allowedProviders: ['github', 'google'],
      allowedScopes: { github: ['repo', 'read:user'] },
      jwks: null,
      jwksUri: null,
      secretHash: sha256(fresh),
      version: 2,
      disabled: false,
    });
    const row = await rawRow(c.body.id);
    expect(row.secret_hash.equals(sha256(fresh))).toBe(true);
    expect(row.version).toBe(2);
  });

  it('refuses to rotate a secret for a private_key_jwt connector', async () => {
    const c = await create(
      a,
      secretConnector({ auth: { method: 'private_key_jwt', jwks: { keys: [ec.pub] } } }),
    );
    const res = await app.request('POST', `${base(a)}/${c.body.id}/secret`, { key: a.adminKey });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_request');
    expect((await rawRow(c.body.id)).secret_hash).toBeNull();
  });

  it('deletes a connector (204); it is gone and no longer authenticates', async () => {
    const c = await create(a, secretConnector());
    const del = await app.request('DELETE', `${base(a)}/${c.body.id}`, { key: a.adminKey });
    expect(del.status).toBe(204);
    expect(await rawRow(c.body.id)).toBeUndefined();
    expect((await app.request('GET', `${base(a)}/${c.body.id}`, { key: a.adminKey })).status).toBe(404);
    expect((await app.request('DELETE', `${base(a)}/${c.body.id}`, { key: a.adminKey })).status).toBe(404);
    expect(await authenticateSecret(c.body.clientId, c.body.clientSecret)).toBeNull();
  });

  it('answers 400 malformed_id for a connector id that is not a UUID', async () => {
    const res = await app.request('GET', `${base(a)}/not-a-uuid`, { key: a.adminKey });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('malformed_id');
  });
});

describe('client secret authentication and credentialsByClientId', () => {
  it('returns null for a wrong secret, an unknown client and a private_key_jwt client', async () => {
    const c = await create(a, secretConnector());
    const jwt = await create(
      a,
      secretConnector({ auth: { method: 'private_key_jwt', jwks: { keys: [ec.pub] } } }),
    );
    expect(await authenticateSecret(c.body.clientId, `${c.body.clientSecret}x`)).toBeNull();
    expect(await authenticateSecret(c.body.clientId, 'cus_cs_' + 'A'.repeat(43))).toBeNull();
    expect(await authenticateSecret(c.body.clientId, '')).toBeNull();
    expect(await authenticateSecret('cus_ci_' + 'A'.repeat(22), c.body.clientSecret)).toBeNull();
    expect(await authenticateSecret(jwt.body.clientId, c.body.clientSecret)).toBeNull();
    expect(await authenticateSecret(c.body.clientId, c.body.clientSecret)).toMatchObject({
      connectorId: c.body.id,
    });
  });

  it('finds a connector by client_id with its keys, and nothing for an unknown one', async () => {
    const jwt = await create(
      a,
      secretConnector({ auth: { method: 'private_key_jwt', jwks: { keys: [rsa.pub] } } }),
    );
    expect(await connectors().credentialsByClientId(jwt.body.clientId)).toEqual({
      connectorId: jwt.body.id,
      tenantId: a.tenantId,
      clientId: jwt.body.clientId,
      name: 'Docs MCP',
      owner: 'platform-team',
      delegation: 'user_token',
      authMethod: 'private_key_jwt',
      allowedProviders: ['github', 'google'],
      allowedScopes: { github: ['repo', 'read:user'] },
      jwks: { keys: [rsa.pub] },
      jwksUri: null,
      secretHash: null,
      version: 1,
      disabled: false,
    });
    expect(await connectors().credentialsByClientId('cus_ci_' + 'B'.repeat(22))).toBeNull();
    expect(await connectors().credentialsByClientId("' OR 1=1 --")).toBeNull();
  });
});

describe('tenant isolation', () => {
  it('gives tenant B’s key 404 for tenant A’s connectors and lists only a tenant’s own', async () => {
    const c = await create(a, secretConnector({ name: 'A only' }));
    const bOwn = await create(b, secretConnector({ name: 'B only' }));
    const attempts = [
      app.request('GET', `${base(a)}/${c.body.id}`, { key: b.adminKey }),
      app.request('GET', base(a), { key: b.adminKey }),
      app.request('PATCH', `${base(a)}/${c.body.id}`, { key: b.adminKey, body: { disabled: true } }),
      app.request('DELETE', `${base(a)}/${c.body.id}`, { key: b.adminKey }),
      app.request('POST', `${base(a)}/${c.body.id}/secret`, { key: b.adminKey }),
      create(a, secretConnector(), b.adminKey),
      // B's own path cannot reach A's connector id either.
      app.request('GET', `${base(b)}/${c.body.id}`, { key: b.adminKey }),
      app.request('PATCH', `${base(b)}/${c.body.id}`, { key: b.adminKey, body: { disabled: true } }),
      app.request('DELETE', `${base(b)}/${c.body.id}`, { key: b.adminKey }),
      app.request('POST', `${base(b)}/${c.body.id}/secret`, { key: b.adminKey }),
    ];
    for (const res of await Promise.all(attempts)) {
      expect([res.status, res.body.error]).toEqual([404, 'not_found']);
    }
    const row = await rawRow(c.body.id);
    expect(row.disabled_at).toBeNull();
    expect(row.version).toBe(1);
    expect(row.secret_hash.equals(sha256(c.body.clientSecret))).toBe(true);

    const listB = await app.request('GET', base(b), { key: b.adminKey });
    expect(listB.body.items.map((i: { id: string }) => i.id)).toEqual([bOwn.body.id]);
    const listA = await app.request('GET', base(a), { key: a.adminKey });
    expect(listA.body.items.map((i: { id: string }) => i.id)).toContain(c.body.id);
    expect(listA.body.items.map((i: { id: string }) => i.id)).not.toContain(bOwn.body.id);
  });
});

describe('identity providers', () => {
  const idp = (overrides: Record<string, unknown> = {}) => ({
    issuer: 'https://login.example.com/',
    jwksUri: `https://${JWKS_HOST}/idp/jwks`,
    audiences: ['custos'],
    ...overrides,
  });
  const put = (t: TenantFixture, name: string, body: unknown, key = t.adminKey) =>
    app.request('PUT', `${idpBase(t)}/${name}`, { key, body });

  it('creates (201) with defaults, replaces in place (200), lists, reads and deletes (204)', async () => {
    const created = await put(a, 'okta', idp());
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      name: 'okta',
      issuer: 'https://login.example.com/',
      jwksUri: `https://${JWKS_HOST}/idp/jwks`,
      jwks: null,
      audiences: ['custos'],
      userClaim: 'sub',
      algorithms: ['RS256', 'ES256'],
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
    });
    const replaced = await put(
      a,
      'okta',
      idp({
        jwksUri: undefined,
        jwks: { keys: [ec.pub] },
        audiences: ['custos', 'api://custos', 'custos'],
        userClaim: 'email',
        algorithms: ['ES256'],
      }),
    );
    expect(replaced.status).toBe(200);
    expect(replaced.body).toMatchObject({
      jwksUri: null,
      jwks: { keys: [ec.pub] },
      audiences: ['custos', 'api://custos'],
      userClaim: 'email',
      algorithms: ['ES256'],
      createdAt: created.body.createdAt,
    });
    const rows = await db().query('SELECT id FROM identity_providers WHERE tenant_id = $1', [a.tenantId]);
    expect(rows).toHaveLength(1);

    await put(a, 'azure', idp({ issuer: 'https://sts.example.net/tenant/v2.0' }));
    const list = await app.request('GET', idpBase(a), { key: a.adminKey });
    expect(list.status).toBe(200);
    expect(list.body.items.map((i: { name: string }) => i.name)).toEqual(['azure', 'okta']);
    const one = await app.request('GET', `${idpBase(a)}/okta`, { key: a.adminKey });
    expect(one.body).toEqual(replaced.body);
    expect(await identityProviders().findByIssuer(a.tenantId, 'https://login.example.com/')).toEqual(
      replaced.body,
    );
    expect(await identityProviders().findByIssuer(a.tenantId, 'https://login.example.com')).toBeNull();

    const del = await app.request('DELETE', `${idpBase(a)}/azure`, { key: a.adminKey });
    expect(del.status).toBe(204);
    expect((await app.request('DELETE', `${idpBase(a)}/azure`, { key: a.adminKey })).status).toBe(404);
    expect((await app.request('GET', `${idpBase(a)}/azure`, { key: a.adminKey })).status).toBe(404);
    await app.request('DELETE', `${idpBase(a)}/okta`, { key: a.adminKey });
  });

  it('refuses a second identity provider with the same issuer (409), on create and on replace', async () => {
    expect((await put(a, 'first', idp({ issuer: 'https://dup.example.com' }))).status).toBe(201);
    const dup = await put(a, 'second', idp({ issuer: 'https://dup.example.com' }));
    expect([dup.status, dup.body.error]).toEqual([409, 'conflict']);
    expect((await put(a, 'second', idp({ issuer: 'https://other.example.com' }))).status).toBe(201);
    const moved = await put(a, 'second', idp({ issuer: 'https://dup.example.com' }));
    expect([moved.status, moved.body.error]).toEqual([409, 'conflict']);
    // Another tenant may trust the same issuer.
    expect((await put(b, 'first', idp({ issuer: 'https://dup.example.com' }))).status).toBe(201);
  });

  it('keeps concurrent first saves of one name to one row', async () => {
    const results = await Promise.all(
      Array.from({ length: 6 }, () => put(a, 'racer', idp({ issuer: 'https://race.example.com' }))),
    );
    expect(results.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 200, 201]);
    const rows = await db().query('SELECT id FROM identity_providers WHERE tenant_id = $1 AND name = $2', [
      a.tenantId,
      'racer',
    ]);
    expect(rows).toHaveLength(1);
  });

  const bad: [string, string, unknown, string][] = [
    ['a malformed name', 'Bad.Name', idp(), 'malformed_id'],
    ['an unknown field', 'x', idp({ clientSecret: 'x' }), 'unknown_field'],
    ['an issuer that is not a URL', 'x', idp({ issuer: 'example' }), 'validation_failed'],
    ['no audiences', 'x', idp({ audiences: [] }), 'validation_failed'],
    ['an empty audience', 'x', idp({ audiences: [''] }), 'validation_failed'],
    [
      '21 audiences',
      'x',
      idp({ audiences: Array.from({ length: 21 }, (_, i) => `aud${i}`) }),
      'validation_failed',
    ],
    ['an unsupported algorithm', 'x', idp({ algorithms: ['HS256'] }), 'validation_failed'],
    ['both jwks and jwksUri', 'x', idp({ jwks: { keys: [ec.pub] } }), 'validation_failed'],
    ['neither jwks nor jwksUri', 'x', idp({ jwksUri: undefined }), 'validation_failed'],
    ['a private JWK', 'x', idp({ jwksUri: undefined, jwks: { keys: [ec.priv] } }), 'validation_failed'],
    [
      'a jwksUri at the metadata address',
      'x',
      idp({ jwksUri: 'https://169.254.169.254/jwks' }),
      'outbound_url_refused',
    ],
    ['an http jwksUri on loopback', 'x', idp({ jwksUri: 'http://127.0.0.1/jwks' }), 'outbound_url_refused'],
  ];
  it.each(bad)('refuses %s with 400', async (_label, name, body, error) => {
    const res = await put(a, name, body);
    expect([res.status, res.body.error]).toEqual([400, error]);
    const rows = await db().query('SELECT id FROM identity_providers WHERE tenant_id = $1 AND name = $2', [
      a.tenantId,
      name,
    ]);
    expect(rows).toHaveLength(0);
  });

  it('is per tenant and for tenant admin keys only', async () => {
    await put(a, 'private-idp', idp({ issuer: 'https://a-only.example.com' }));
    expect((await put(a, 'x', idp(), a.auditorKey)).status).toBe(403);
    for (const res of [
      await app.request('GET', idpBase(a), { key: b.adminKey }),
      await app.request('GET', `${idpBase(a)}/private-idp`, { key: b.adminKey }),
      await app.request('DELETE', `${idpBase(a)}/private-idp`, { key: b.adminKey }),
      await put(a, 'private-idp', idp(), b.adminKey),
      await app.request('GET', `${idpBase(b)}/private-idp`, { key: b.adminKey }),
      await app.request('DELETE', `${idpBase(b)}/private-idp`, { key: b.adminKey }),
    ]) {
      expect([res.status, res.body.error]).toEqual([404, 'not_found']);
    }
    const listB = await app.request('GET', idpBase(b), { key: b.adminKey });
    expect(listB.body.items.map((i: { name: string }) => i.name)).not.toContain('private-idp');
    expect(await identityProviders().findByIssuer(b.tenantId, 'https://a-only.example.com')).toBeNull();
  });
});

describe('audit', () => {
  it('records every registration change in the same transaction, with ids and never a secret', async () => {
    const c = await create(a, secretConnector({ name: 'Audited' }));
    const id: string = c.body.id;
    await app.request('PATCH', `${base(a)}/${id}`, { key: a.adminKey, body: { name: 'Audited 2' } });
    await app.request('PATCH', `${base(a)}/${id}`, { key: a.adminKey, body: { disabled: true } });
    const rotated = await app.request('POST', `${base(a)}/${id}/secret`, { key: a.adminKey });
    issuedSecrets.push(rotated.body.clientSecret);
    await app.request('DELETE', `${base(a)}/${id}`, { key: a.adminKey });
    await app.request('PUT', `${idpBase(a)}/audited`, {
      key: a.adminKey,
      body: { issuer: 'https://audited.example.com', jwks: { keys: [rsa.pub] }, audiences: ['custos'] },
    });
    await app.request('DELETE', `${idpBase(a)}/audited`, { key: a.adminKey });

    const events = await app.request('GET', `/v1/tenants/${a.tenantId}/audit/events?limit=500`, {
      key: a.auditorKey,
    });
    const mine = events.body.items
      .filter(
        (e: { action: string; details: Record<string, unknown> }) =>
          e.details.connectorId === id || e.details.name === 'audited',
      )
      .reverse();
    expect(mine.map((e: { action: string }) => e.action)).toEqual([
      'connector.created',
      'connector.updated',
      'connector.disabled',
      'connector.secret_rotated',
      'connector.deleted',
      'identity_provider.saved',
      'identity_provider.deleted',
    ]);
    for (const e of mine) {
      expect(e.outcome).toBe('allowed');
      expect(e.actor).toEqual({ type: 'admin_key', id: a.adminKeyId });
    }
    expect(mine[0].details).toMatchObject({
      clientId: c.body.clientId,
      name: 'Audited',
      auth: { method: 'client_secret_basic' },
    });
    expect(mine[1].details).toMatchObject({ changed: ['name'], name: 'Audited 2' });
    expect(mine[5].details).toMatchObject({ created: true, keyCount: 1, kids: ['rsa-1'] });
  });

  it('writes nothing when its audit event cannot be written (all or nothing)', async () => {
    await db()
      .query(`CREATE OR REPLACE FUNCTION test_fail_connector_audit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.action LIKE 'connector.%' AND NEW.details->>'name' = 'audit-fails' THEN RAISE EXCEPTION 'audit down'; END IF;
      RETURN NEW; END $$`);
    await db().query(
      `CREATE TRIGGER test_fail_connector_audit BEFORE INSERT ON audit_events FOR EACH ROW
       EXECUTE FUNCTION test_fail_connector_audit()`,
    );
    try {
      const res = await create(a, secretConnector({ name: 'audit-fails' }));
      // Fail closed, and as an outage (503 with Retry-After), never as the client's fault or a 500.
      expect(res.status).toBe(503);
      expect(res.body.error).toBe('temporarily_unavailable');
      expect(res.headers['retry-after']).toBeDefined();
      expect(await db().query(`SELECT id FROM connectors WHERE name = 'audit-fails'`)).toHaveLength(0);
    } finally {
      await dropAuditTrigger(db(), 'test_fail_connector_audit');
    }
  });

  // Runs last in this file: every secret issued above is checked against everything stored or said since.
  it('never stores a client secret in an audit event, a later response or a log line', async () => {
    expect(issuedSecrets.length).toBeGreaterThan(5);
    const audit = JSON.stringify(await db().query('SELECT * FROM audit_events'));
    const lists = [
      (await app.request('GET', base(a), { key: a.adminKey })).raw,
      (await app.request('GET', base(b), { key: b.adminKey })).raw,
    ].join('');
    const logs = app.logs.join('');
    for (const s of issuedSecrets) {
      expect(audit).not.toContain(s);
      expect(lists).not.toContain(s);
      expect(logs).not.toContain(s);
    }
  });
});
