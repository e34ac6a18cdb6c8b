/**
 * The hosted connect flow end to end, over HTTP with a cookie jar: oidc-provider on loopback is the
 * third-party OAuth provider (PKCE required, refresh tokens, `iss` in responses), reached through a tenant's
 * custom provider and the tenant's own app. Then the token endpoint releases what was stored, and the
 * provider confirms (introspection) that the stored token belongs to the user who connected. Also the OAuth
 * client checklist: reused, expired and foreign state, wrong `iss`, a code from another session, declined
 * consent, open-redirect attempts; and the API-key form with verification and CSRF.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startTestApp, type TestApp } from '../../support/app.js';
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
import { ProviderRevocationService } from '../../../src/connections/provider-revocation.service.js';
import { webhookSignature } from '../../../src/common/webhook-signature.js';
import { WebhooksService } from '../../../src/tenants/webhooks.service.js';
import { cookieJar, localPath } from '../../support/browser.js';

const PUBLIC_URL = 'https://custos.example.test';
const CLIENT = { client_id: 'custos-inhouse', client_secret: 'inhouse-secret-' + Date.now() };

let app: TestApp;
let op: TestOAuthProvider;
/** The tenant's identity provider for connectLogin. */
let corp: TestOAuthProvider;
const LOGIN_CLIENT = { client_id: 'custos-login', client_secret: 'login-secret-' + Date.now() };
let keyServer: http.Server;
let keyServerHost: string;
/** Webhook deliveries received by the loopback server at /hook. */
const hooks: { headers: http.IncomingHttpHeaders; body: string }[] = [];
/** An allow-listed port where nothing listens: a provider that is down. */
let deadHost: string;
let t: TenantFixture;
let connector: SecretConnector;

async function newSession(body: Record<string, unknown> = {}) {
  const res = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
    key: t.adminKey,
    body: { userId: 'alice', provider: 'inhouse', ...body },
  });
  expect(res.status).toBe(201);
  return res.body as { id: string; url: string };
}

/** Opens the link and presses the button: returns the provider authorization URL and the jar. */
async function startFlow(sessionUrl: string) {
  const jar = cookieJar();
  const pageRes = await app.request('GET', local(sessionUrl));
  expect(pageRes.status).toBe(200);
  jar.take(pageRes.headers['set-cookie']);
  const csrf = /name="csrf" value="([^"]+)"/.exec(pageRes.raw)?.[1];
  const start = await app.request('POST', local(sessionUrl) + '/start', {
    payload: `csrf=${csrf}`,
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
  });
  expect(start.status).toBe(303);
  jar.take(start.headers['set-cookie']);
  return { page: pageRes, authorizationUrl: String(start.headers.location), jar, csrf: csrf! };
}

async function callback(redirectedTo: string, cookie: string) {
  return app.request('GET', local(redirectedTo), { headers: { cookie } });
}

const exchange = (user: string, provider = 'inhouse') =>
  app.request('POST', '/oauth/token', {
    payload: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: user,
      subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
      audience: provider,
    }).toString(),
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: basicAuth(connector),
    },
  });

const local = (url: string) => localPath(url, PUBLIC_URL);

