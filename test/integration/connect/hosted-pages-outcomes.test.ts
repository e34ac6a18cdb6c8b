/**
 * The hosted pages, finished: scopes in the provider's words; a link for a provider the tenant has not set up
 * refused when it would be made (admin API, connector, token endpoint); an attempt that is declined or fails
 * recorded on the session, audited with a stable reason and handed back to `returnTo` with the session id and
 * outcome; and every page that ends a step saying what happened and what to do next, with the link that helps.
 * oidc-provider on loopback is the third-party provider; a loopback server checks API keys.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { startTestApp, type Reply, type TestApp } from '../../support/app.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  saveCustomProvider,
  saveProviderApp,
  type SecretConnector,
  type TenantFixture,
} from '../../support/factories.js';
import { startOAuthProvider, type TestOAuthProvider } from '../../support/oauth-provider.js';
import { cookieJar, localPath } from '../../support/browser.js';

const PUBLIC_URL = 'https://custos.example.test';
const CLIENT = { client_id: 'outcomes-app', client_secret: 'outcomes-secret-' + Date.now() };
const RETURN_TO = 'https://app.example.com/done?from=custos';

let app: TestApp;
let op: TestOAuthProvider;
let keyServer: http.Server;
let t: TenantFixture;
let connector: SecretConnector;

const local = (url: string) => localPath(url, PUBLIC_URL);
const db = () => app.custos.runtime.dataSource;

const inhouse = {
  key: 'inhouse',
  name: 'In-house Git',
  authMode: 'oauth2',
  scopeDescriptions: {
    openid: 'Confirm who you are',
    repo: 'Read and write your repositories',
  },
} as const;

async function newSession(body: Record<string, unknown> = {}) {
  const res = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
    key: t.adminKey,
    body: { userId: 'alice', provider: 'inhouse', ...body },
  });
  expect(res.status).toBe(201);
  return res.body as { id: string; url: string };
}

/** Opens the link and presses the button: the provider authorization URL and the browser's cookies. */
async function startFlow(sessionUrl: string) {
  const jar = cookieJar();
  const page = await app.request('GET', local(sessionUrl));
  expect(page.status).toBe(200);
  jar.take(page.headers['set-cookie']);
  const csrf = /name="csrf" value="([^"]+)"/.exec(page.raw)?.[1];
  const start = await app.request('POST', local(sessionUrl) + '/start', {
    payload: `csrf=${csrf}`,
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
  });
  expect(start.status).toBe(303);
  jar.take(start.headers['set-cookie']);
  return { authorizationUrl: String(start.headers.location), jar };
}

const callback = (redirectedTo: string, cookie: string) =>
  app.request('GET', local(redirectedTo), { headers: { cookie } });

/** The provider's error redirect for the flow started at `authorizationUrl`. */
function errorRedirect(authorizationUrl: string, error: string): string {
  const state = new URL(authorizationUrl).searchParams.get('state')!;
  return `${PUBLIC_URL}/connect/callback/inhouse?${new URLSearchParams({ error, state, iss: op.issuer }).toString()}`;
}

const sessionView = async (id: string) =>
  (await app.request('GET', `/v1/tenants/${t.tenantId}/connect/sessions/${id}`, { key: t.adminKey })).body;

const sessionEvents = (id: string) =>
  db().query<{ action: string; outcome: string; details: Record<string, unknown> }[]>(
    `SELECT action, outcome, details FROM audit_events WHERE details->>'sessionId' = $1 ORDER BY id`,
    [id],
  );

/** The links a page offers, as {label: href}. */
function links(page: Reply): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of page.raw.matchAll(/<a class="[^"]*" href="([^"]*)">([^<]*)<\/a>/g)) {
    out[m[2]] = m[1].replace(/&amp;/g, '&');
  }
  return out;
}

const exchange = (user: string, provider: string) =>
  app.request('POST', '/oauth/token', {
    payload: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: user,
      subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
      audience: provider,
    }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(connector) },
  });

