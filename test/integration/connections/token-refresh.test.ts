/**
 * Refreshing tokens without losing them, against oidc-provider with refresh-token rotation: the token
 * endpoint refreshes a token that is expired or about to expire, concurrent callers (in one process and
 * across two) cause exactly one provider call, `invalid_grant` means re-authorization, a provider outage
 * never hands out a dead token, and the sweep refreshes ahead of expiry with no traffic.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { TokenRefresher } from '../../../src/connections/token-refresher.service.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import type { TenantFixture } from '../../support/factories.js';
import { startOAuthProvider, type TestOAuthProvider } from '../../support/oauth-provider.js';
import { freePort } from '../../support/processes.js';
import {
  PUBLIC_URL,
  REDIRECT,
  refreshClient,
  setUpRefreshTenant,
  type RefreshFixture,
} from '../../support/refresh-fixture.js';

const CLIENT = refreshClient();
/** A low per-provider cap, so that the sweep's 12 due connections must queue behind it. */
const PER_PROVIDER = 4;

let app: TestApp;
let op: TestOAuthProvider;
let t: TenantFixture;
let fx: RefreshFixture;
/** A port nothing listens on: the token endpoint of the provider `deadhouse`. */
let deadPort: number;
/** Accepts connections and never answers: the token endpoint of the provider `blackhole`. */
let blackhole: Server;
let blackholePort: number;
const blackholeSockets = new Set<Socket>();

const connect = (user: string, expiresInSeconds: number, provider?: string) =>
  fx.connect(user, expiresInSeconds, provider);
const exchange = (user: string, on: TestApp = app, audience?: string) => fx.exchange(user, on, audience);

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
  deadPort = await freePort();
  blackhole = createServer((socket) => blackholeSockets.add(socket));
  await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r));
  blackholePort = (blackhole.address() as AddressInfo).port;
  app = await startTestApp({
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${op.hostPort},127.0.0.1:${deadPort},127.0.0.1:${blackholePort}`,
    CUSTOS_REFRESH_PER_PROVIDER: String(PER_PROVIDER),
    // Provider calls get the lease minus 3 s: a provider that never answers is given up on after 2 s.
    CUSTOS_REFRESH_LEASE_SECONDS: '5',
  });
  fx = await setUpRefreshTenant(app, op, CLIENT, {
    deadhouse: `http://127.0.0.1:${deadPort}/token`,
    blackhole: `http://127.0.0.1:${blackholePort}/token`,
  });
  t = fx.t;
});