beforeAll(async () => {
  op = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [`${PUBLIC_URL}/connect/callback/inhouse`] }],
    users: { alice: { email: 'alice@example.com' }, mallory: {} },
  });
  corp = await startOAuthProvider({
    clients: [{ ...LOGIN_CLIENT, redirect_uris: [`${PUBLIC_URL}/connect/login/callback`] }],
    users: { alice: {}, mallory: {} },
  });
  keyServer = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      if (req.url === '/hook') {
        hooks.push({ headers: req.headers, body });
        res.writeHead(204).end();
        return;
      }
      res.writeHead(req.headers.authorization === 'Bearer good-key-123' ? 200 : 401).end('{}');
    });
  });
  await new Promise<void>((r) => keyServer.listen(0, '127.0.0.1', r));
  keyServerHost = `127.0.0.1:${(keyServer.address() as AddressInfo).port}`;
  const probe = http.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  deadHost = `127.0.0.1:${(probe.address() as AddressInfo).port}`;
  await new Promise((r) => probe.close(r));
  app = await startTestApp({
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${op.hostPort},${keyServerHost},${deadHost},${corp.hostPort}`,
  });
  t = await createTenant(app);
  const provider = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/inhouse`, {
    key: t.adminKey,
    body: {
      key: 'inhouse',
      name: 'In-house Git',
      authMode: 'oauth2',
      oauth2: {
        authorizationUrl: op.endpoints.authorization,
        tokenUrl: op.endpoints.token,
        revocationUrl: op.endpoints.revocation,
        issuer: op.issuer,
        // The ID token is verified against it, and only then is its sub kept as the account id.
        jwksUri: op.endpoints.jwks,
        scopes: ['openid', 'offline_access', 'repo'],
        pkce: true,
        tokenEndpointAuthMethod: 'client_secret_basic',
      },
    },
  });
  expect([200, 201]).toContain(provider.status);
  const keyProvider = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/inhouse-keys`, {
    key: t.adminKey,
    body: {
      key: 'inhouse-keys',
      name: 'In-house API',
      authMode: 'api_key',
      apiKey: { verify: { url: `http://${keyServerHost}/me`, method: 'GET' } },
    },
  });
  expect([200, 201]).toContain(keyProvider.status);
  const appRes = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/inhouse/app`, {
    key: t.adminKey,
    body: { clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret },
  });
  expect(appRes.status).toBe(201);
  expect(JSON.stringify(appRes.body)).not.toContain(CLIENT.client_secret);
  connector = await createConnector(app, t, {
    name: 'backend',
    allowedProviders: ['inhouse', 'inhouse-keys'],
  });
});

afterAll(async () => {
  await app.close();
  await op.close();
  await corp.close();
  await new Promise((r) => keyServer.close(r));
});

describe('OAuth connect flow', () => {
  it('keeps the tenant app’s client secret sealed, never in the clear', async () => {
    const [row] = await app.custos.runtime.dataSource.query(
      `SELECT client_secret FROM provider_apps WHERE tenant_id = $1 AND provider = 'inhouse'`,
      [t.tenantId],
    );
    expect(row.client_secret.subarray(0, 3).toString()).toBe('CSE');
    expect(row.client_secret.toString('latin1')).not.toContain(CLIENT.client_secret);
    const shown = await app.request('GET', `/v1/tenants/${t.tenantId}/providers/inhouse/app`, {
      key: t.adminKey,
    });
    expect(shown.body).toMatchObject({
      clientId: CLIENT.client_id,
      hasClientSecret: true,
      hasPrivateKey: false,
    });
    expect(shown.raw).not.toContain(CLIENT.client_secret);
  });

  it('connects a user end to end, and the token endpoint then releases that user’s own token', async () => {
    const session = await newSession({ scopes: ['openid', 'offline_access', 'repo'] });
    const { page, authorizationUrl, jar } = await startFlow(session.url);
    // The page names tenant, provider and scopes, and is locked down.
    expect(page.raw).toContain('In-house Git');
    expect(page.raw).toContain('<code>repo</code>');
    expect(page.headers['cache-control']).toBe('no-store');
    expect(page.headers['referrer-policy']).toBe('no-referrer');
    expect(page.headers['x-frame-options']).toBe('DENY');
    expect(String(page.headers['content-security-policy'])).toMatch(/default-src 'none'/);
    expect(String(page.headers['content-security-policy'])).toMatch(/frame-ancestors 'none'/);
    expect(page.raw).not.toMatch(/<script/i);
    // The authorization request: PKCE S256, state, nonce, the per-provider redirect URI.
    const auth = new URL(authorizationUrl);
    expect(auth.origin + auth.pathname).toBe(op.endpoints.authorization);
    expect(auth.searchParams.get('code_challenge_method')).toBe('S256');
    expect(auth.searchParams.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(auth.searchParams.get('state')).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    expect(auth.searchParams.get('nonce')).toBeTruthy();
    expect(auth.searchParams.get('redirect_uri')).toBe(`${PUBLIC_URL}/connect/callback/inhouse`);
    expect(jar.get('__Host-custos_flow')).toBeTruthy();

    const { redirectedTo } = await op.authorize(authorizationUrl, { account: 'alice' });
    expect(new URL(redirectedTo).searchParams.get('iss')).toBe(op.issuer);
    const done = await callback(redirectedTo, jar.header());
    expect(done.status).toBe(200);
    expect(done.raw).toContain('is connected');

    const status = await app.request('GET', `/v1/tenants/${t.tenantId}/connect/sessions/${session.id}`, {
      key: t.adminKey,
    });
    expect(status.body.status).toBe('completed');
    const released = await exchange('alice');
    expect(released.status).toBe(200);
    // The provider confirms the stored token is alice's.
    const introspection = await fetch(op.endpoints.introspection, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization:
          'Basic ' + Buffer.from(`${CLIENT.client_id}:${CLIENT.client_secret}`).toString('base64'),
      },
      body: new URLSearchParams({ token: released.body.access_token }),
    }).then((r) => r.json());
    expect(introspection).toMatchObject({ active: true, sub: 'alice' });
    // The stored connection has the refresh token (never released) and the granted scopes.
    const [row] = await app.custos.runtime.dataSource.query(
      `SELECT scopes, refresh_token IS NOT NULL AS has_refresh, external_account_id FROM connections WHERE tenant_id = $1 AND user_id = 'alice' AND provider = 'inhouse' AND revoked_at IS NULL`,
      [t.tenantId],
    );
    expect(row.has_refresh).toBe(true);
    // The provider's own id of the account (the verified ID token's sub).
    expect(row.external_account_id).toBe('alice');
    expect(row.scopes).toEqual(expect.arrayContaining(['repo']));
    // The link is spent.
    expect((await app.request('GET', local(session.url))).status).toBe(410);
    const events = await app.custos.runtime.dataSource.query(
      `SELECT action FROM audit_events WHERE tenant_id = $1 AND details->>'sessionId' = $2 ORDER BY id`,
      [t.tenantId, session.id],
    );
    expect(events.map((e: { action: string }) => e.action)).toEqual([
      'connect_session.created',
      'connect_session.opened',
      'connect_session.started',
      'connect_session.completed',
    ]);
    // The connection is recorded as made by the hosted flow, not imported through the API.
    const [created] = await app.custos.runtime.dataSource.query(
      `SELECT details FROM audit_events WHERE tenant_id = $1 AND action IN ('connection.created', 'connection.replaced')
          AND subject_user_id = 'alice' AND provider = 'inhouse' ORDER BY id DESC LIMIT 1`,
      [t.tenantId],
    );
    expect(created.details.source).toBe('connect');
  });

  it('refuses a replayed, foreign or unknown state', async () => {
    const session = await newSession();
    const { authorizationUrl, jar } = await startFlow(session.url);
    const { redirectedTo } = await op.authorize(authorizationUrl, { account: 'alice' });
    // Another browser (no flow cookie, or someone else's) cannot use it.
    expect((await callback(redirectedTo, '')).status).toBe(400);
    expect((await callback(redirectedTo, '__Host-custos_flow=someone-else')).status).toBe(400);
    // The right browser can, once.
    expect((await callback(redirectedTo, jar.header())).status).toBe(200);
    const replay = await callback(redirectedTo, jar.header());
    expect(replay.status).toBe(400);
    expect(replay.raw).not.toContain('is connected');
    const made = new URL(redirectedTo);
    made.searchParams.set('state', 'made-up-state-value');
    expect((await callback(made.href, jar.header())).status).toBe(400);
  });

  it('refuses the answer for a session that expired meanwhile', async () => {
    const session = await newSession();
    const flow = await startFlow(session.url);
    const { redirectedTo } = await op.authorize(flow.authorizationUrl, { account: 'alice' });
    await app.custos.runtime.dataSource.query(
      `UPDATE connect_sessions SET expires_at = now() - interval '1 second' WHERE id = $1`,
      [session.id],
    );
    const late = await callback(redirectedTo, flow.jar.header());
    expect(late.status).toBe(410);
    expect(late.raw).toContain('has expired');
    expect(late.raw).not.toContain('is connected');
    expect((await app.request('GET', local(session.url))).status).toBe(410);
  });

  it('refuses a wrong iss and a code from another session', async () => {
    const s1 = await newSession();
    const s2 = await newSession();
    const f1 = await startFlow(s1.url);
    const f2 = await startFlow(s2.url);
    const r1 = new URL((await op.authorize(f1.authorizationUrl, { account: 'alice' })).redirectedTo);
    const r2 = new URL((await op.authorize(f2.authorizationUrl, { account: 'mallory' })).redirectedTo);
    // Session 1's state with session 2's code: the PKCE verifier does not match, nothing is stored.
    const swapped = new URL(r1.href);
    swapped.searchParams.set('code', r2.searchParams.get('code')!);
    const res = await callback(swapped.href, f1.jar.header());
    expect(res.status).toBe(502);
    const wrongIss = new URL(r2.href);
    wrongIss.searchParams.set('iss', 'https://evil.example');
    expect((await callback(wrongIss.href, f2.jar.header())).status).toBe(502);
    // Each attempt failed, and each link stays usable until it expires.
    const shown: Record<string, string> = {};
    for (const s of [s1, s2]) {
      const st = await app.request('GET', `/v1/tenants/${t.tenantId}/connect/sessions/${s.id}`, {
        key: t.adminKey,
      });
      expect(st.body.status).toBe('failed');
      shown[s.id] = st.body.failureReason;
    }
    expect(shown).toEqual({ [s1.id]: 'invalid_grant', [s2.id]: 'OAUTH_INVALID_RESPONSE' });
    // Each failed for its own reason: the provider refused the swapped code (PKCE), Custos refused the iss.
    const reasons = await app.custos.runtime.dataSource.query(
      `SELECT details->>'sessionId' AS session, details->>'reason' AS reason FROM audit_events
        WHERE action = 'connect_session.failed' AND details->>'sessionId' = ANY($1) ORDER BY id`,
      [[s1.id, s2.id]],
    );
    expect(reasons).toEqual([
      { session: s1.id, reason: 'invalid_grant' },
      { session: s2.id, reason: 'OAUTH_INVALID_RESPONSE' },
    ]);
  });

  it('shows a clear page when the user declines, and the link still works afterwards', async () => {
    const session = await newSession();
    const first = await startFlow(session.url);
    const { redirectedTo } = await op.authorize(first.authorizationUrl, { deny: true });
    const declined = await callback(redirectedTo, first.jar.header());
    expect(declined.status).toBe(200);
    expect(declined.raw).toContain('did not allow access');
    const again = await startFlow(session.url);
    const ok = await op.authorize(again.authorizationUrl, { account: 'alice' });
    expect((await callback(ok.redirectedTo, again.jar.header())).status).toBe(200);
  });

  it('requires the CSRF token to start, and a fresh PKCE verifier every time', async () => {
    const session = await newSession();
    const noCsrf = await app.request('POST', local(session.url) + '/start', {
      payload: 'csrf=forged',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(noCsrf.status).toBe(403);
    const a = new URL((await startFlow(session.url)).authorizationUrl);
    const b = new URL((await startFlow(session.url)).authorizationUrl);
    expect(a.searchParams.get('code_challenge')).not.toBe(b.searchParams.get('code_challenge'));
    expect(a.searchParams.get('state')).not.toBe(b.searchParams.get('state'));
  });

  it('redirects to an allowed returnTo, and refuses open-redirect attempts', async () => {
    const bad = [
      '//evil.example',
      '/\\evil.example',
      'javascript:alert(1)',
      'https://ok.example/a\r\nX: y',
      'http://evil.example/',
    ];
    for (const url of bad) {
      const res = await app.request('PATCH', `/v1/tenants/${t.tenantId}`, {
        key: t.adminKey,
        body: { allowedReturnUrls: [url] },
      });
      expect({ url, status: res.status }).toEqual({ url, status: 400 });
    }
    const ok = await app.request('PATCH', `/v1/tenants/${t.tenantId}`, {
      key: t.adminKey,
      body: { allowedReturnUrls: ['https://app.example.com/connected'] },
    });
    expect(ok.status).toBe(200);
    const refused = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
      key: t.adminKey,
      body: { userId: 'alice', provider: 'inhouse', returnTo: 'https://app.example.com/connected/../evil' },
    });
    expect(refused.body.error).toBe('return_url_not_allowed');
    const session = await newSession({ returnTo: 'https://app.example.com/connected' });
    const flow = await startFlow(session.url);
    const { redirectedTo } = await op.authorize(flow.authorizationUrl, { account: 'alice' });
    const done = await callback(redirectedTo, flow.jar.header());
    expect(done.status).toBe(303);
    expect(done.headers.location).toBe(
      `https://app.example.com/connected?custos_session=${session.id}&custos_outcome=connected`,
    );
  });
});

