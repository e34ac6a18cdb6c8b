/**
 * Refreshing tokens without losing them, against oidc-provider with refresh-token rotation: the token
 * endpoint refreshes a token that is expired or about to expire, concurrent callers (in one process and
 * across two) cause exactly one provider call, `invalid_grant` means re-authorization, a provider outage
 * never hands out a dead token, and the sweep refreshes ahead of expiry with no traffic.
 */
import { createHash, randomBytes } from 'node:crypto';
import { TokenRefresher } from '../../src/connections/token-refresher.service.js';
import { createTenant, startTestApp, type TenantFixture, type TestApp } from '../support/app.js';
import { startOAuthProvider, type TestOAuthProvider } from '../support/oauth-provider.js';

const PUBLIC_URL = 'https://custos.example.test';
const REDIRECT = `${PUBLIC_URL}/connect/callback/inhouse`;
const CLIENT = { client_id: 'custos-refresh', client_secret: 'refresh-secret-' + Date.now() };

/** A low per-provider cap, so that the sweep's 12 due connections must queue behind it. */
const PER_PROVIDER = 4;

let app: TestApp;
let op: TestOAuthProvider;
let t: TenantFixture;
let connector: { clientId: string; clientSecret: string };

/** A real token set for `account`, straight from the provider (authorization code + PKCE). */
async function tokensFor(account: string) {
  const verifier = randomBytes(32).toString('base64url');
  const url = new URL(op.endpoints.authorization);
  url.search = new URLSearchParams({
    client_id: CLIENT.client_id,
    redirect_uri: REDIRECT,
    response_type: 'code',
    scope: 'openid offline_access repo',
    state: randomBytes(8).toString('hex'),
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  }).toString();
  const { redirectedTo } = await op.authorize(url.href, { account });
  const code = new URL(redirectedTo).searchParams.get('code')!;
  const res = await op.exchangeCode(CLIENT.client_id, CLIENT.client_secret, code, REDIRECT, verifier);
  expect(res.status).toBe(200);
  return res.body as { access_token: string; refresh_token: string };
}

