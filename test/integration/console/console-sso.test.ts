/**
 * Console single sign-on through the tenant's identity provider (oidc-provider on loopback): the tenant's
 * consoleLogin (validated, its secret never shown), a listed admin signs in and acts, a listed auditor reads
 * only, an unlisted user is refused (audited), a sign-in's state works once and only in the browser that started
 * it, removing the user or turning consoleLogin off ends the session on the next request, and a user mapped in
 * one tenant gets nothing of another.
 */
import { startTestApp, type TestApp } from '../../support/app.js';
import {
  createConnector,
  createTenant,
  trustIdentityProvider,
  type TenantFixture,
} from '../../support/factories.js';
import { localPath } from '../../support/browser.js';
import { startOAuthProvider, type TestOAuthProvider } from '../../support/oauth-provider.js';
import { consoleClient, type ConsoleClient } from './console-client.js';

const PUBLIC_URL = 'https://custos.example.test';
const CLIENT = { client_id: 'custos-console', client_secret: 'console-secret-' + Date.now() };

let app: TestApp;
let corp: TestOAuthProvider;
let a: TenantFixture;
let b: TenantFixture;

const db = () => app.custos.runtime.dataSource;

async function setConsoleLogin(t: TenantFixture, value: unknown) {
  return app.request('PATCH', `/v1/tenants/${t.tenantId}`, {
    key: t.adminKey,
    body: { consoleLogin: value },
  });
}

const mapping = (admins: string[], auditors: string[]) => ({
  identityProvider: 'corp',
  clientId: CLIENT.client_id,
  clientSecret: CLIENT.client_secret,
  admins,
  auditors,
});

/** Starts a sign-in for tenant `t` in a fresh browser; returns the browser and the identity provider's answer. */
async function startSso(t: TenantFixture, account: string, c: ConsoleClient = consoleClient(app)) {
  const door = await c.get(`/console/sso/${t.tenantId}`);
  expect(door.status).toBe(200);
  expect(door.raw).toContain('Sign in with corp');
  const start = await c.post(`/console/sso/${t.tenantId}`, { csrf: c.csrf });
  expect(start.status).toBe(303);
  const auth = new URL(String(start.headers.location));
  expect(auth.searchParams.get('redirect_uri')).toBe(`${PUBLIC_URL}/console/sso/callback`);
  expect(auth.searchParams.get('code_challenge_method')).toBe('S256');
  expect(auth.searchParams.get('nonce')).toBeTruthy();
  const { redirectedTo } = await corp.authorize(auth.href, { account });
  return { c, back: localPath(redirectedTo, PUBLIC_URL) };
}

async function ssoSignIn(t: TenantFixture, account: string) {
  const { c, back } = await startSso(t, account);
  const done = await c.get(back);
  return { c, done };
}

async function events(tenantId: string, action: string) {
  return db().query(
    `SELECT actor_type, actor_id, details FROM audit_events WHERE tenant_id = $1 AND action = $2 ORDER BY id`,
    [tenantId, action],
  );
}

beforeAll(async () => {
  corp = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [`${PUBLIC_URL}/console/sso/callback`] }],
  });
  app = await startTestApp({ CUSTOS_PUBLIC_URL: PUBLIC_URL, CUSTOS_OUTBOUND_ALLOW_HOSTS: corp.hostPort });
  a = await createTenant(app, `sso-a-${Date.now()}`);
  b = await createTenant(app, `sso-b-${Date.now()}`);
  for (const t of [a, b]) {
    await trustIdentityProvider(
      app,
      t,
      { issuer: corp.issuer, jwksUri: corp.endpoints.jwks },
      { algorithms: ['RS256'] },
      'corp',
    );
  }
  expect((await setConsoleLogin(a, mapping(['alice', 'carol'], ['audrey']))).status).toBe(200);
  expect((await setConsoleLogin(b, mapping(['bob'], []))).status).toBe(200);
}, 60_000);

afterAll(async () => {
  await app?.close();
  await corp?.close();
});

