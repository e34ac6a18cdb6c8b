/**
 * The connect sign-in (the tenant's `connectLogin`) verifies the identity provider's ID token as the token
 * endpoint verifies a subject token from that provider: an ID token signed by the provider's own registered
 * key, with the right issuer, audience and nonce, is still refused when its header names a key URL (`jku`) or
 * demands unknown processing (`crit`). The identity provider is a small OpenID provider on loopback
 * (discovery, token endpoint, JWK Set with an ES256 key) whose token endpoint answers with an ID token whose
 * header the test chooses; the browser's trip to its authorization page is skipped (the test answers the
 * callback with a code the token endpoint accepts).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT } from 'jose';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, saveProviderApp, type TenantFixture } from '../../support/factories.js';
import { newSigningKey, type SigningKey } from '../../support/idp.js';
import { cookieJar, localPath, readBody } from '../../support/browser.js';

const PUBLIC_URL = 'https://custos.example.test';
const LOGIN_CLIENT = { client_id: 'custos-login', client_secret: 'login-secret-' + Date.now() };
const CODE = 'code-' + Date.now();

let app: TestApp;
let t: TenantFixture;
let key: SigningKey;
let idpServer: http.Server;
let issuer: string;
let idpHost: string;
/** The ID token the identity provider's token endpoint answers with next. */
let next: { nonce: string; header: Record<string, unknown>; crit?: Record<string, boolean> } | null = null;
let tokenRequests = 0;

async function idToken(): Promise<string> {
  if (!next) throw new Error('no ID token prepared');
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub: 'alice', nonce: next.nonce })
    .setProtectedHeader({ alg: 'ES256', kid: key.kid, ...next.header })
    .setIssuer(issuer)
    .setAudience(LOGIN_CLIENT.client_id)
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(key.privateKey, next.crit ? { crit: next.crit } : undefined);
}