/** Stores a token set for `user` that expires in `expiresInSeconds` (negative: already expired). */
async function connect(user: string, expiresInSeconds: number) {
  const tokens = await tokensFor(user);
  const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/users/${user}/connections/inhouse`, {
    key: t.adminKey,
    body: {
      type: 'oauth2',
      accessToken: tokens.access_token,
      refreshToken: tokens.refresh_token,
      scopes: ['repo'],
      expiresAt: new Date(Date.now() + expiresInSeconds * 1000).toISOString(),
    },
  });
  expect([200, 201]).toContain(res.status);
  return { ...tokens, connectionId: res.body.id as string };
}

const exchange = (user: string, on: TestApp = app) =>
  on.request('POST', '/oauth/token', {
    payload: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: user,
      subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
      audience: 'inhouse',
    }).toString(),
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization:
        'Basic ' + Buffer.from(`${connector.clientId}:${connector.clientSecret}`).toString('base64'),
    },
  });

const row = async (id: string) =>
  (
    await app.custos.runtime.dataSource.query(
      'SELECT status, version, expires_at, refresh_lease_until FROM connections WHERE id = $1',
      [id],
    )
  )[0];

beforeAll(async () => {
  op = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [REDIRECT] }],
    accessTokenTtlSeconds: 3600,
    refreshTokenRotation: true,
  });
  app = await startTestApp({
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort,
    CUSTOS_REFRESH_PER_PROVIDER: String(PER_PROVIDER),
  });
  t = await createTenant(app);
  const put = (url: string, body: unknown) => app.request('PUT', url, { key: t.adminKey, body });
  await put(`/v1/tenants/${t.tenantId}/providers/inhouse`, {
    key: 'inhouse',
    name: 'In-house Git',
    authMode: 'oauth2',
    oauth2: {
      authorizationUrl: op.endpoints.authorization,
      tokenUrl: op.endpoints.token,
      issuer: op.issuer,
      scopes: ['openid', 'offline_access', 'repo'],
      rotatesRefreshToken: true,
    },
  });
  await put(`/v1/tenants/${t.tenantId}/providers/inhouse/app`, {
    clientId: CLIENT.client_id,
    clientSecret: CLIENT.client_secret,
  });
  const c = await app.request('POST', `/v1/tenants/${t.tenantId}/connectors`, {
    key: t.adminKey,
    body: {
      name: 'refresh test',
      allowedProviders: ['inhouse'],
      delegation: 'trusted',
      auth: { method: 'client_secret_basic' },
    },
  });
  connector = c.body;
});

afterAll(async () => {
  await app.close();
  await op.close();
});

beforeEach(() => op.reset());

it('refreshes an expired token at the token endpoint, stores the rotated refresh token, and reuses the new token', async () => {
  const old = await connect('u-expired', -5);
  const res = await exchange('u-expired');
  expect(res.status).toBe(200);
  expect(res.body.access_token).not.toBe(old.access_token);
  expect(res.body.expires_in).toBeGreaterThan(3000);
  expect(op.tokenRequests.refresh_token).toBe(1);
  const again = await exchange('u-expired');
  expect(again.body.access_token).toBe(res.body.access_token);
  expect(op.tokenRequests.refresh_token).toBe(1);
  // The old refresh token was rotated away at the provider; Custos holds the new one.
  expect((await op.refresh(CLIENT.client_id, CLIENT.client_secret, old.refresh_token)).status).toBe(400);
  const events = await app.custos.runtime.dataSource.query(
    `SELECT action, details FROM audit_events WHERE connection_id = $1 AND action = 'connection.refreshed'`,
    [old.connectionId],
  );
  expect(events).toHaveLength(1);
  expect(events[0].details.rotated).toBe(true);
});

it('makes exactly one provider call for 50 concurrent exchanges of an expired token, and all get the new token', async () => {
  await connect('u-herd', -5);
  const results = await Promise.all(Array.from({ length: 50 }, () => exchange('u-herd')));
  expect(results.every((r) => r.status === 200)).toBe(true);
  expect(new Set(results.map((r) => r.body.access_token)).size).toBe(1);
  expect(op.tokenRequests.refresh_token).toBe(1);
});

it('makes exactly one provider call across two processes', async () => {
  const c = await connect('u-two', -5);
  const other = await startTestApp({
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort,
    CUSTOS_ROOT_KEYS: app.custos.runtime.config.rootKeys,
    CUSTOS_BOOTSTRAP_ADMIN_KEY: app.bootstrapKey,
  });
  try {
    op.faults.delayMs = 200; // holds the first refresh long enough for the other process to wait on it
    const results = await Promise.all([
      ...Array.from({ length: 10 }, () => exchange('u-two')),
      ...Array.from({ length: 10 }, () => exchange('u-two', other)),
    ]);
    expect(results.map((r) => r.status)).toEqual(Array(20).fill(200));
    expect(new Set(results.map((r) => r.body.access_token)).size).toBe(1);
    expect(op.tokenRequests.refresh_token).toBe(1);
    expect((await row(c.connectionId)).refresh_lease_until).toBeNull();
  } finally {
    await other.close();
  }
});

it('marks the connection needs_reauth on invalid_grant, and the next exchange asks for consent', async () => {
  const c = await connect('u-revoked', -5);
  op.faults.invalidGrant = true;
  const res = await exchange('u-revoked');
  expect(res.status).toBe(400);
  expect(res.body.error).toBe('consent_required');
  expect((await row(c.connectionId)).status).toBe('needs_reauth');
  const [event] = await app.custos.runtime.dataSource.query(
    `SELECT details FROM audit_events WHERE connection_id = $1 AND action = 'connection.needs_reauth'`,
    [c.connectionId],
  );
  expect(event.details.reason).toBe('refresh token rejected');
  op.faults.invalidGrant = false;
  expect((await exchange('u-revoked')).body.error).toBe('consent_required');
  expect(op.tokenRequests.refresh_token).toBe(1);
});

it('detects a lease abandoned by a crash: the next refresh uses the stored token, and a refusal says why', async () => {
  const c = await connect('u-crashed', -5);
  // A process took the lease, got the provider's answer and died before committing (the rotated refresh
  // token it received is lost); its lease has run out.
  await app.custos.runtime.dataSource.query(
    `UPDATE connections SET refresh_lease_until = now() - interval '1 second', refresh_lease_owner = 'dead' WHERE id = $1`,
    [c.connectionId],
  );
  op.faults.invalidGrant = true;
  expect((await exchange('u-crashed')).body.error).toBe('consent_required');
  const [event] = await app.custos.runtime.dataSource.query(
    `SELECT details FROM audit_events WHERE connection_id = $1 AND action = 'connection.needs_reauth'`,
    [c.connectionId],
  );
  expect(event.details.reason).toBe('refresh interrupted');
  // Without a refusal, the stored refresh token simply works.
  op.faults.invalidGrant = false;
  const ok = await connect('u-crashed-ok', -5);
  await app.custos.runtime.dataSource.query(
    `UPDATE connections SET refresh_lease_until = now() - interval '1 second', refresh_lease_owner = 'dead' WHERE id = $1`,
    [ok.connectionId],
  );
  const res = await exchange('u-crashed-ok');
  expect(res.status).toBe(200);
  expect(res.body.access_token).not.toBe(ok.access_token);
});

it('never hands out a dead token during a provider outage, and serves a still-valid one', async () => {
  const dead = await connect('u-outage', -5);
  const soon = await connect('u-soon', 30);
  op.faults.tokenStatus = 503;
  op.faults.retryAfterSeconds = 2;
  const res = await exchange('u-outage');
  expect(res.status).toBe(503);
  expect(res.raw).not.toContain(dead.access_token);
  expect((await row(dead.connectionId)).status).toBe('active');
  // A token with 30 s left is due for refresh, but still good: it is served while the provider is down.
  const served = await exchange('u-soon');
  expect(served.status).toBe(200);
  expect(served.body.access_token).toBe(soon.access_token);
  // The provider's Retry-After is honoured: no provider call before it, even for a request.
  const backoff = (
    await app.custos.runtime.dataSource.query(
      'SELECT refresh_failures, refresh_retry_at FROM connections WHERE id = $1',
      [dead.connectionId],
    )
  )[0];
  expect(backoff.refresh_failures).toBe(1);
  expect(backoff.refresh_retry_at.getTime() - Date.now()).toBeGreaterThan(500);
  expect(backoff.refresh_retry_at.getTime() - Date.now()).toBeLessThanOrEqual(2000);
  op.faults.tokenStatus = null;
  op.faults.retryAfterSeconds = null;
  const calls = op.tokenRequests.refresh_token;
  expect((await exchange('u-outage')).status).toBe(503);
  expect(op.tokenRequests.refresh_token).toBe(calls);
  // Once the retry time has come, the refresh goes through.
  await app.custos.runtime.dataSource.query('UPDATE connections SET refresh_retry_at = now() WHERE id = $1', [
    dead.connectionId,
  ]);
  const back = await exchange('u-outage');
  expect(back.status).toBe(200);
  expect(back.body.access_token).not.toBe(dead.access_token);
});

it('refreshes tokens that are about to expire with no exchange traffic (the sweep)', async () => {
  const c = await connect('u-sweep', 20);
  const before = await row(c.connectionId);
  const refresher = app.custos.app.get(TokenRefresher);
  // A 20 s token is due at half its life: not yet.
  const [due] = await app.custos.runtime.dataSource.query(
    'SELECT refresh_due_at, expires_at FROM connections WHERE id = $1',
    [c.connectionId],
  );
  expect((due.expires_at.getTime() - due.refresh_due_at.getTime()) / 1000).toBeCloseTo(10, 0);
  const calls = refresher.providerCalls;
  await refresher.sweep();
  expect(refresher.providerCalls).toBe(calls);
  // Ten seconds later (the due time moved to now), the sweep refreshes it.
  await app.custos.runtime.dataSource.query('UPDATE connections SET refresh_due_at = now() WHERE id = $1', [
    c.connectionId,
  ]);
  const refreshed = await refresher.sweep();
  expect(refreshed).toBeGreaterThanOrEqual(1);
  const after = await row(c.connectionId);
  expect(after.version).toBeGreaterThan(before.version);
  expect(after.expires_at.getTime()).toBeGreaterThan(Date.now() + 3000 * 1000);
  const [next] = await app.custos.runtime.dataSource.query(
    'SELECT refresh_due_at FROM connections WHERE id = $1',
    [c.connectionId],
  );
  // The new hour-long token is due again about 6 minutes before it expires (10 %, with jitter).
  const lead = (after.expires_at.getTime() - next.refresh_due_at.getTime()) / 1000;
  expect(lead).toBeGreaterThanOrEqual(324);
  expect(lead).toBeLessThanOrEqual(396);
  const res = await exchange('u-sweep');
  expect(res.body.access_token).not.toBe(c.access_token);
});

it('sweeps many due connections concurrently, never more than the per-provider cap at once', async () => {
  const refresher = app.custos.app.get(TokenRefresher);
  const ids: string[] = [];
  for (let i = 0; i < 12; i++) ids.push((await connect(`u-many-${i}`, 3600)).connectionId);
  await app.custos.runtime.dataSource.query(
    'UPDATE connections SET refresh_due_at = now() WHERE id = ANY($1)',
    [ids],
  );
  op.reset();
  op.faults.delayMs = 100; // each provider call takes a while, so the sweep's concurrency shows
  refresher.limiter.resetPeaks();
  const refreshed = await refresher.sweep();
  expect(refreshed).toBe(12);
  expect(op.tokenRequests.refresh_token).toBe(12);
  const peak = refresher.limiter.peakByProvider.get('inhouse');
  expect(peak).toBeGreaterThan(1);
  expect(peak).toBeLessThanOrEqual(PER_PROVIDER);
});
