/**
 * The end user's "my connections" portal over HTTP with a cookie jar: a link made by a tenant admin or a
 * connector opens once and becomes a browser session; the page shows only that user's connections of that
 * tenant, in words, with their last use from the audit trail; disconnecting revokes at the provider
 * (oidc-provider on loopback counts the RFC 7009 revocations) and is audited with the user as actor; forms
 * need their CSRF token; with the tenant's connectLogin, only the link's user signing in at the tenant's
 * identity provider (a second oidc-provider) sees anything.
 */
import { createHash } from 'node:crypto';
import { startTestApp, type Reply, type TestApp } from '../../support/app.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  importConnection,
  saveCustomProvider,
  saveProviderApp,
  trustIdentityProvider,
  type SecretConnector,
  type TenantFixture,
} from '../../support/factories.js';
import { startOAuthProvider, type TestOAuthProvider } from '../../support/oauth-provider.js';
import { blns } from '../../support/naughty-strings.js';
import { cookieJar, localPath } from '../../support/browser.js';
import { ProviderRevocationService } from '../../../src/connections/provider-revocation.service.js';
import { LAST_RELEASES_SQL } from '../../../src/audit/audit.repository.js';
import { escapeHtml } from '../../../src/connect/connect-pages.js';

const PUBLIC_URL = 'https://custos.example.test';
const HOME = '/connect/portal';
const COOKIE = '__Host-custos_portal';
const CLIENT = { client_id: 'portal-inhouse', client_secret: 'inhouse-secret-' + Date.now() };
const LOGIN_CLIENT = { client_id: 'portal-login', client_secret: 'login-secret-' + Date.now() };

let app: TestApp;
/** The third-party provider: connections are made through it, and revoked at it. */
let op: TestOAuthProvider;
/** The identity provider of the tenant with connectLogin. */
let corp: TestOAuthProvider;
let t: TenantFixture;
let connector: SecretConnector;

const local = (url: string) => localPath(url, PUBLIC_URL);
const db = () => app.custos.runtime.dataSource;
const form = (fields: Record<string, string>, cookie: string) => ({
  payload: new URLSearchParams(fields).toString(),
  headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
});
const csrfOf = (page: Reply) => /name="csrf" value="([^"]+)"/.exec(page.raw)?.[1] ?? '';

function createLink(
  tenant: TenantFixture,
  body: Record<string, unknown>,
  auth: { key?: string; headers?: Record<string, string> } = { key: tenant.adminKey },
) {
  return app.request('POST', `/v1/tenants/${tenant.tenantId}/portal/sessions`, { ...auth, body });
}

/** A browser that opens a new link for `userId` and lands on the page. */
async function openPortal(tenant: TenantFixture, userId: string) {
  const created = await createLink(tenant, { userId });
  expect(created.status).toBe(201);
  const jar = cookieJar();
  const shown = await app.request('GET', local(created.body.url));
  expect(shown.status).toBe(200);
  expect(shown.raw).toContain('>Show my connections</button>');
  const opened = await app.request('POST', local(created.body.url));
  expect(opened.status).toBe(303);
  expect(opened.headers.location).toBe(PUBLIC_URL + HOME);
  jar.take(opened.headers['set-cookie']);
  const page = await app.request('GET', HOME, { headers: { cookie: jar.header() } });
  return { url: local(created.body.url), id: created.body.id as string, jar, page };
}

const exchange = (user: string, provider = 'inhouse') =>
  app.request('POST', '/oauth/token', {
    payload: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: user,
      subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
      audience: provider,
    }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(connector) },
  });

/** Connects `userId`'s In-house Git account through the hosted connect flow (real tokens at the provider). */
async function connectThroughFlow(userId: string): Promise<string> {
  const session = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
    key: t.adminKey,
    body: { userId, provider: 'inhouse', scopes: ['openid', 'offline_access', 'repo'] },
  });
  expect(session.status).toBe(201);
  const jar = cookieJar();
  const page = await app.request('GET', local(session.body.url));
  jar.take(page.headers['set-cookie']);
  const start = await app.request(
    'POST',
    local(session.body.url) + '/start',
    form({ csrf: csrfOf(page) }, jar.header()),
  );
  expect(start.status).toBe(303);
  jar.take(start.headers['set-cookie']);
  const { redirectedTo } = await op.authorize(String(start.headers.location), { account: userId });
  const done = await app.request('GET', local(redirectedTo), { headers: { cookie: jar.header() } });
  expect(done.status).toBe(200);
  const [row] = await db().query(
    `SELECT id FROM connections WHERE tenant_id = $1 AND user_id = $2 AND provider = 'inhouse' AND revoked_at IS NULL`,
    [t.tenantId, userId],
  );
  return row.id as string;
}