describe('sign-in before connecting (connectLogin)', () => {
  let t2: TenantFixture;
  /** Requires sign-in through the identity provider named 'corp' for the tenant's connect flow. */
  const setConnectLogin = (tenant: TenantFixture) =>
    app.request('PATCH', `/v1/tenants/${tenant.tenantId}`, {
      key: tenant.adminKey,
      body: {
        connectLogin: {
          identityProvider: 'corp',
          ...{ clientId: LOGIN_CLIENT.client_id, clientSecret: LOGIN_CLIENT.client_secret },
        },
      },
    });
  beforeAll(async () => {
    t2 = await createTenant(app);
    await trustIdentityProvider(
      app,
      t2,
      { issuer: corp.issuer, jwksUri: corp.endpoints.jwks },
      { algorithms: ['RS256'] },
      'corp',
    );
    await saveCustomProvider(app, t2, {
      key: 'inhouse',
      name: 'In-house Git',
      authMode: 'oauth2',
      oauth2: {
        authorizationUrl: op.endpoints.authorization,
        tokenUrl: op.endpoints.token,
        issuer: op.issuer,
        scopes: ['openid', 'repo'],
      },
    });
    await saveProviderApp(app, t2, 'inhouse', CLIENT);
    const res = await setConnectLogin(t2);
    expect(res.status).toBe(200);
    expect(res.body.connectLogin).toEqual({ identityProvider: 'corp', clientId: LOGIN_CLIENT.client_id });
    expect(res.raw).not.toContain(LOGIN_CLIENT.client_secret);
  });

  it('refuses a sign-in naming an identity provider the tenant does not have, even one another tenant has', async () => {
    const other = await createTenant(app);
    const res = await setConnectLogin(other);
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('validation_failed');
    const after = await app.request('GET', `/v1/tenants/${other.tenantId}`, { key: other.adminKey });
    expect(after.body.connectLogin).toBeNull();
  });

  async function openAndSignIn(account: string) {
    const created = await app.request('POST', `/v1/tenants/${t2.tenantId}/connect/sessions`, {
      key: t2.adminKey,
      body: { userId: 'alice', provider: 'inhouse' },
    });
    const url = local(created.body.url);
    const jar = cookieJar();
    const first = await app.request('GET', url);
    jar.take(first.headers['set-cookie']);
    expect(first.raw).toContain('Sign in with corp');
    expect(first.raw).not.toContain('Continue to In-house Git');
    const csrf = /name="csrf" value="([^"]+)"/.exec(first.raw)![1];
    // Connecting before signing in is refused.
    const early = await app.request('POST', url + '/start', {
      payload: `csrf=${csrf}`,
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
    });
    expect(early.status).toBe(403);
    const login = await app.request('POST', url + '/login', {
      payload: `csrf=${csrf}`,
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
    });
    expect(login.status).toBe(303);
    jar.take(login.headers['set-cookie']);
    const auth = new URL(String(login.headers.location));
    expect(auth.origin).toBe(new URL(corp.issuer).origin);
    expect(auth.searchParams.get('code_challenge_method')).toBe('S256');
    expect(auth.searchParams.get('nonce')).toBeTruthy();
    const { redirectedTo } = await corp.authorize(auth.href, { account });
    const back = await app.request('GET', local(redirectedTo), { headers: { cookie: jar.header() } });
    jar.take(back.headers['set-cookie']);
    return { url, jar, back, sessionId: created.body.id as string };
  }

  it('connects only after the person signs in as the session’s user', async () => {
    const { url, jar, back, sessionId } = await openAndSignIn('alice');
    expect(back.status).toBe(303);
    expect(back.headers.location).toBe(PUBLIC_URL + url);
    const page = await app.request('GET', url, { headers: { cookie: jar.header() } });
    jar.take(page.headers['set-cookie']);
    expect(page.raw).toContain('Continue to In-house Git');
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.raw)![1];
    const start = await app.request('POST', url + '/start', {
      payload: `csrf=${csrf}`,
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
    });
    expect(start.status).toBe(303);
    jar.take(start.headers['set-cookie']);
    const { redirectedTo } = await op.authorize(String(start.headers.location), { account: 'alice' });
    expect((await callback(redirectedTo, jar.header())).status).toBe(200);
    const events = await app.custos.runtime.dataSource.query(
      `SELECT action, details->>'userBinding' AS binding FROM audit_events
        WHERE tenant_id = $1 AND details->>'sessionId' = $2 ORDER BY id`,
      [t2.tenantId, sessionId],
    );
    expect(events.map((e: { action: string }) => e.action)).toEqual(
      expect.arrayContaining(['connect_session.user_verified', 'connect_session.completed']),
    );
    expect(events.find((e: { action: string }) => e.action === 'connect_session.completed').binding).toBe(
      'identity_provider',
    );
  });

  it('refuses a person who signs in as someone else, and keeps the connect step closed', async () => {
    const { url, jar, back, sessionId } = await openAndSignIn('mallory');
    expect(back.status).toBe(403);
    expect(back.raw).toContain(
      'This link was made for another person, but you signed in to corp as someone else',
    );
    // The way forward: the same link, to sign in again with the right account.
    expect(back.raw).toContain(`<a class="button" href="${PUBLIC_URL}${url}">Try again</a>`);
    const view = await app.request('GET', `/v1/tenants/${t2.tenantId}/connect/sessions/${sessionId}`, {
      key: t2.adminKey,
    });
    expect(view.body).toMatchObject({ status: 'failed', failureReason: 'user_mismatch' });
    const page = await app.request('GET', url, { headers: { cookie: jar.header() } });
    expect(page.raw).toContain('Sign in with corp');
    const [failed] = await app.custos.runtime.dataSource.query(
      `SELECT details->>'reason' AS reason FROM audit_events
        WHERE action = 'connect_session.failed' AND details->>'sessionId' = $1`,
      [sessionId],
    );
    expect(failed.reason).toBe('user_mismatch');
  });
});