describe('the consoleLogin setting', () => {
  it('is shown without its secret, sealed at rest, and audited without it', async () => {
    const res = await app.request('GET', `/v1/tenants/${a.tenantId}`, { key: a.adminKey });
    expect(res.body.consoleLogin).toEqual({
      identityProvider: 'corp',
      clientId: CLIENT.client_id,
      admins: ['alice', 'carol'],
      auditors: ['audrey'],
    });
    expect(res.raw).not.toContain(CLIENT.client_secret);
    const [row] = await db().query('SELECT console_login_secret FROM tenants WHERE id = $1', [a.tenantId]);
    expect(Buffer.from(row.console_login_secret).toString('latin1')).not.toContain(CLIENT.client_secret);
    const updated = await events(a.tenantId, 'tenant.updated');
    expect(JSON.stringify(updated)).not.toContain(CLIENT.client_secret);
    expect(updated[updated.length - 1].details.consoleLogin.admins).toEqual(['alice', 'carol']);
  });

  it.each([
    ['an unknown identity provider', { ...mapping(['x'], []), identityProvider: 'nope' }],
    ['nobody listed', mapping([], [])],
    ['a user both admin and auditor', mapping(['x'], ['x'])],
    ['a repeated user', mapping(['x', 'x'], [])],
    ['a user id with a control character', mapping(['x\u0000y'], [])],
    ['a user id with a bidi override', mapping(['\u202eadmin'], [])],
    ['a too long user id', mapping(['u'.repeat(256)], [])],
    [
      'too many admins',
      mapping(
        Array.from({ length: 101 }, (_, i) => `u${i}`),
        [],
      ),
    ],
    ['a client id with spaces', { ...mapping(['x'], []), clientId: 'a b' }],
    ['an unknown field', { ...mapping(['x'], []), role: 'admin' }],
    ['a non-list', { ...mapping(['x'], []), admins: 'x' }],
  ])('refuses %s (400, nothing changed)', async (_what, value) => {
    const res = await setConsoleLogin(a, value);
    expect(res.status).toBe(400);
    const [row] = await db().query('SELECT console_login FROM tenants WHERE id = $1', [a.tenantId]);
    expect(row.console_login.admins).toEqual(['alice', 'carol']);
  });
});

describe('signing in through the identity provider', () => {
  it('lets a listed admin in as the user, who can act; the audit says who and that it was single sign-on', async () => {
    const { c, done } = await ssoSignIn(a, 'alice');
    expect(done.status).toBe(200);
    expect(done.raw).toContain('url=/console/connections');
    const cookie = (done.headers['set-cookie'] as string[]).find((s) =>
      s.startsWith('__Host-custos_console='),
    )!;
    expect(cookie).toMatch(/; Path=\/; Secure; HttpOnly; SameSite=Strict; Max-Age=28800$/);
    const page = await c.get('/console/connectors');
    expect(page.status).toBe(200);
    expect(page.flat).toContain('alice (tenant admin)');
    const signedIn = await events(a.tenantId, 'console.signed_in');
    expect(signedIn[signedIn.length - 1]).toMatchObject({
      actor_type: 'user',
      actor_id: 'alice',
      details: { role: 'admin', method: 'sso', identityProvider: 'corp' },
    });
    const connector = await createConnector(app, a, { name: 'SSO switch' });
    const toggled = await c.post(`/console/connectors/${connector.id}/state`, {
      csrf: c.csrf,
      enabled: 'false',
    });
    expect(toggled.status).toBe(303);
    const updated = await events(a.tenantId, 'connector.disabled');
    expect(updated[updated.length - 1]).toMatchObject({ actor_type: 'user', actor_id: 'alice' });
    // Sign-out as for key sessions.
    const out = await c.post('/console/sign-out', { csrf: c.csrf });
    expect(out.headers.location).toBe('/console/sign-in?ended=signed_out');
    expect((await c.get('/console/connectors')).status).toBe(303);
  });

  it('gives a listed auditor the pages and refuses their actions', async () => {
    const { c, done } = await ssoSignIn(a, 'audrey');
    expect(done.status).toBe(200);
    const page = await c.get('/console/key-backend');
    expect(page.status).toBe(200);
    expect(page.flat).toContain('audrey (auditor)');
    const rotate = await c.post('/console/key-backend/rotate', { csrf: c.csrf });
    expect(rotate.status).toBe(403);
    const denied = await events(a.tenantId, 'access.denied');
    expect(denied[denied.length - 1]).toMatchObject({
      actor_type: 'user',
      actor_id: 'audrey',
      details: { reason: 'role' },
    });
  });

  it('refuses a user the tenant does not list, and audits it', async () => {
    const { c, done } = await ssoSignIn(a, 'mallory');
    expect(done.status).toBe(403);
    expect(String(done.headers['set-cookie'])).not.toContain('__Host-custos_console=ccs_');
    expect((await c.get('/console/connections')).status).toBe(303);
    const refused = await events(a.tenantId, 'console.sign_in_refused');
    expect(refused[refused.length - 1]).toMatchObject({
      actor_type: 'user',
      actor_id: 'mallory',
      details: { reason: 'not_listed', method: 'sso' },
    });
  });

  it('uses a sign-in response once, and only in the browser that started it', async () => {
    const { c, back } = await startSso(a, 'alice');
    // Another browser with the same answer (login CSRF) is refused, and the answer is spent.
    const other = consoleClient(app);
    const stolen = await other.get(back);
    expect(stolen.status).toBe(400);
    expect((await events(a.tenantId, 'console.sign_in_refused')).pop().details.reason).toBe(
      'browser_mismatch',
    );
    expect((await c.get(back)).status).toBe(400);

    const second = await startSso(a, 'alice');
    expect((await second.c.get(second.back)).status).toBe(200);
    // Replayed: unknown.
    const replay = await second.c.get(second.back);
    expect(replay.status).toBe(400);
    expect(replay.raw).toContain('unknown, used or expired');
  });

  it('refuses a code from another sign-in under this one’s state (PKCE and nonce)', async () => {
    const first = await startSso(a, 'alice');
    const second = await startSso(a, 'alice', first.c);
    const u1 = new URL(first.back, PUBLIC_URL);
    const u2 = new URL(second.back, PUBLIC_URL);
    // The first sign-in's cookie was replaced by the second's; use the second's state with the first's code.
    u2.searchParams.set('code', String(u1.searchParams.get('code')));
    const mixed = await second.c.get(u2.pathname + u2.search);
    expect(mixed.status).toBe(502);
    expect(mixed.raw).toContain('did not complete');
    expect(String(mixed.headers['set-cookie'])).not.toContain('__Host-custos_console=ccs_');
    expect((await second.c.get('/console/connections')).status).toBe(303);
  });

  it('ends the session on the next request once the user is removed, or consoleLogin is turned off', async () => {
    const { c } = await ssoSignIn(a, 'carol');
    expect((await c.get('/console/connections')).status).toBe(200);
    expect((await setConsoleLogin(a, mapping(['alice'], ['audrey']))).status).toBe(200);
    const after = await c.get('/console/connections');
    expect(after.status).toBe(303);
    expect(after.headers.location).toBe('/console/sign-in?ended=expired');

    const alice = await ssoSignIn(a, 'alice');
    expect((await alice.c.get('/console/connections')).status).toBe(200);
    expect((await setConsoleLogin(a, null)).status).toBe(200);
    expect((await alice.c.get('/console/connections')).status).toBe(303);
    expect((await app.request('GET', `/console/sso/${a.tenantId}`)).status).toBe(404);
    expect((await setConsoleLogin(a, mapping(['alice', 'carol'], ['audrey']))).status).toBe(200);
  });
});