const live = async (connectionId: string) =>
  (await db().query('SELECT 1 FROM connections WHERE id = $1 AND revoked_at IS NULL', [connectionId]))
    .length === 1;

beforeAll(async () => {
  op = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [`${PUBLIC_URL}/connect/callback/inhouse`] }],
  });
  corp = await startOAuthProvider({
    clients: [{ ...LOGIN_CLIENT, redirect_uris: [`${PUBLIC_URL}/connect/portal/login/callback`] }],
  });
  app = await startTestApp({
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${op.hostPort},${corp.hostPort}`,
  });
  t = await createTenant(app);
  await saveCustomProvider(app, t, {
    key: 'inhouse',
    name: 'In-house Git',
    authMode: 'oauth2',
    oauth2: {
      authorizationUrl: op.endpoints.authorization,
      tokenUrl: op.endpoints.token,
      revocationUrl: op.endpoints.revocation,
      issuer: op.issuer,
      scopes: ['openid', 'offline_access', 'repo'],
    },
    scopeDescriptions: { repo: 'Read and write your repositories' },
  });
  await saveProviderApp(app, t, 'inhouse', CLIENT);
  connector = await createConnector(app, t, { name: 'Support bot', allowedProviders: ['inhouse'] });
  const patched = await app.request('PATCH', `/v1/tenants/${t.tenantId}`, {
    key: t.adminKey,
    body: { allowedReturnUrls: ['https://app.example/settings'] },
  });
  expect(patched.status).toBe(200);
}, 60_000);

afterAll(async () => {
  await app?.close();
  await op?.close();
  await corp?.close();
});

describe('creating a portal link', () => {
  it('gives a tenant admin a one-time link, stores only its hash, and audits it', async () => {
    const res = await createLink(t, { userId: 'alice', returnTo: 'https://app.example/settings' });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      id: expect.any(String),
      userId: 'alice',
      url: expect.stringMatching(/^https:\/\/custos\.example\.test\/connect\/portal\/cpt_[A-Za-z0-9_-]{43}$/),
      expiresAt: expect.any(String),
    });
    const minutes = (Date.parse(res.body.expiresAt) - Date.now()) / 60_000;
    expect(minutes).toBeGreaterThan(14);
    expect(minutes).toBeLessThanOrEqual(15);
    const token = String(res.body.url).split('/').pop()!;
    const [row] = await db().query('SELECT * FROM portal_sessions WHERE id = $1', [res.body.id]);
    expect(row.token_hash).toEqual(createHash('sha256').update(token).digest());
    expect(JSON.stringify(row)).not.toContain(token);
    const [event] = await db().query(
      `SELECT actor_type, actor_id, subject_user_id, details FROM audit_events
        WHERE action = 'portal_session.created' AND details->>'sessionId' = $1`,
      [res.body.id],
    );
    expect(event).toEqual({
      actor_type: 'admin_key',
      actor_id: t.adminKeyId,
      subject_user_id: 'alice',
      details: { sessionId: res.body.id },
    });
    expect(JSON.stringify(event)).not.toContain(token);
  });

  it('gives a connector a link for any user of its tenant, audited as the connector’s', async () => {
    const res = await createLink(
      t,
      { userId: 'someone-else' },
      { headers: { authorization: basicAuth(connector) } },
    );
    expect(res.status).toBe(201);
    const [event] = await db().query(
      `SELECT actor_type, actor_id FROM audit_events
        WHERE action = 'portal_session.created' AND details->>'sessionId' = $1`,
      [res.body.id],
    );
    expect(event).toEqual({ actor_type: 'connector', actor_id: connector.id });
  });

  it('refuses bad input with stable codes, and creates nothing', async () => {
    const before = (await db().query('SELECT count(*)::int AS n FROM portal_sessions'))[0].n;
    const cases: [Record<string, unknown>, string][] = [
      [{}, 'validation_failed'],
      [{ userId: '' }, 'validation_failed'],
      [{ userId: 'a\u0000b' }, 'validation_failed'],
      [{ userId: 'x'.repeat(256) }, 'validation_failed'],
      [{ userId: 'alice', extra: 1 }, 'unknown_field'],
      [{ userId: 'alice', returnTo: 'https://evil.example/' }, 'return_url_not_allowed'],
    ];
    for (const [body, code] of cases) {
      const res = await createLink(t, body);
      expect({ body, status: res.status, error: res.body.error }).toEqual({ body, status: 400, error: code });
    }
    expect((await db().query('SELECT count(*)::int AS n FROM portal_sessions'))[0].n).toBe(before);
  });

  it('answers 404 for a tenant that does not exist or is not the caller’s, and 403 to an auditor', async () => {
    const other = await createTenant(app);
    for (const tenantId of ['7d5c3b1a-9e8f-4d6c-b2a4-6e8f0a2c4d70', other.tenantId]) {
      const byAdmin = await app.request('POST', `/v1/tenants/${tenantId}/portal/sessions`, {
        key: t.adminKey,
        body: { userId: 'alice' },
      });
      expect(byAdmin.status).toBe(404);
      const byConnector = await app.request('POST', `/v1/tenants/${tenantId}/portal/sessions`, {
        headers: { authorization: basicAuth(connector) },
        body: { userId: 'alice' },
      });
      expect(byConnector.status).toBe(404);
    }
    const byAuditor = await createLink(t, { userId: 'alice' }, { key: t.auditorKey });
    expect(byAuditor.status).toBe(403);
    const anonymous = await createLink(t, { userId: 'alice' }, {});
    expect(anonymous.status).toBe(401);
  });

  it('deletes sessions that ended over an hour ago as new links are made', async () => {
    const old = await createLink(t, { userId: 'old' });
    const recent = await createLink(t, { userId: 'recent' });
    await db().query(`UPDATE portal_sessions SET expires_at = now() - interval '61 minutes' WHERE id = $1`, [
      old.body.id,
    ]);
    await db().query(`UPDATE portal_sessions SET expires_at = now() - interval '59 minutes' WHERE id = $1`, [
      recent.body.id,
    ]);
    expect((await createLink(t, { userId: 'new' })).status).toBe(201);
    const ids = async () =>
      (
        await db().query('SELECT id FROM portal_sessions WHERE id = ANY($1)', [[old.body.id, recent.body.id]])
      ).map((r: { id: string }) => r.id);
    for (let i = 0; i < 50 && (await ids()).length > 1; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await ids()).toEqual([recent.body.id]);
    // The trail keeps what happened.
    const [created] = await db().query(
      `SELECT count(*)::int AS n FROM audit_events WHERE action = 'portal_session.created' AND details->>'sessionId' = $1`,
      [old.body.id],
    );
    expect(created.n).toBe(1);
  });
});

describe('the link and the browser session', () => {
  it('opens once into a __Host- cookie session, with the token gone from the address', async () => {
    const { url, id, jar, page } = await openPortal(t, 'olivia');
    expect(page.status).toBe(200);
    expect(page.raw).toContain('<h1>Your connections</h1>');
    // The hosted pages' headers: never cached or framed, no script, forms only to Custos.
    expect(page.headers).toMatchObject({
      'cache-control': 'no-store',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
    });
    expect(String(page.headers['content-security-policy'])).toMatch(
      /^default-src 'none'; style-src 'sha256-[^;]+; form-action 'self'; frame-ancestors 'none'; base-uri 'none'$/,
    );
    const [row] = await db().query('SELECT browser_hash FROM portal_sessions WHERE id = $1', [id]);
    const value = jar.get(COOKIE)!;
    expect(row.browser_hash).toEqual(createHash('sha256').update(value).digest());
    for (const method of ['GET', 'POST']) {
      const again = await app.request(method, url);
      expect(again.status).toBe(410);
      expect(again.raw).toContain('Link already used');
      expect(again.headers['set-cookie']).toBeUndefined();
    }
    // Another browser, without the cookie, gets nothing.
    const stranger = await app.request('GET', HOME);
    expect(stranger.status).toBe(403);
    expect(stranger.raw).toContain('Your session has ended');
    expect(stranger.raw).not.toContain('olivia');
    // The first browser still has its page.
    expect((await app.request('GET', HOME, { headers: { cookie: jar.header() } })).status).toBe(200);
    const events = await db().query(
      `SELECT action, actor_type, actor_id, details->>'userBinding' AS binding FROM audit_events
        WHERE details->>'sessionId' = $1 AND action = 'portal_session.opened'`,
      [id],
    );
    expect(events).toEqual([
      { action: 'portal_session.opened', actor_type: 'user', actor_id: 'olivia', binding: 'link' },
    ]);
  });

  it('is not used up by fetching its address, as link previews and mail scanners do', async () => {
    const created = await createLink(t, { userId: 'olivia' });
    for (let i = 0; i < 3; i++) {
      const fetched = await app.request('GET', local(created.body.url));
      expect(fetched.status).toBe(200);
      expect(fetched.headers['set-cookie']).toBeUndefined();
    }
    const [row] = await db().query('SELECT opened_at FROM portal_sessions WHERE id = $1', [created.body.id]);
    expect(row.opened_at).toBeNull();
    expect((await app.request('POST', local(created.body.url))).status).toBe(303);
  });

  it('sets the session cookie Secure, HttpOnly, SameSite=Lax and host-only', async () => {
    const created = await createLink(t, { userId: 'olivia' });
    const opened = await app.request('POST', local(created.body.url));
    const set = String(opened.headers['set-cookie']);
    expect(set).toMatch(
      /^__Host-custos_portal=[A-Za-z0-9_-]{43}; Path=\/; Secure; HttpOnly; SameSite=Lax; Max-Age=28800$/,
    );
  });

  it('refuses an expired link, an idle session and a session past its end', async () => {
    const created = await createLink(t, { userId: 'olivia' });
    await db().query(
      `UPDATE portal_sessions SET link_expires_at = now() - interval '1 second' WHERE id = $1`,
      [created.body.id],
    );
    for (const method of ['GET', 'POST']) {
      const expired = await app.request(method, local(created.body.url));
      expect(expired.status).toBe(410);
      expect(expired.raw).toContain('This link has expired (a link works for 15 minutes, once)');
      expect(expired.headers['set-cookie']).toBeUndefined();
    }

    const idle = await openPortal(t, 'olivia');
    expect(idle.page.status).toBe(200);
    await db().query(
      `UPDATE portal_sessions SET last_seen_at = now() - interval '31 minutes' WHERE id = $1`,
      [idle.id],
    );
    const afterIdle = await app.request('GET', HOME, { headers: { cookie: idle.jar.header() } });
    expect(afterIdle.status).toBe(403);
    expect(afterIdle.raw).toContain('closes after 30 minutes without activity');

    const old = await openPortal(t, 'olivia');
    // Activity keeps a session open…
    await db().query(
      `UPDATE portal_sessions SET last_seen_at = now() - interval '29 minutes' WHERE id = $1`,
      [old.id],
    );
    expect((await app.request('GET', HOME, { headers: { cookie: old.jar.header() } })).status).toBe(200);
    // …until its end, whatever the activity.
    await db().query(`UPDATE portal_sessions SET expires_at = now() - interval '1 second' WHERE id = $1`, [
      old.id,
    ]);
    expect((await app.request('GET', HOME, { headers: { cookie: old.jar.header() } })).status).toBe(403);
  });

  it('answers an unknown or malformed link with a page, not JSON', async () => {
    for (const path of [`${HOME}/cpt_${'A'.repeat(43)}`, `${HOME}/nonsense`, `${HOME}/%3Cscript%3E`]) {
      const res = await app.request('GET', path);
      expect(res.status).toBe(404);
      expect(String(res.headers['content-type'])).toMatch(/^text\/html/);
      expect(res.raw).toContain('Link not found');
    }
  });

  it('signs out: the cookie is cleared and stops working', async () => {
    const { jar, page, id } = await openPortal(t, 'olivia');
    const out = await app.request('POST', `${HOME}/logout`, form({ csrf: csrfOf(page) }, jar.header()));
    expect(out.status).toBe(200);
    expect(out.raw).toContain('Signed out');
    expect(String(out.headers['set-cookie'])).toMatch(/^__Host-custos_portal=; .*Max-Age=0$/);
    expect((await app.request('GET', HOME, { headers: { cookie: jar.header() } })).status).toBe(403);
    const [event] = await db().query(
      `SELECT actor_id FROM audit_events WHERE action = 'portal_session.signed_out' AND details->>'sessionId' = $1`,
      [id],
    );
    expect(event).toEqual({ actor_id: 'olivia' });
  });
});

describe('the connections page', () => {
  it('shows the provider, the scopes in words, when it was connected and when and by whom it was last used', async () => {
    await importConnection(app, t, 'paula', 'inhouse', {
      type: 'oauth2',
      accessToken: 'paula-token',
      scopes: ['repo', 'read:user'],
    });
    const before = await openPortal(t, 'paula');
    expect(before.page.raw).toContain('<h2 id="c-');
    expect(before.page.raw).toContain('>In-house Git</h2>');
    expect(before.page.raw).toContain(
      '<li>Read and write your repositories <code class="scope">repo</code></li>',
    );
    expect(before.page.raw).toContain('<li><code>read:user</code></li>');
    expect(before.page.raw).toMatch(
      /Connected <time datetime="[^"]+">\d{1,2} \w+ \d{4} at \d\d:\d\d UTC<\/time>/,
    );
    expect(before.page.raw).toContain('Status: active');
    expect(before.page.raw).toContain('Not used yet.');
    expect(before.page.raw).not.toContain('paula-token');

    expect((await exchange('paula')).status).toBe(200);
    const after = await app.request('GET', HOME, { headers: { cookie: before.jar.header() } });
    expect(after.raw).toMatch(
      /Last used <time datetime="[^"]+">[^<]+ UTC<\/time> by <strong>Support bot<\/strong>\./,
    );
    // Each view is audited as the user listing their connections.
    const [listed] = await db().query(
      `SELECT count(*)::int AS n FROM audit_events
        WHERE tenant_id = $1 AND action = 'connection.listed' AND actor_type = 'user' AND actor_id = 'paula'`,
      [t.tenantId],
    );
    expect(listed.n).toBe(2);
  });

  it('names a connector that has since been deleted as such', async () => {
    const temp = await createConnector(app, t, { name: 'Temporary', allowedProviders: ['inhouse'] });
    await importConnection(app, t, 'quentin', 'inhouse', { type: 'oauth2', accessToken: 'quentin-token' });
    const released = await app.request('POST', '/oauth/token', {
      payload: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: 'quentin',
        subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
        audience: 'inhouse',
      }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(temp) },
    });
    expect(released.status).toBe(200);
    const { page, jar } = await openPortal(t, 'quentin');
    expect(page.raw).toContain('by <strong>Temporary</strong>');
    expect(
      (await app.request('DELETE', `/v1/tenants/${t.tenantId}/connectors/${temp.id}`, { key: t.adminKey }))
        .status,
    ).toBe(204);
    const after = await app.request('GET', HOME, { headers: { cookie: jar.header() } });
    expect(after.raw).toContain('by a connector that has since been removed.');
  });

  it('shows a connection that needs reconnecting, and reconnects it through a new connect link', async () => {
    const { id: connectionId } = await importConnection(app, t, 'rita', 'inhouse', {
      type: 'oauth2',
      accessToken: 'rita-token',
      scopes: ['repo'],
    });
    await db().query(`UPDATE connections SET status = 'needs_reauth' WHERE id = $1`, [connectionId]);
    const { page, jar } = await openPortal(t, 'rita');
    expect(page.raw).toContain('Status: needs reconnecting. In-house Git no longer accepts this connection');
    expect(page.raw).toContain('>Reconnect In-house Git</button>');
    const res = await app.request(
      'POST',
      `${HOME}/connections/${connectionId}/reconnect`,
      form({ csrf: csrfOf(page) }, jar.header()),
    );
    expect(res.status).toBe(303);
    expect(String(res.headers.location)).toMatch(
      /^https:\/\/custos\.example\.test\/connect\/cst_[A-Za-z0-9_-]{43}$/,
    );
    const link = await app.request('GET', local(String(res.headers.location)));
    expect(link.status).toBe(200);
    expect(link.raw).toContain('Connect your In-house Git account');
    const [event] = await db().query(
      `SELECT actor_type, actor_id, subject_user_id, details->'scopes' AS scopes FROM audit_events
        WHERE tenant_id = $1 AND action = 'connect_session.created' AND subject_user_id = 'rita'`,
      [t.tenantId],
    );
    expect(event).toEqual({
      actor_type: 'user',
      actor_id: 'rita',
      subject_user_id: 'rita',
      scopes: ['repo'],
    });
  });

  it('never shows another user’s connections, nor lets one be disconnected', async () => {
    const { id: alices } = await importConnection(app, t, 'alice', 'inhouse', {
      type: 'oauth2',
      accessToken: 'alice-token',
    });
    const bob = await openPortal(t, 'bob');
    expect(bob.page.status).toBe(200);
    expect(bob.page.raw).toContain('You have no accounts connected');
    expect(bob.page.raw).not.toContain(alices);
    expect(bob.page.raw).not.toContain('In-house Git');
    for (const verb of ['disconnect', 'reconnect']) {
      const res = await app.request(
        'POST',
        `${HOME}/connections/${alices}/${verb}`,
        form({ csrf: csrfOf(bob.page), confirm: 'yes' }, bob.jar.header()),
      );
      expect(res.status).toBe(404);
      expect(res.raw).toContain('This connection is not one of yours');
    }
    expect(await live(alices)).toBe(true);
  });

  it('keeps tenants apart: a user of the same name elsewhere is another person', async () => {
    const other = await createTenant(app);
    const { id: elsewhere } = await importConnection(app, other, 'alice', 'openai', {
      type: 'api_key',
      apiKey: 'sk-elsewhere',
    });
    const mine = await openPortal(t, 'alice');
    expect(mine.page.raw).toContain('In-house Git');
    expect(mine.page.raw).not.toContain('OpenAI');
    expect(mine.page.raw).not.toContain(elsewhere);
    const res = await app.request(
      'POST',
      `${HOME}/connections/${elsewhere}/disconnect`,
      form({ csrf: csrfOf(mine.page), confirm: 'yes' }, mine.jar.header()),
    );
    expect(res.status).toBe(404);
    expect(await live(elsewhere)).toBe(true);
    // And the other tenant's page for its alice shows only its own.
    const theirs = await openPortal(other, 'alice');
    expect(theirs.page.raw).toContain('OpenAI');
    expect(theirs.page.raw).toContain('Connected with an API key you provided.');
    expect(theirs.page.raw).not.toContain('In-house Git');
  });
});

describe('disconnecting', () => {
  const revocations = () => app.custos.app.get(ProviderRevocationService);

  it('asks first, then revokes here and at the provider, audited with the user as actor', async () => {
    const connectionId = await connectThroughFlow('dora');
    expect((await exchange('dora')).status).toBe(200);
    const { page, jar } = await openPortal(t, 'dora');
    expect(page.raw).toContain('>Disconnect In-house Git</button>');
    const path = `${HOME}/connections/${connectionId}/disconnect`;
    const ask = await app.request('POST', path, form({ csrf: csrfOf(page) }, jar.header()));
    expect(ask.status).toBe(200);
    expect(ask.raw).toContain('<h1>Disconnect In-house Git?</h1>');
    expect(await live(connectionId)).toBe(true);

    const before = op.revocations;
    const done = await app.request('POST', path, form({ csrf: csrfOf(ask), confirm: 'yes' }, jar.header()));
    expect(done.status).toBe(200);
    expect(done.raw).toContain('Your In-house Git account is disconnected');
    expect(await live(connectionId)).toBe(false);
    expect((await exchange('dora')).body.error).toBe('consent_required');
    // Revocation at the provider was started in the background; this finishes whatever is left.
    await revocations().processDue(connectionId);
    for (let i = 0; i < 50 && op.revocations - before < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(op.revocations - before).toBe(2);
    const [event] = await db().query(
      `SELECT actor_type, actor_id, subject_user_id, provider, details FROM audit_events
        WHERE action = 'connection.revoked' AND connection_id = $1`,
      [connectionId],
    );
    expect(event).toEqual({
      actor_type: 'user',
      actor_id: 'dora',
      subject_user_id: 'dora',
      provider: 'inhouse',
      details: { providerRevocation: 'pending' },
    });
    const after = await app.request('GET', HOME, { headers: { cookie: jar.header() } });
    expect(after.raw).toContain('You have no accounts connected');
  });

  it('does nothing for a form without its CSRF token, with another session’s, or without the cookie', async () => {
    const { id: connectionId } = await importConnection(app, t, 'erin', 'inhouse', {
      type: 'oauth2',
      accessToken: 'erin-token',
    });
    const erin = await openPortal(t, 'erin');
    const other = await openPortal(t, 'erin');
    const path = `${HOME}/connections/${connectionId}/disconnect`;
    const attempts = [
      form({ confirm: 'yes' }, erin.jar.header()),
      form({ csrf: '', confirm: 'yes' }, erin.jar.header()),
      form({ csrf: csrfOf(other.page), confirm: 'yes' }, erin.jar.header()),
      form({ csrf: csrfOf(erin.page) + 'x', confirm: 'yes' }, erin.jar.header()),
      form({ csrf: csrfOf(erin.page), confirm: 'yes' }, ''),
    ];
    for (const attempt of attempts) {
      const res = await app.request('POST', path, attempt);
      expect(res.status).toBe(403);
      expect(res.raw).toContain(
        'This form has expired or was sent from somewhere else, so nothing was done.',
      );
    }
    expect(await live(connectionId)).toBe(true);
    // The same form with its token works.
    const ok = await app.request(
      'POST',
      path,
      form({ csrf: csrfOf(erin.page), confirm: 'yes' }, erin.jar.header()),
    );
    expect(ok.status).toBe(200);
    expect(await live(connectionId)).toBe(false);
  });
});

describe('with the tenant’s connectLogin', () => {
  let t2: TenantFixture;
  let connectionId: string;

  beforeAll(async () => {
    t2 = await createTenant(app);
    await trustIdentityProvider(
      app,
      t2,
      { issuer: corp.issuer, jwksUri: corp.endpoints.jwks },
      { algorithms: ['RS256'] },
      'corp',
    );
    const res = await app.request('PATCH', `/v1/tenants/${t2.tenantId}`, {
      key: t2.adminKey,
      body: {
        connectLogin: {
          identityProvider: 'corp',
          clientId: LOGIN_CLIENT.client_id,
          clientSecret: LOGIN_CLIENT.client_secret,
        },
      },
    });
    expect(res.status).toBe(200);
    ({ id: connectionId } = await importConnection(app, t2, 'alice', 'openai', {
      type: 'api_key',
      apiKey: 'sk-alice',
    }));
  });

  /** Presses "Sign in" and comes back from the identity provider signed in as `account`. */
  async function signIn(jar: ReturnType<typeof cookieJar>, page: Reply, account: string) {
    const start = await app.request('POST', `${HOME}/login`, form({ csrf: csrfOf(page) }, jar.header()));
    expect(start.status).toBe(303);
    const auth = new URL(String(start.headers.location));
    expect(auth.origin).toBe(new URL(corp.issuer).origin);
    expect(auth.searchParams.get('redirect_uri')).toBe(`${PUBLIC_URL}/connect/portal/login/callback`);
    expect(auth.searchParams.get('code_challenge_method')).toBe('S256');
    const { redirectedTo } = await corp.authorize(auth.href, { account });
    return redirectedTo;
  }

  it('shows nothing until the link’s user signs in, and then moves the session to a new cookie', async () => {
    const { jar, page, id } = await openPortal(t2, 'alice');
    expect(page.status).toBe(200);
    expect(page.raw).toContain('Sign in with corp');
    expect(page.raw).not.toContain('OpenAI');
    expect(String(page.headers['content-security-policy'])).toContain(
      `form-action 'self' ${new URL(corp.issuer).origin}`,
    );
    // Changing anything before signing in is refused.
    const early = await app.request(
      'POST',
      `${HOME}/connections/${connectionId}/disconnect`,
      form({ csrf: csrfOf(page), confirm: 'yes' }, jar.header()),
    );
    expect(early.status).toBe(403);
    expect(early.raw).toContain('Sign in first');
    expect(await live(connectionId)).toBe(true);

    const before = jar.header();
    const back = await app.request('GET', local(await signIn(jar, page, 'alice')), {
      headers: { cookie: jar.header() },
    });
    expect(back.status).toBe(303);
    expect(back.headers.location).toBe(PUBLIC_URL + HOME);
    jar.take(back.headers['set-cookie']);
    expect(jar.header()).not.toBe(before);
    const shown = await app.request('GET', HOME, { headers: { cookie: jar.header() } });
    expect(shown.raw).toContain('OpenAI');
    // The cookie from before the sign-in no longer opens anything.
    expect((await app.request('GET', HOME, { headers: { cookie: before } })).status).toBe(403);
    const events = await db().query(
      `SELECT action, details->>'userBinding' AS binding FROM audit_events WHERE details->>'sessionId' = $1 ORDER BY id`,
      [id],
    );
    expect(events).toEqual([
      { action: 'portal_session.created', binding: null },
      { action: 'portal_session.opened', binding: 'identity_provider' },
      { action: 'portal_session.user_verified', binding: 'identity_provider' },
    ]);
  });

  it('refuses a different person signing in, and keeps showing nothing', async () => {
    const { jar, page, id } = await openPortal(t2, 'alice');
    const back = await app.request('GET', local(await signIn(jar, page, 'mallory')), {
      headers: { cookie: jar.header() },
    });
    expect(back.status).toBe(403);
    expect(back.raw).toContain(
      'This page was opened for another person, but you signed in to corp as someone else',
    );
    expect(back.raw).not.toContain('OpenAI');
    jar.take(back.headers['set-cookie']);
    const page2 = await app.request('GET', HOME, { headers: { cookie: jar.header() } });
    expect(page2.raw).toContain('Sign in with corp');
    expect(page2.raw).not.toContain('OpenAI');
    const [failed] = await db().query(
      `SELECT outcome, actor_id, details->>'reason' AS reason FROM audit_events
        WHERE action = 'portal_session.failed' AND details->>'sessionId' = $1`,
      [id],
    );
    expect(failed).toEqual({ outcome: 'denied', actor_id: 'alice', reason: 'user_mismatch' });
  });

  it('refuses a sign-in that comes back to another browser, and a replayed one', async () => {
    const { jar, page, id } = await openPortal(t2, 'alice');
    const redirectedTo = await signIn(jar, page, 'alice');
    const elsewhere = await openPortal(t2, 'alice');
    const wrong = await app.request('GET', local(redirectedTo), {
      headers: { cookie: elsewhere.jar.header() },
    });
    expect(wrong.status).toBe(400);
    expect(wrong.raw).toContain('This sign-in was started in another browser or window');
    const none = await app.request('GET', local(redirectedTo));
    expect(none.status).toBe(400);
    const [failed] = await db().query(
      `SELECT details->>'reason' AS reason FROM audit_events WHERE action = 'portal_session.failed' AND details->>'sessionId' = $1`,
      [id],
    );
    expect(failed).toEqual({ reason: 'browser_mismatch' });
    // The right browser still completes it, once.
    const ok = await app.request('GET', local(redirectedTo), { headers: { cookie: jar.header() } });
    expect(ok.status).toBe(303);
    const replay = await app.request('GET', local(redirectedTo), { headers: { cookie: jar.header() } });
    expect(replay.status).toBe(400);
    expect(replay.raw).toContain('This sign-in response is unknown, used or expired');
  });
});

describe('the sign-in callback', () => {
  it('answers a malformed, unknown or empty answer with a page, and no cookie', async () => {
    for (const query of ['state=a&state=b', 'state=unknown&code=x', '', `state=${'x'.repeat(600)}`]) {
      const res = await app.request('GET', `${HOME}/login/callback?${query}`);
      expect(res.status).toBe(400);
      expect(String(res.headers['content-type'])).toMatch(/^text\/html/);
      expect(res.raw).toContain('Sign-in not recognised');
      expect(res.headers['set-cookie']).toBeUndefined();
    }
  });
});

describe('hostile strings', () => {
  it('are escaped wherever the page shows them, or refused when they are no valid user id', async () => {
    const evil = await createTenant(app);
    await saveCustomProvider(app, evil, {
      key: 'evil',
      name: 'Evil <b>Git</b> & "co"',
      authMode: 'oauth2',
      oauth2: {
        authorizationUrl: op.endpoints.authorization,
        tokenUrl: op.endpoints.token,
        scopes: ['repo'],
      },
      scopeDescriptions: { repo: '<img src=x onerror=alert(1)>' },
    });
    const named = await app.request('PATCH', `/v1/tenants/${evil.tenantId}`, {
      key: evil.adminKey,
      body: { displayName: '</title><script>alert(1)</script>' },
    });
    expect(named.status).toBe(200);
    const bot = await createConnector(app, evil, {
      name: '"><svg onload=alert(1)>',
      allowedProviders: ['evil'],
    });
    const samples = blns.filter((s) => /[<>&"']/.test(s)).slice(0, 40);
    let shown = 0;
    for (const userId of ['<script>alert("u")</script>', ...samples]) {
      const created = await createLink(evil, { userId });
      if (created.status !== 201) {
        expect({ userId, status: created.status, error: created.body.error }).toEqual({
          userId,
          status: 400,
          error: 'validation_failed',
        });
        continue;
      }
      await importConnection(app, evil, userId, 'evil', {
        type: 'oauth2',
        accessToken: 'x',
        scopes: ['repo'],
      });
      const released = await app.request('POST', '/oauth/token', {
        payload: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: userId,
          subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
          audience: 'evil',
        }).toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(bot) },
      });
      expect(released.status).toBe(200);
      const jar = cookieJar();
      jar.take((await app.request('POST', local(created.body.url))).headers['set-cookie']);
      const page = await app.request('GET', HOME, { headers: { cookie: jar.header() } });
      expect(page.status).toBe(200);
      for (const value of [
        userId,
        'Evil <b>Git</b> & "co"',
        '<img src=x onerror=alert(1)>',
        '"><svg onload=alert(1)>',
      ]) {
        expect(page.raw).toContain(escapeHtml(value));
        // Markup in a value never reaches the page as markup.
        if (/<[a-z/!?]/i.test(value)) expect(page.raw).not.toContain(value);
      }
      expect(page.raw).toContain(`The connections of <code>${escapeHtml(userId)}</code>`);
      expect(page.raw).toContain('&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;');
      expect(page.raw).not.toContain('<script>');
      shown++;
    }
    expect(shown).toBeGreaterThan(10);
  }, 60_000);
});

describe('last use, from the audit trail', () => {
  it('is read through the partial index on released credentials, on every partition', async () => {
    const [parent] = await db().query(
      `SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = 'ix_audit_events_connection_release'::regclass`,
    );
    expect(parent).toEqual({ valid: true });
    const [{ missing }] = await db().query(
      `SELECT count(*)::int AS missing FROM pg_inherits p
        WHERE p.inhparent = 'audit_events'::regclass AND NOT EXISTS (
          SELECT 1 FROM pg_inherits h JOIN pg_index i ON i.indexrelid = h.inhrelid
           WHERE h.inhparent = 'ix_audit_events_connection_release'::regclass AND i.indrelid = p.inhrelid)`,
    );
    expect(missing).toBe(0);
    // The statement the portal runs can use it (this table is too small for the planner to prefer it unasked).
    const plan = await db().transaction(async (m) => {
      await m.query('SET LOCAL enable_seqscan = off');
      await m.query('SET LOCAL enable_bitmapscan = off');
      return m.query(`EXPLAIN (FORMAT JSON) ${LAST_RELEASES_SQL}`, [
        t.tenantId,
        ['1c9e7a5b-3d2f-4b8e-a6c4-8f0d2b4e6a10'],
      ]);
    });
    const text = JSON.stringify(plan);
    expect(text).toContain('_connection_release');
    expect(text).not.toContain('Seq Scan');
  });
});