afterAll(async () => {
  for (const socket of blackholeSockets) socket.destroy();
  await new Promise((r) => blackhole.close(r));
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

it('makes exactly one provider call for 100 concurrent exchanges of an expired token, and all get the new token', async () => {
  await connect('u-herd', -5);
  const results = await Promise.all(Array.from({ length: 100 }, () => exchange('u-herd')));
  expect(results.every((r) => r.status === 200)).toBe(true);
  expect(new Set(results.map((r) => r.body.access_token)).size).toBe(1);
  expect(op.tokenRequests.refresh_token).toBe(1);
});

it('makes exactly one provider call across two app instances (each with its own lease owner)', async () => {
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

it('honours Retry-After on a 429: no provider call before it, then the refresh goes through', async () => {
  const c = await connect('u-429', -5);
  op.faults.tokenStatus = 429;
  op.faults.retryAfterSeconds = 3;
  const res = await exchange('u-429');
  expect(res.status).toBe(503);
  expect(res.body.error).toBe('temporarily_unavailable');
  expect(res.raw).not.toContain(c.access_token);
  const [backoff] = await app.custos.runtime.dataSource.query(
    'SELECT status, refresh_failures, refresh_retry_at FROM connections WHERE id = $1',
    [c.connectionId],
  );
  expect(backoff.status).toBe('active');
  expect(backoff.refresh_failures).toBe(1);
  // Three seconds, as the provider asked (not the 5 s exponential first step).
  expect(backoff.refresh_retry_at.getTime() - Date.now()).toBeGreaterThan(1500);
  expect(backoff.refresh_retry_at.getTime() - Date.now()).toBeLessThanOrEqual(3000);
  op.faults.tokenStatus = null;
  op.faults.retryAfterSeconds = null;
  const refresher = app.custos.app.get(TokenRefresher);
  expect(await refresher.refreshDue(t.tenantId, c.connectionId)).toBe('failed');
  expect(op.tokenRequests.refresh_token).toBe(1);
  await new Promise((r) => setTimeout(r, backoff.refresh_retry_at.getTime() - Date.now() + 50));
  expect(await refresher.refreshDue(t.tenantId, c.connectionId)).toBe('refreshed');
  expect(op.tokenRequests.refresh_token).toBe(2);
  const after = await exchange('u-429');
  expect(after.status).toBe(200);
  expect(after.body.access_token).not.toBe(c.access_token);
  // Both outcomes are counted for monitoring (no labels beyond the outcome).
  const metrics = (await app.request('GET', '/metrics')).raw;
  expect(metrics).toMatch(/^custos_token_refreshes_total\{outcome="failed"\} [1-9]/m);
  expect(metrics).toMatch(/^custos_token_refreshes_total\{outcome="refreshed"\} [1-9]/m);
});

it('backs off exponentially when the provider is unreachable, and keeps the connection active', async () => {
  const c = await connect('u-unreachable', -5, 'deadhouse');
  const first = await exchange('u-unreachable', app, 'deadhouse');
  expect(first.status).toBe(503);
  expect(first.body.error).toBe('temporarily_unavailable');
  const read = async () =>
    (
      await app.custos.runtime.dataSource.query(
        'SELECT status, refresh_failures, refresh_retry_at, refresh_lease_until FROM connections WHERE id = $1',
        [c.connectionId],
      )
    )[0];
  const one = await read();
  expect(one.status).toBe('active');
  expect(one.refresh_failures).toBe(1);
  expect(one.refresh_lease_until).toBeNull();
  // First step: 5 s with ±20 % jitter.
  const firstDelay = one.refresh_retry_at.getTime() - Date.now();
  expect(firstDelay).toBeGreaterThan(3000);
  expect(firstDelay).toBeLessThanOrEqual(6000);
  // The next attempt (once due) waits about twice as long.
  await app.custos.runtime.dataSource.query('UPDATE connections SET refresh_retry_at = now() WHERE id = $1', [
    c.connectionId,
  ]);
  const refresher = app.custos.app.get(TokenRefresher);
  expect(await refresher.refreshDue(t.tenantId, c.connectionId)).toBe('failed');
  const two = await read();
  expect(two.status).toBe('active');
  expect(two.refresh_failures).toBe(2);
  const secondDelay = two.refresh_retry_at.getTime() - Date.now();
  expect(secondDelay).toBeGreaterThan(7000);
  expect(secondDelay).toBeLessThanOrEqual(12_000);
  const audit = await app.custos.runtime.dataSource.query(
    `SELECT count(*)::int AS n FROM audit_events WHERE connection_id = $1 AND action = 'connection.needs_reauth'`,
    [c.connectionId],
  );
  expect(audit[0].n).toBe(0);
});

it('keeps refreshing other providers while one provider hangs: it gets no more than its cap of slots', async () => {
  const refresher = app.custos.app.get(TokenRefresher);
  const hung: string[] = [];
  for (let i = 0; i < 2 * PER_PROVIDER; i++)
    hung.push((await connect(`u-hung-${i}`, 3600, 'blackhole')).connectionId);
  const healthy: string[] = [];
  for (let i = 0; i < 4; i++) healthy.push((await connect(`u-healthy-${i}`, 3600)).connectionId);
  await app.custos.runtime.dataSource.query(
    'UPDATE connections SET refresh_due_at = now() WHERE id = ANY($1)',
    [[...hung, ...healthy]],
  );
  op.reset();
  refresher.limiter.resetPeaks();
  const sweeping = refresher.sweep();
  // The healthy provider's refreshes all finish while the hung provider's calls are still waiting.
  const until = Date.now() + 1500;
  for (;;) {
    const [{ n }] = await app.custos.runtime.dataSource.query(
      `SELECT count(*)::int AS n FROM connections WHERE id = ANY($1) AND refresh_due_at > now()`,
      [healthy],
    );
    if (n === healthy.length) break;
    if (Date.now() > until) throw new Error(`only ${n} healthy refreshes while a provider hangs`);
    await new Promise((r) => setTimeout(r, 25));
  }
  await sweeping;
  expect(op.tokenRequests.refresh_token).toBe(healthy.length);
  expect(refresher.limiter.peakByProvider.get('blackhole')).toBe(PER_PROVIDER);
  // The hung provider's connections are backing off, still active, their tokens kept.
  const rows = await app.custos.runtime.dataSource.query(
    'SELECT status, refresh_failures FROM connections WHERE id = ANY($1)',
    [hung],
  );
  expect(
    rows.every(
      (r: { status: string; refresh_failures: number }) => r.status === 'active' && r.refresh_failures === 1,
    ),
  ).toBe(true);
});