describe('the identity provider', () => {
  it('ends the session on the next request once the tenant no longer trusts it', async () => {
    const t = await createTenant(app, `sso-c-${Date.now()}`);
    await trustIdentityProvider(
      app,
      t,
      { issuer: corp.issuer, jwksUri: corp.endpoints.jwks },
      { algorithms: ['RS256'] },
      'corp',
    );
    expect((await setConsoleLogin(t, mapping(['cleo'], []))).status).toBe(200);
    const { c } = await ssoSignIn(t, 'cleo');
    expect((await c.get('/console/connections')).status).toBe(200);
    const removed = await app.request('DELETE', `/v1/tenants/${t.tenantId}/identity-providers/corp`, {
      key: t.adminKey,
    });
    expect(removed.status).toBe(204);
    const after = await c.get('/console/connections');
    expect(after.status).toBe(303);
    expect(after.headers.location).toBe('/console/sign-in?ended=expired');
  });
});

describe('tenant isolation', () => {
  it('gives a user mapped in tenant A nothing of tenant B', async () => {
    const { c, done } = await ssoSignIn(b, 'alice');
    expect(done.status).toBe(403);
    expect((await c.get('/console/connections')).status).toBe(303);
    // bob, B's admin, sees B only, and the tenant comes from the session, never the address.
    const bob = await ssoSignIn(b, 'bob');
    expect(bob.done.status).toBe(200);
    const page = await bob.c.get('/console/connectors');
    expect(page.flat).not.toContain('SSO switch');
    const [row] = await db().query(`SELECT tenant_id FROM console_sessions WHERE user_id = 'bob'`);
    expect(row.tenant_id).toBe(b.tenantId);
  });

  it('answers an unknown tenant, or one without single sign-on, alike', async () => {
    const none = await createTenant(app, `sso-none-${Date.now()}`);
    expect((await app.request('GET', `/console/sso/${none.tenantId}`)).status).toBe(404);
    expect((await app.request('GET', '/console/sso/00000000-0000-4000-8000-000000000000')).status).toBe(404);
    expect((await app.request('GET', '/console/sso/not-a-uuid')).status).toBe(400);
  });
});
