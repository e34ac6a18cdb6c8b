/**
 * A refresh that loses a race to a credential written meanwhile is superseded, not a failure. The provider
 * (oidc-provider with refresh-token rotation) is slowed down so that a refresh is in flight while the tenant's
 * backend imports a new credential for the same connection (as a user connecting again does). Whatever the
 * provider then answers for the old refresh token — `invalid_grant` or a new token set — the connection stays
 * active with the credential just written, nothing is marked `needs_reauth`, and the token endpoint hands out
 * the stored credential (never the provider's dropped answer, which has no audit event behind it).
 */
import { randomBytes } from 'node:crypto';
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
/** How long the provider takes to answer a token request while a race is set up. */
const PROVIDER_DELAY_MS = 1500;

let app: TestApp;
let op: TestOAuthProvider;
let fx: RefreshFixture;

const db = () => app.custos.runtime.dataSource;

async function row(id: string) {
  const [r] = await db().query(
    'SELECT status, version, refresh_lease_until, refresh_due_at FROM connections WHERE id = $1',
    [id],
  );
  return r as {
    status: string;
    version: number;
    refresh_lease_until: Date | null;
    refresh_due_at: Date | null;
  };
}

/** As if time had moved on to the scheduled refresh. */
async function comeDue(id: string): Promise<void> {
  await db().query("UPDATE connections SET refresh_due_at = now() - interval '1 second' WHERE id = $1", [id]);
}

/** Resolves once a refresh holds the connection's lease (its provider call is under way). */
async function leaseTaken(id: string): Promise<void> {
  const until = Date.now() + 5_000;
  while (Date.now() < until) {
    if ((await row(id)).refresh_lease_until) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('no refresh took the lease');
}

/** The tenant's backend stores a new credential for the user (its tokens come from elsewhere). */
async function importFresh(user: string): Promise<string> {
  const accessToken = `imported-${randomBytes(12).toString('hex')}`;
  const res = await app.request('PUT', `/v1/tenants/${fx.t.tenantId}/users/${user}/connections/inhouse`, {
    key: fx.t.adminKey,
    body: {
      type: 'oauth2',
      accessToken,
      refreshToken: `imported-refresh-${randomBytes(12).toString('hex')}`,
      scopes: ['repo'],
      expiresAt: new Date(Date.now() + 3600_000).toISOString(),
    },
  });
  expect(res.status).toBe(200);
  return accessToken;
}

async function needsReauthEvents(connectionId: string): Promise<number> {
  const [r] = await db().query(
    "SELECT count(*)::int AS n FROM audit_events WHERE connection_id = $1 AND action = 'connection.needs_reauth'",
    [connectionId],
  );
  return (r as { n: number }).n;
}

beforeAll(async () => {
  op = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [REDIRECT] }],
    accessTokenTtlSeconds: 3600,
    refreshTokenRotation: true,
  });
  app = await startTestApp({ CUSTOS_PUBLIC_URL: PUBLIC_URL, CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort });
  fx = await setUpRefreshTenant(app, op, CLIENT);
});

afterAll(async () => {
  await app?.close();
  await op?.close();
});

beforeEach(() => op.reset());

it('a read whose refresh gets invalid_grant after a new credential was written serves that credential', async () => {
  const c = await fx.connect('race-invalid', 3600);
  await comeDue(c.connectionId);
  op.faults.delayMs = PROVIDER_DELAY_MS;
  op.faults.invalidGrant = true;

  const answer = fx.exchange('race-invalid');
  await leaseTaken(c.connectionId);
  const imported = await importFresh('race-invalid');
  const res = await answer;

  expect(op.tokenRequests.refresh_token).toBe(1);
  expect(res.status).toBe(200);
  expect(res.body.access_token).toBe(imported);
  expect((await row(c.connectionId)).status).toBe('active');
  expect(await needsReauthEvents(c.connectionId)).toBe(0);
  // And the next read is served from the store, without another provider call.
  op.faults.delayMs = 0;
  const again = await fx.exchange('race-invalid');
  expect(again.status).toBe(200);
  expect(again.body.access_token).toBe(imported);
  expect(op.tokenRequests.refresh_token).toBe(1);
});

it('a read whose refresh succeeds after a new credential was written drops the provider answer and serves the stored one', async () => {
  const c = await fx.connect('race-ok', 3600);
  await comeDue(c.connectionId);
  op.faults.delayMs = PROVIDER_DELAY_MS;

  const answer = fx.exchange('race-ok');
  await leaseTaken(c.connectionId);
  const imported = await importFresh('race-ok');
  const res = await answer;

  expect(op.tokenRequests.refresh_token).toBe(1);
  expect(res.status).toBe(200);
  expect(res.body.access_token).toBe(imported);
  const after = await row(c.connectionId);
  expect(after.status).toBe('active');
  expect(after.refresh_lease_until).toBeNull();
  // The refresh committed nothing: the import is the last write.
  const [refreshed] = await db().query(
    "SELECT count(*)::int AS n FROM audit_events WHERE connection_id = $1 AND action = 'connection.refreshed'",
    [c.connectionId],
  );
  expect((refreshed as { n: number }).n).toBe(0);
});

it('a background refresh that gets invalid_grant after a new credential was written leaves it active', async () => {
  const c = await fx.connect('race-background', 3600);
  await comeDue(c.connectionId);
  op.faults.delayMs = PROVIDER_DELAY_MS;
  op.faults.invalidGrant = true;

  const refresher = app.custos.app.get(TokenRefresher);
  const outcome = refresher.refreshDue(fx.t.tenantId, c.connectionId);
  await leaseTaken(c.connectionId);
  const imported = await importFresh('race-background');

  expect(await outcome).toBe('not_due');
  expect((await row(c.connectionId)).status).toBe('active');
  expect(await needsReauthEvents(c.connectionId)).toBe(0);
  op.faults.delayMs = 0;
  op.faults.invalidGrant = false;
  const res = await fx.exchange('race-background');
  expect(res.status).toBe(200);
  expect(res.body.access_token).toBe(imported);
});

it('without a write in between, invalid_grant still means re-authorization', async () => {
  const c = await fx.connect('no-race', 3600);
  await comeDue(c.connectionId);
  op.faults.invalidGrant = true;

  const res = await fx.exchange('no-race');

  expect(res.status).toBe(400);
  expect(res.body.error).toBe('consent_required');
  expect((await row(c.connectionId)).status).toBe('needs_reauth');
  expect(await needsReauthEvents(c.connectionId)).toBe(1);
});