async function answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const json = (status: number, body: unknown) =>
    res
      .writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      .end(JSON.stringify(body));
  if (req.method === 'GET' && req.url === '/.well-known/openid-configuration') {
    json(200, {
      issuer,
      authorization_endpoint: `${issuer}/authorize`,
      token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`,
      response_types_supported: ['code'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['ES256'],
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['client_secret_basic'],
    });
    return;
  }
  if (req.method === 'GET' && req.url === '/jwks') {
    json(200, { keys: [key.publicJwk] });
    return;
  }
  if (req.method === 'POST' && req.url === '/token') {
    tokenRequests++;
    const form = new URLSearchParams(await readBody(req));
    // RFC 6749 §2.3.1: both parts form-urlencoded before base64 (openid-client encodes even "-").
    const [id, secret] = Buffer.from(String(req.headers.authorization).replace(/^Basic /, ''), 'base64')
      .toString('utf8')
      .split(':')
      .map(decodeURIComponent);
    if (id !== LOGIN_CLIENT.client_id || secret !== LOGIN_CLIENT.client_secret) {
      json(401, { error: 'invalid_client' });
      return;
    }
    if (form.get('grant_type') !== 'authorization_code' || form.get('code') !== CODE) {
      json(400, { error: 'invalid_grant' });
      return;
    }
    json(200, {
      access_token: 'idp-access-token',
      token_type: 'Bearer',
      expires_in: 300,
      id_token: await idToken(),
    });
    return;
  }
  res.writeHead(404).end();
}

/**
 * Opens a new link for alice, asks to sign in, and comes back from the identity provider with an ID token
 * carrying this header (and the sign-in's nonce).
 */
async function signIn(header: Record<string, unknown>, crit?: Record<string, boolean>) {
  const created = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
    key: t.adminKey,
    body: { userId: 'alice', provider: 'github' },
  });
  expect(created.status).toBe(201);
  const url = local(created.body.url as string);
  const jar = cookieJar();
  const first = await app.request('GET', url);
  jar.take(first.headers['set-cookie']);
  expect(first.raw).toContain('Sign in with corp');
  const csrf = /name="csrf" value="([^"]+)"/.exec(first.raw)![1];
  const login = await app.request('POST', url + '/login', {
    payload: `csrf=${csrf}`,
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
  });
  expect(login.status).toBe(303);
  jar.take(login.headers['set-cookie']);
  const auth = new URL(String(login.headers.location));
  expect(auth.origin + auth.pathname).toBe(`${issuer}/authorize`);
  next = { nonce: auth.searchParams.get('nonce')!, header, ...(crit ? { crit } : {}) };
  const query = new URLSearchParams({ code: CODE, state: auth.searchParams.get('state')! });
  const callback = `/connect/login/callback?${query.toString()}`;
  const back = await app.request('GET', callback, { headers: { cookie: jar.header() } });
  jar.take(back.headers['set-cookie']);
  return { url, jar, back, sessionId: created.body.id as string };
}

async function events(sessionId: string): Promise<{ action: string; reason: string | null }[]> {
  return app.custos.runtime.dataSource.query(
    `SELECT action, details->>'reason' AS reason FROM audit_events
      WHERE tenant_id = $1 AND details->>'sessionId' = $2 AND action LIKE 'connect_session.%' ORDER BY id`,
    [t.tenantId, sessionId],
  );
}

const local = (url: string) => localPath(url, PUBLIC_URL);

beforeAll(async () => {
  key = await newSigningKey('corp-es256');
  idpServer = http.createServer((req, res) => {
    answer(req, res).catch((err: Error) => res.writeHead(500).end(err.message));
  });
  await new Promise<void>((r) => idpServer.listen(0, '127.0.0.1', r));
  idpHost = `127.0.0.1:${(idpServer.address() as AddressInfo).port}`;
  issuer = `http://${idpHost}`;
  app = await startTestApp({ CUSTOS_PUBLIC_URL: PUBLIC_URL, CUSTOS_OUTBOUND_ALLOW_HOSTS: idpHost });
  t = await createTenant(app);
  const idp = await app.request('PUT', `/v1/tenants/${t.tenantId}/identity-providers/corp`, {
    key: t.adminKey,
    body: { issuer, jwksUri: `${issuer}/jwks`, audiences: ['custos'], algorithms: ['ES256'] },
  });
  expect([200, 201]).toContain(idp.status);
  const patched = await app.request('PATCH', `/v1/tenants/${t.tenantId}`, {
    key: t.adminKey,
    body: {
      connectLogin: {
        identityProvider: 'corp',
        clientId: LOGIN_CLIENT.client_id,
        clientSecret: LOGIN_CLIENT.client_secret,
      },
    },
  });
  expect(patched.status).toBe(200);
  // A link is only made for a provider the tenant has set up (its own OAuth app there).
  await saveProviderApp(app, t, 'github', { client_id: 'gh-app', client_secret: 'gh-app-secret' });
});

afterEach(() => {
  next = null;
});

afterAll(async () => {
  await app?.close();
  idpServer?.closeAllConnections();
  await new Promise((r) => idpServer?.close(r));
});

describe('the connect sign-in’s ID token', () => {
  it('is accepted when signed by the identity provider’s key with a plain header', async () => {
    const { url, jar, back, sessionId } = await signIn({});
    expect(back.status).toBe(303);
    expect(back.headers.location).toBe(PUBLIC_URL + url);
    const page = await app.request('GET', url, { headers: { cookie: jar.header() } });
    expect(page.raw).toContain('Continue to');
    expect((await events(sessionId)).map((e) => e.action)).toContain('connect_session.user_verified');
  });

  it('is refused when its header names a key URL (jku), though the provider’s own key signed it', async () => {
    const before = tokenRequests;
    const { url, jar, back, sessionId } = await signIn({ jku: `${issuer}/jwks` });
    // The token endpoint was reached and answered: the refusal is Custos's, of this ID token.
    expect(tokenRequests - before).toBe(1);
    expect(back.status).toBe(502);
    expect(String(back.headers['content-type'])).toMatch(/^text\/html/);
    expect(back.raw).toContain('did not complete, so nothing was connected');
    const trail = await events(sessionId);
    expect(trail).toContainEqual({ action: 'connect_session.failed', reason: 'forbidden_header' });
    expect(trail.map((e) => e.action)).not.toContain('connect_session.user_verified');
    // The connect step stays closed.
    const page = await app.request('GET', url, { headers: { cookie: jar.header() } });
    expect(page.raw).toContain('Sign in with corp');
    expect(page.raw).not.toContain('Continue to');
  });

  // openid-client refuses `crit` too, before the verifier sees the token (the verifier's own refusal is in
  // test/unit/identity/idp-token-verifier.test.ts): the sign-in must fail for its header either way.
  it('is refused when its header demands unknown processing (crit)', async () => {
    const before = tokenRequests;
    const { url, jar, back, sessionId } = await signIn(
      { crit: ['urn:example:ext'], 'urn:example:ext': 1 },
      { 'urn:example:ext': true },
    );
    expect(tokenRequests - before).toBe(1);
    expect(back.status).toBe(502);
    expect(back.raw).toContain('did not complete, so nothing was connected');
    const trail = await events(sessionId);
    const failed = trail.filter((e) => e.action === 'connect_session.failed');
    // Refused for its header: by openid-client (OAUTH_UNSUPPORTED_OPERATION) or by the verifier.
    expect(failed).toHaveLength(1);
    expect(['OAUTH_UNSUPPORTED_OPERATION', 'forbidden_header']).toContain(failed[0].reason);
    expect(trail.map((e) => e.action)).not.toContain('connect_session.user_verified');
    const page = await app.request('GET', url, { headers: { cookie: jar.header() } });
    expect(page.raw).toContain('Sign in with corp');
  });
});