describe('webhook', () => {
  it('notifies connection.created with a signature the receiver can check, and refuses private URLs', async () => {
    // Only allow-listed loopback hosts pass the SSRF guard; anything else private is refused at save.
    const refused = await app.request('PATCH', `/v1/tenants/${t.tenantId}`, {
      key: t.adminKey,
      body: { webhookUrl: 'http://169.254.169.254/hook' },
    });
    expect(refused.body.error).toBe('outbound_url_refused');
    const set = await app.request('PATCH', `/v1/tenants/${t.tenantId}`, {
      key: t.adminKey,
      body: { webhookUrl: `http://${keyServerHost}/hook` },
    });
    expect(set.status).toBe(200);
    const secret = set.body.webhookSecret as string;
    expect(secret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    const again = await app.request('GET', `/v1/tenants/${t.tenantId}`, { key: t.adminKey });
    expect(again.raw).not.toContain(secret);
    const [stored] = await app.custos.runtime.dataSource.query(
      'SELECT webhook_secret FROM tenants WHERE id = $1',
      [t.tenantId],
    );
    expect(stored.webhook_secret.toString('latin1')).not.toContain(secret);

    const session = await newSession({ userId: 'wendy' });
    const flow = await startFlow(session.url);
    const { redirectedTo } = await op.authorize(flow.authorizationUrl, { account: 'wendy' });
    expect((await callback(redirectedTo, flow.jar.header())).status).toBe(200);
    await app.custos.app.get(WebhooksService).settled();
    const delivery = hooks.find((r) => r.headers['custos-event-type'] === 'connection.created');
    expect(delivery).toBeDefined();
    const sig = String(delivery!.headers['custos-signature']);
    const [, ts] = /^t=(\d+),v1=[0-9a-f]{64}$/.exec(sig)!;
    expect(sig).toBe(webhookSignature(secret, Number(ts), delivery!.body));
    expect(Math.abs(Date.now() / 1000 - Number(ts))).toBeLessThan(60);
    const body = JSON.parse(delivery!.body);
    expect(body).toMatchObject({
      type: 'connection.created',
      tenantId: t.tenantId,
      data: { userId: 'wendy', provider: 'inhouse', connectSessionId: session.id },
    });
    expect(delivery!.body).not.toMatch(/access|refresh|secret/i);
    // A tampered body fails the same check.
    expect(webhookSignature(secret, Number(ts), delivery!.body.replace('wendy', 'mallory'))).not.toBe(sig);
  });
});

describe('disconnect', () => {
  const revocations = () => app.custos.app.get(ProviderRevocationService);
  const pending = (connectionId: string) =>
    app.custos.runtime.dataSource.query<
      { token_type: string; attempts: number; last_error: string | null }[]
    >(
      'SELECT token_type, attempts, last_error FROM pending_revocations WHERE connection_id = $1 ORDER BY position',
      [connectionId],
    );

  it('destroys the local secret at once and revokes the tokens at the provider, refresh token first', async () => {
    const session = await newSession({ userId: 'dora', scopes: ['openid', 'offline_access', 'repo'] });
    const flow = await startFlow(session.url);
    const { redirectedTo } = await op.authorize(flow.authorizationUrl, { account: 'dora' });
    expect((await callback(redirectedTo, flow.jar.header())).status).toBe(200);
    const released = await exchange('dora');
    expect(released.status).toBe(200);
    const [conn] = await app.custos.runtime.dataSource.query(
      `SELECT id FROM connections WHERE tenant_id = $1 AND user_id = 'dora' AND revoked_at IS NULL`,
      [t.tenantId],
    );
    const before = { count: op.revocations, types: op.revokedTokenTypes.length };
    const del = await app.request('DELETE', `/v1/tenants/${t.tenantId}/connections/${conn.id}`, {
      key: t.adminKey,
    });
    expect(del.status).toBe(204);
    expect((await exchange('dora')).body.error).toBe('consent_required');
    const [row] = await app.custos.runtime.dataSource.query(
      'SELECT secret, refresh_token FROM connections WHERE id = $1',
      [conn.id],
    );
    expect(row).toEqual({ secret: null, refresh_token: null });
    // The background attempt (or this one) revokes both, refresh token first.
    await revocations().processDue(conn.id);
    for (let i = 0; i < 50 && (await pending(conn.id)).length > 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await pending(conn.id)).toEqual([]);
    expect(op.revocations - before.count).toBe(2);
    // The provider names what it revoked; revoking the refresh token ends the whole grant at this provider, so
    // the access token it is sent next is already unknown there.
    expect(op.revokedTokenTypes.slice(before.types)[0]).toBe('refresh_token');
    const introspection = await fetch(op.endpoints.introspection, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization:
          'Basic ' + Buffer.from(`${CLIENT.client_id}:${CLIENT.client_secret}`).toString('base64'),
      },
      body: new URLSearchParams({ token: released.body.access_token }),
    }).then((r) => r.json());
    expect(introspection).toEqual({ active: false });
    const audit = await app.custos.runtime.dataSource.query(
      `SELECT action, details->>'tokenType' AS token FROM audit_events WHERE connection_id = $1 ORDER BY id`,
      [conn.id],
    );
    expect(audit.map((a: { action: string }) => a.action)).toEqual(
      expect.arrayContaining(['connection.revoked', 'connection.revoked_at_provider']),
    );
  });

  it('retries when the provider is down, while the local secret is already gone', async () => {
    const definition = {
      key: 'flaky',
      name: 'Flaky',
      authMode: 'oauth2',
      oauth2: {
        authorizationUrl: op.endpoints.authorization,
        tokenUrl: op.endpoints.token,
        revocationUrl: `http://${deadHost}/revoke`,
        tokenEndpointAuthMethod: 'client_secret_basic',
      },
    };
    await saveCustomProvider(app, t, definition);
    await saveProviderApp(app, t, 'flaky', CLIENT);
    const { id } = await importConnection(app, t, 'erin', 'flaky', {
      type: 'oauth2',
      accessToken: 'opaque-access-erin',
      refreshToken: 'opaque-refresh-erin',
    });
    expect(
      (await app.request('DELETE', `/v1/tenants/${t.tenantId}/connections/${id}`, { key: t.adminKey }))
        .status,
    ).toBe(204);
    await revocations().processDue(id);
    // The attempt made in the background by the DELETE may still be under way.
    for (let i = 0; i < 100 && ((await pending(id))[0]?.attempts ?? 0) === 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const waiting = await pending(id);
    expect(waiting.map((p) => p.token_type)).toEqual(['refresh_token', 'access_token']);
    expect(waiting[0].attempts).toBeGreaterThanOrEqual(1);
    expect(waiting[0].last_error).toBeTruthy();
    const [row] = await app.custos.runtime.dataSource.query(
      'SELECT secret, refresh_token FROM connections WHERE id = $1',
      [id],
    );
    expect(row).toEqual({ secret: null, refresh_token: null });
    // The provider is back (its revocation endpoint fixed), and the retry is due.
    await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/flaky`, {
      key: t.adminKey,
      body: { ...definition, oauth2: { ...definition.oauth2, revocationUrl: op.endpoints.revocation } },
    });
    await app.custos.runtime.dataSource.query(
      'UPDATE pending_revocations SET next_attempt_at = now() WHERE connection_id = $1',
      [id],
    );
    const before = op.revocations;
    expect(await revocations().processDue(id)).toBe(2);
    expect(op.revocations - before).toBe(2);
    expect(await pending(id)).toEqual([]);
  });
});

describe('API-key connect flow', () => {
  it('verifies the key with the provider before saving it, behind a CSRF-protected form', async () => {
    const res = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
      key: t.adminKey,
      body: { userId: 'bob', provider: 'inhouse-keys' },
    });
    const url = local(res.body.url);
    const jar = cookieJar();
    const form = await app.request('GET', url);
    jar.take(form.headers['set-cookie']);
    expect(form.raw).toMatch(/<label for="apiKey">/);
    const csrf = /name="csrf" value="([^"]+)"/.exec(form.raw)![1];
    const post = (body: string, cookie = jar.header()) =>
      app.request('POST', url + '/api-key', {
        payload: body,
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
      });
    expect((await post(`csrf=${csrf}&apiKey=good-key-123`, '')).status).toBe(403);
    const wrong = await post(`csrf=${csrf}&apiKey=wrong-key`);
    expect(wrong.status).toBe(400);
    expect(wrong.raw).toContain('did not accept this key');
    expect(wrong.raw).not.toContain('wrong-key');
    const good = await post(`csrf=${csrf}&apiKey=good-key-123`);
    expect(good.status).toBe(200);
    const released = await exchange('bob', 'inhouse-keys');
    expect(released.body).toMatchObject({ access_token: 'good-key-123', token_type: 'N_A' });
  });
});
