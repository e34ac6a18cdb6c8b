/**
 * Tokens that live a minute or less: a read refreshes one only when its scheduled refresh has come due (lead =
 * max(60 s, 10 %) capped at half the lifetime, see refresh-schedule.ts), not on every read because it has less
 * than a fixed minute left. Driven against oidc-provider issuing one-minute access tokens.
 */
import { TokenRefresher } from '../../../src/connections/token-refresher.service.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { startOAuthProvider, type TestOAuthProvider } from '../../support/oauth-provider.js';
import {
  PUBLIC_URL,
  REDIRECT,
  refreshClient,
  setUpRefreshTenant,
  type RefreshFixture,
} from '../../support/refresh-fixture.js';

const CLIENT = refreshClient();
const TTL_SECONDS = 60;

let app: TestApp;
let op: TestOAuthProvider;
let fx: RefreshFixture;

const db = () => app.custos.runtime.dataSource;
const providerCalls = () => op.tokenRequests.refresh_token ?? 0;

async function row(id: string) {
  const [r] = await db().query('SELECT expires_at, refresh_due_at FROM connections WHERE id = $1', [id]);
  return r as { expires_at: Date; refresh_due_at: Date };
}

/** As if time had moved on to the scheduled refresh: the due time is now. */
async function comeDue(id: string): Promise<void> {
  await db().query("UPDATE connections SET refresh_due_at = now() - interval '1 second' WHERE id = $1", [id]);
}

beforeAll(async () => {
  op = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [REDIRECT] }],
    accessTokenTtlSeconds: TTL_SECONDS,
    refreshTokenRotation: true,
  });
  app = await startTestApp({ CUSTOS_PUBLIC_URL: PUBLIC_URL, CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort });
  fx = await setUpRefreshTenant(app, op, CLIENT);
});

afterAll(async () => {
  await app.close();
  await op.close();
});

beforeEach(() => op.reset());

it('schedules a one-minute token’s refresh at half its lifetime', async () => {
  const c = await fx.connect('u-schedule', TTL_SECONDS);
  const r = await row(c.connectionId);
  const lead = r.expires_at.getTime() - r.refresh_due_at.getTime();
  expect(lead).toBeGreaterThan(25_000);
  expect(lead).toBeLessThanOrEqual(30_000);
});

it('hands out a one-minute token on every read until its refresh is due, without calling the provider', async () => {
  const c = await fx.connect('u-reads', TTL_SECONDS);
  for (let i = 0; i < 20; i++) {
    const res = await fx.exchange('u-reads');
    expect(res.status).toBe(200);
    expect(res.body.access_token).toBe(c.access_token);
  }
  expect(providerCalls()).toBe(0);
});

it('refreshes once when it comes due, then serves the new token until the next due time', async () => {
  const c = await fx.connect('u-due', TTL_SECONDS);
  await comeDue(c.connectionId);
  const first = await fx.exchange('u-due');
  expect(first.status).toBe(200);
  expect(first.body.access_token).not.toBe(c.access_token);
  expect(providerCalls()).toBe(1);
  for (let i = 0; i < 20; i++) {
    const res = await fx.exchange('u-due');
    expect(res.body.access_token).toBe(first.body.access_token);
  }
  expect(providerCalls()).toBe(1);
  // The background sweep agrees: nothing is due.
  expect(await app.custos.app.get(TokenRefresher).refreshDue(fx.t.tenantId, c.connectionId)).toBe('not_due');
  expect(providerCalls()).toBe(1);
});

it('still refreshes a token too close to its expiry to hand out, even before its due time', async () => {
  const c = await fx.connect('u-edge', 5);
  // A due time later than the expiry can only come from a bad clock; the token must not be handed out dying.
  await db().query("UPDATE connections SET refresh_due_at = now() + interval '1 hour' WHERE id = $1", [
    c.connectionId,
  ]);
  const res = await fx.exchange('u-edge');
  expect(res.status).toBe(200);
  expect(res.body.access_token).not.toBe(c.access_token);
  expect(providerCalls()).toBe(1);
});