beforeAll(async () => {
  op = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [`${PUBLIC_URL}/connect/callback/inhouse`] }],
    users: { alice: {} },
  });
  keyServer = http.createServer((req, res) => {
    res.writeHead(req.headers.authorization === 'Bearer good-key' ? 200 : 401).end('{}');
  });
  await new Promise<void>((r) => keyServer.listen(0, '127.0.0.1', r));
  const keyHost = `127.0.0.1:${(keyServer.address() as AddressInfo).port}`;
  app = await startTestApp({
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${op.hostPort},${keyHost}`,
  });
  t = await createTenant(app);
  await saveCustomProvider(app, t, {
    ...inhouse,
    oauth2: {
      authorizationUrl: op.endpoints.authorization,
      tokenUrl: op.endpoints.token,
      issuer: op.issuer,
      scopes: ['openid', 'repo'],
    },
  });
  await saveProviderApp(app, t, 'inhouse', CLIENT);
  await saveCustomProvider(app, t, {
    key: 'inhouse-keys',
    name: 'In-house API',
    authMode: 'api_key',
    apiKey: { verify: { url: `http://${keyHost}/me` } },
  });
  const patched = await app.request('PATCH', `/v1/tenants/${t.tenantId}`, {
    key: t.adminKey,
    body: { allowedReturnUrls: [RETURN_TO], displayName: 'Acme' },
  });
  expect(patched.status).toBe(200);
  connector = await createConnector(app, t, { allowedProviders: ['inhouse', 'slack', 'inhouse-keys'] });
});

afterAll(async () => {
  await app?.close();
  await op?.close();
  await new Promise((r) => keyServer?.close(r));
});

describe('scopes in words', () => {
  it('shows each scope in the provider’s words, and a scope without words as its token', async () => {
    const session = await newSession({ scopes: ['openid', 'repo', 'admin:org'] });
    const page = await app.request('GET', local(session.url));
    expect(page.raw).toContain('<li>Confirm who you are <code class="scope">openid</code></li>');
    expect(page.raw).toContain('<li>Read and write your repositories <code class="scope">repo</code></li>');
    expect(page.raw).toContain('<li><code>admin:org</code></li>');
  });

  it('shows the scopes the request will ask for: the app’s defaults when the session names none', async () => {
    await saveProviderApp(app, t, 'github', { client_id: 'gh', client_secret: 'gh-secret' });
    const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/github/app`, {
      key: t.adminKey,
      body: { clientId: 'gh', clientSecret: 'gh-secret', scopes: ['repo', 'gist'] },
    });
    expect(res.status).toBe(200);
    const session = await newSession({ provider: 'github' });
    const page = await app.request('GET', local(session.url));
    // The catalog's words for GitHub's scopes (providers/github.yaml).
    expect(page.raw).toMatch(/<li>[^<]*repositories[^<]* <code class="scope">repo<\/code><\/li>/);
    expect(page.raw).toMatch(/<li>[^<]*gists[^<]* <code class="scope">gist<\/code><\/li>/);
    expect(page.raw).not.toContain('read:user');
  });

  it('refuses scope descriptions that are not clean, bounded text, or on a provider without scopes', async () => {
    const bad: [Record<string, unknown>, string][] = [
      [{ repo: 'Read\u202Eseirotisoper' }, 'scopeDescriptions.repo'],
      [{ repo: 'Read\nyour code' }, 'scopeDescriptions.repo'],
      [{ repo: 'x'.repeat(201) }, 'scopeDescriptions.repo'],
      [{ repo: '' }, 'scopeDescriptions.repo'],
      [{ 'not a scope': 'Words' }, 'scopeDescriptions.not a scope'],
    ];
    for (const [scopeDescriptions, path] of bad) {
      const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/described`, {
        key: t.adminKey,
        body: {
          ...inhouse,
          key: 'described',
          scopeDescriptions,
          oauth2: { authorizationUrl: op.endpoints.authorization, tokenUrl: op.endpoints.token },
        },
      });
      expect({ path, status: res.status, error: res.body.error }).toEqual({
        path,
        status: 400,
        error: 'validation_failed',
      });
      expect(res.body.details.issues.map((i: { path: string }) => i.path)).toContain(path);
    }
    const apiKey = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/described`, {
      key: t.adminKey,
      body: { key: 'described', name: 'D', authMode: 'api_key', scopeDescriptions: { read: 'Read' } },
    });
    expect(apiKey.status).toBe(400);
    expect(apiKey.body.details.issues[0].path).toBe('scopeDescriptions');
  });
});

describe('a provider the tenant has not set up', () => {
  const sessionsFor = async (provider: string) =>
    (
      await db().query(
        'SELECT count(*)::int AS n FROM connect_sessions WHERE tenant_id = $1 AND provider = $2',
        [t.tenantId, provider],
      )
    )[0].n as number;

  it('is refused when a link is asked for, by an admin or a connector; API-key providers need no app', async () => {
    const admin = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
      key: t.adminKey,
      body: { userId: 'alice', provider: 'slack' },
    });
    expect(admin.status).toBe(400);
    expect(admin.body).toMatchObject({ error: 'provider_not_configured', details: { provider: 'slack' } });
    expect(admin.body.message).toContain('/providers/slack/app');
    const byConnector = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
      headers: { authorization: basicAuth(connector), 'content-type': 'application/json' },
      payload: JSON.stringify({ userId: 'alice', provider: 'slack' }),
    });
    expect(byConnector.status).toBe(400);
    expect(byConnector.body.error).toBe('provider_not_configured');
    expect(await sessionsFor('slack')).toBe(0);
    const keys = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
      key: t.adminKey,
      body: { userId: 'alice', provider: 'inhouse-keys' },
    });
    expect(keys.status).toBe(201);
  });

  it('is refused by the token endpoint as invalid_target, audited, with no link made', async () => {
    const res = await exchange('zoe', 'slack');
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'invalid_target', error_description: expect.any(String) });
    expect(res.raw).not.toContain('connect_uri');
    const [event] = await db().query(
      `SELECT outcome, details FROM audit_events
        WHERE tenant_id = $1 AND action = 'token.exchange' AND subject_user_id = 'zoe' AND provider = 'slack'`,
      [t.tenantId],
    );
    expect(event.outcome).toBe('denied');
    expect(event.details).toMatchObject({ reason: 'provider_not_configured', error: 'invalid_target' });
    expect(await sessionsFor('slack')).toBe(0);
    // Once it is set up, the same request gets its link.
    await saveProviderApp(app, t, 'slack', { client_id: 'sl', client_secret: 'sl-secret' });
    const later = await exchange('zoe', 'slack');
    expect(later.status).toBe(400);
    expect(later.body.error).toBe('consent_required');
    expect(await sessionsFor('slack')).toBe(1);
  });
});

describe('an attempt that does not connect', () => {
  it('declined: recorded and audited, and returnTo gets the session and outcome; the link still works', async () => {
    const session = await newSession({ returnTo: RETURN_TO });
    const flow = await startFlow(session.url);
    const { redirectedTo } = await op.authorize(flow.authorizationUrl, { deny: true });
    const back = await callback(redirectedTo, flow.jar.header());
    expect(back.status).toBe(303);
    expect(back.headers.location).toBe(`${RETURN_TO}&custos_session=${session.id}&custos_outcome=declined`);
    expect(await sessionView(session.id)).toMatchObject({
      status: 'declined',
      failureReason: 'access_denied',
    });
    const declined = (await sessionEvents(session.id)).filter((e) => e.action === 'connect_session.declined');
    expect(declined).toEqual([
      {
        action: 'connect_session.declined',
        outcome: 'denied',
        details: { sessionId: session.id, userBinding: 'link', reason: 'access_denied' },
      },
    ]);

    // The same link again: connected, and returnTo says so.
    const again = await startFlow(session.url);
    const ok = await op.authorize(again.authorizationUrl, { account: 'alice' });
    const done = await callback(ok.redirectedTo, again.jar.header());
    expect(done.status).toBe(303);
    expect(done.headers.location).toBe(`${RETURN_TO}&custos_session=${session.id}&custos_outcome=connected`);
    expect(await sessionView(session.id)).toMatchObject({ status: 'completed', failureReason: null });
  });

  it('declined without returnTo: a page that says so, and a "Try again" that restarts the flow', async () => {
    const session = await newSession();
    const flow = await startFlow(session.url);
    const { redirectedTo } = await op.authorize(flow.authorizationUrl, { deny: true });
    const page = await callback(redirectedTo, flow.jar.header());
    expect(page.status).toBe(200);
    expect(page.raw).toContain('You did not allow access to In-house Git, so nothing was connected.');
    expect(page.raw).toMatch(/try again while this link is valid \(about \d+ minutes\)/);
    expect(links(page)).toEqual({ 'Try again': session.url });
    // Following it restarts the flow.
    const retry = await startFlow(links(page)['Try again']);
    const ok = await op.authorize(retry.authorizationUrl, { account: 'alice' });
    const done = await callback(ok.redirectedTo, retry.jar.header());
    expect(done.status).toBe(200);
    expect(done.raw).toContain('Your In-house Git account is connected');
  });

  it('a provider error: failed with its reason, audited, and returnTo gets "failed"', async () => {
    const session = await newSession({ returnTo: RETURN_TO });
    const flow = await startFlow(session.url);
    const res = await callback(
      errorRedirect(flow.authorizationUrl, 'temporarily_unavailable'),
      flow.jar.header(),
    );
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe(`${RETURN_TO}&custos_session=${session.id}&custos_outcome=failed`);
    expect(await sessionView(session.id)).toMatchObject({
      status: 'failed',
      failureReason: 'temporarily_unavailable',
    });
    const failed = (await sessionEvents(session.id)).filter((e) => e.action === 'connect_session.failed');
    expect(failed).toEqual([
      {
        action: 'connect_session.failed',
        outcome: 'failed',
        details: { sessionId: session.id, userBinding: 'link', reason: 'temporarily_unavailable' },
      },
    ]);
    // Nothing from the browser's cookies or the link's token in the trail.
    const trail = JSON.stringify(await sessionEvents(session.id));
    expect(trail).not.toContain(new URL(flow.authorizationUrl).searchParams.get('state')!);
    expect(trail).not.toContain(session.url.split('/').pop()!);
  });

  it('a provider error without returnTo: a page naming it, with "Try again"; odd error codes are not echoed', async () => {
    const session = await newSession();
    const flow = await startFlow(session.url);
    const page = await callback(errorRedirect(flow.authorizationUrl, 'server_error'), flow.jar.header());
    expect(page.status).toBe(502);
    expect(page.raw).toContain('In-house Git reported an error (server_error), so nothing was connected.');
    expect(links(page)).toEqual({ 'Try again': session.url });
    const second = await startFlow(session.url);
    const odd = await callback(
      errorRedirect(second.authorizationUrl, '<b>Evil</b> Error'),
      second.jar.header(),
    );
    expect(odd.raw).toContain('reported an error (provider_error)');
    expect(odd.raw).not.toContain('Evil');
    expect(await sessionView(session.id)).toMatchObject({
      status: 'failed',
      failureReason: 'provider_error',
    });
  });

  it('an API key refused: a page with "Try again" back to the form; returnTo gets "connected" on success', async () => {
    const created = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
      key: t.adminKey,
      body: { userId: 'bob', provider: 'inhouse-keys', returnTo: RETURN_TO },
    });
    const url = local(created.body.url);
    const jar = cookieJar();
    const form = await app.request('GET', url);
    jar.take(form.headers['set-cookie']);
    const csrf = /name="csrf" value="([^"]+)"/.exec(form.raw)![1];
    const post = (apiKey: string) =>
      app.request('POST', url + '/api-key', {
        payload: `csrf=${csrf}&apiKey=${apiKey}`,
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
      });
    const refused = await post('wrong-key');
    expect(refused.status).toBe(400);
    expect(refused.raw).toContain('In-house API did not accept this key, so nothing was saved.');
    expect(links(refused)).toEqual({ 'Try again': created.body.url });
    expect(await sessionView(created.body.id)).toMatchObject({
      status: 'failed',
      failureReason: 'key_rejected',
    });
    const malformed = await post('has%20space');
    expect(malformed.raw).toContain('does not look like an API key');
    expect(links(malformed)).toEqual({ 'Try again': created.body.url });
    const ok = await post('good-key');
    expect(ok.status).toBe(303);
    expect(ok.headers.location).toBe(
      `${RETURN_TO}&custos_session=${created.body.id}&custos_outcome=connected`,
    );
  });
});

describe('pages that say what happened and what to do next', () => {
  it('an unknown link: check the whole link, or ask for a new one', async () => {
    const page = await app.request('GET', `/connect/cst_${randomBytes(32).toString('base64url')}`);
    expect(page.status).toBe(404);
    expect(page.raw).toContain('This connect link is not valid');
    expect(page.raw).toContain('ask for a new one');
  });

  it('an expired link: ask the app for a new link, with the way back to it', async () => {
    const session = await newSession({ returnTo: RETURN_TO });
    await db().query(`UPDATE connect_sessions SET expires_at = now() - interval '1 second' WHERE id = $1`, [
      session.id,
    ]);
    const page = await app.request('GET', local(session.url));
    expect(page.status).toBe(410);
    expect(page.raw).toContain('This connect link has expired (a link works for 15 minutes)');
    expect(page.raw).toContain('ask for a new link');
    expect(page.raw).toContain('<span>Acme</span>');
    expect(links(page)).toEqual({
      'Return to Acme': `${RETURN_TO}&custos_session=${session.id}&custos_outcome=expired`,
    });
    expect(await sessionView(session.id)).toMatchObject({ status: 'expired' });
  });

  it('a used link: already connected, with the way back to the app', async () => {
    const session = await newSession({ returnTo: RETURN_TO });
    const flow = await startFlow(session.url);
    const ok = await op.authorize(flow.authorizationUrl, { account: 'alice' });
    expect((await callback(ok.redirectedTo, flow.jar.header())).status).toBe(303);
    const page = await app.request('GET', local(session.url));
    expect(page.status).toBe(410);
    expect(page.raw).toContain('This link has been used: your In-house Git account is connected.');
    expect(links(page)).toEqual({
      'Return to Acme': `${RETURN_TO}&custos_session=${session.id}&custos_outcome=connected`,
    });
  });

  it('an expired form: open the link again', async () => {
    const session = await newSession();
    const res = await app.request('POST', local(session.url) + '/start', {
      payload: 'csrf=forged',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(res.status).toBe(403);
    expect(res.raw).toContain('This form has expired or was sent from somewhere else, so nothing was done.');
    expect(links(res)).toEqual({ 'Open the link again': session.url });
  });

  it('a provider whose app was removed after the link was made: who can fix it, and the attempt recorded', async () => {
    await saveCustomProvider(app, t, {
      ...inhouse,
      key: 'gone',
      name: 'Gone Git',
      oauth2: {
        authorizationUrl: op.endpoints.authorization,
        tokenUrl: op.endpoints.token,
      },
    });
    await saveProviderApp(app, t, 'gone', CLIENT);
    const session = await newSession({ provider: 'gone', returnTo: RETURN_TO });
    expect(
      (await app.request('DELETE', `/v1/tenants/${t.tenantId}/providers/gone/app`, { key: t.adminKey }))
        .status,
    ).toBe(204);
    const page = await app.request('GET', local(session.url));
    expect(page.status).toBe(409);
    expect(page.raw).toContain('Gone Git is not set up for Acme at the moment');
    expect(page.raw).toContain('Please tell your administrator');
    expect(links(page)).toEqual({
      'Return to Acme': `${RETURN_TO}&custos_session=${session.id}&custos_outcome=failed`,
    });
    expect(await sessionView(session.id)).toMatchObject({
      status: 'failed',
      failureReason: 'provider_not_configured',
    });
    // The provider itself deleted: the link is closed for good.
    expect(
      (await app.request('DELETE', `/v1/tenants/${t.tenantId}/providers/gone`, { key: t.adminKey })).status,
    ).toBe(204);
    expect(await sessionView(session.id)).toMatchObject({
      status: 'failed',
      failureReason: 'provider_deleted',
    });
    const closed = await app.request('GET', local(session.url));
    expect(closed.status).toBe(410);
    expect(closed.raw).toContain('This link can no longer be used');
  });
});
