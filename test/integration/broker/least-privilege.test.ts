/**
 * Least privilege per tool, against oidc-provider: a connector that asks for fewer scopes than the user granted
 * gets an access token minted for exactly those (a refresh_token grant naming `scope`, RFC 6749 §6) where the
 * provider declares `narrowsScopesOnRefresh`, never a wider one; where it cannot narrow, a grant wider than the
 * connector's allowed scopes is refused unless the tenant opted in to pass-through.
 */
import { createHash, randomBytes } from 'node:crypto';
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
  type SecretConnector,
  type TenantFixture,
} from '../../support/factories.js';
import { startOAuthProvider, type TestOAuthProvider } from '../../support/oauth-provider.js';

const PUBLIC_URL = 'https://custos.example.test';
const CLIENT = { client_id: 'custos-narrow', client_secret: 'narrow-' + randomBytes(8).toString('hex') };
const GRANT = ['openid', 'offline_access', 'repo', 'read:user'];

let app: TestApp;
let op: TestOAuthProvider;
/** A token endpoint that ignores `scope` on refresh and answers with the whole grant. */
let liar: http.Server;
let liarCalls = 0;
let t: TenantFixture;
/** May use `repo` only, at both providers. */
let narrow: SecretConnector;
/** No scope list: may use every scope. */
let open: SecretConnector;

const redirect = (provider: string) => `${PUBLIC_URL}/connect/callback/${provider}`;

/** A real grant of GRANT for `account`, stored as `user`'s connection at `provider`. */
async function connect(
  user: string,
  provider: string,
): Promise<{ connectionId: string; refreshToken: string }> {
  const verifier = randomBytes(32).toString('base64url');
  const url = new URL(op.endpoints.authorization);
  url.search = new URLSearchParams({
    client_id: CLIENT.client_id,
    redirect_uri: redirect(provider),
    response_type: 'code',
    scope: GRANT.join(' '),
    state: randomBytes(8).toString('hex'),
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  }).toString();
  const { redirectedTo } = await op.authorize(url.href, { account: user });
  const code = new URL(redirectedTo).searchParams.get('code')!;
  const res = await op.exchangeCode(
    CLIENT.client_id,
    CLIENT.client_secret,
    code,
    redirect(provider),
    verifier,
  );
  if (res.status !== 200) throw new Error(`code exchange failed: ${res.status}`);
  const { id } = await importConnection(app, t, user, provider, {
    type: 'oauth2',
    accessToken: res.body.access_token!,
    refreshToken: res.body.refresh_token!,
    scopes: GRANT,
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  return { connectionId: id, refreshToken: res.body.refresh_token! };
}

function exchange(connector: SecretConnector, user: string, provider: string, scope?: string) {
  const form: Record<string, string> = {
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: user,
    subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
    audience: provider,
  };
  if (scope !== undefined) form.scope = scope;
  return app.request('POST', '/oauth/token', {
    payload: new URLSearchParams(form).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(connector) },
  });
}

/** What the provider itself says the access token may do (RFC 7662). */
async function introspect(token: string): Promise<{ active: boolean; scope?: string; sub?: string }> {
  const res = await fetch(op.endpoints.introspection, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: 'Basic ' + Buffer.from(`${CLIENT.client_id}:${CLIENT.client_secret}`).toString('base64'),
    },
    body: new URLSearchParams({ token }).toString(),
  });
  return (await res.json()) as { active: boolean; scope?: string; sub?: string };
}

const lastEvent = async (connectorId: string) =>
  (
    await app.custos.runtime.dataSource.query(
      `SELECT outcome, details FROM audit_events WHERE action = 'token.exchange' AND actor_id = $1
        ORDER BY occurred_at DESC, id DESC LIMIT 1`,
      [connectorId],
    )
  )[0] as { outcome: string; details: Record<string, unknown> };

const setPassThrough = async (on: boolean) => {
  const res = await app.request('PATCH', `/v1/tenants/${t.tenantId}`, {
    key: t.adminKey,
    body: { scopePassThrough: on },
  });
  expect(res.status).toBe(200);
  expect(res.body.scopePassThrough).toBe(on);
};

beforeAll(async () => {
  op = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [redirect('narrowing'), redirect('wide')] }],
    refreshTokenRotation: true,
  });
  liar = http.createServer((req, res) => {
    liarCalls++;
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(
        JSON.stringify({
          access_token: 'wide-' + randomBytes(8).toString('hex'),
          token_type: 'Bearer',
          expires_in: 3600,
          scope: GRANT.join(' '),
        }),
      );
    });
  });
  await new Promise<void>((r) => liar.listen(0, '127.0.0.1', r));
  const liarPort = (liar.address() as AddressInfo).port;
  app = await startTestApp({
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${op.hostPort},127.0.0.1:${liarPort}`,
  });
  t = await createTenant(app);
  for (const [key, narrows, tokenUrl] of [
    ['narrowing', true, op.endpoints.token],
    ['wide', false, op.endpoints.token],
    ['liar', true, `http://127.0.0.1:${liarPort}/token`],
  ] as const) {
    await saveCustomProvider(app, t, {
      key,
      name: `Provider ${key}`,
      authMode: 'oauth2',
      oauth2: {
        authorizationUrl: op.endpoints.authorization,
        tokenUrl,
        issuer: op.issuer,
        scopes: GRANT,
        rotatesRefreshToken: true,
        narrowsScopesOnRefresh: narrows,
      },
    });
    await saveProviderApp(app, t, key, CLIENT);
  }
  narrow = await createConnector(app, t, {
    allowedProviders: ['narrowing', 'wide', 'liar'],
    allowedScopes: { narrowing: ['repo'], wide: ['repo'] },
  });
  open = await createConnector(app, t, { allowedProviders: ['narrowing', 'wide', 'liar'] });
});

afterAll(async () => {
  await app?.close();
  await op?.close();
  await new Promise((r) => liar?.close(r));
});

beforeEach(() => op.reset());

describe('a provider that narrows on refresh', () => {
  it('mints a token with exactly the scopes asked for, stores the rotated refresh token, and reuses it while fresh', async () => {
    const c = await connect('nina', 'narrowing');
    const res = await exchange(open, 'nina', 'narrowing', 'repo');
    expect(res.status).toBe(200);
    expect(res.body.scope).toBe('repo');
    expect(op.tokenRequests.refresh_token).toBe(1);
    // The provider agrees: the token may do `repo` and nothing else, and it is nina's.
    const seen = await introspect(res.body.access_token);
    expect(seen).toMatchObject({ active: true, scope: 'repo', sub: 'nina' });
    // The stored token is untouched (still the whole grant, at the provider too).
    const whole = await exchange(open, 'nina', 'narrowing');
    expect(whole.status).toBe(200);
    expect(whole.body.access_token).not.toBe(res.body.access_token);
    expect(whole.body.scope.split(' ').sort()).toEqual([...GRANT].sort());
    expect((await introspect(whole.body.access_token)).scope!.split(' ').sort()).toEqual([...GRANT].sort());
    // The refresh token the provider rotated was stored: narrowing again uses it (the old one would be refused,
    // and its reuse would revoke the whole grant).
    const other = await exchange(open, 'nina', 'narrowing', 'read:user');
    expect(other.status).toBe(200);
    expect((await introspect(other.body.access_token)).scope).toBe('read:user');
    expect(op.tokenRequests.refresh_token).toBe(2);
    const [rotations] = await app.custos.runtime.dataSource.query(
      `SELECT count(*)::int AS n FROM audit_events WHERE connection_id = $1 AND action = 'connection.refreshed'
          AND details->>'rotated' = 'true'`,
      [c.connectionId],
    );
    expect(rotations.n).toBe(2);
    expect((await introspect(whole.body.access_token)).active).toBe(true);
    // The narrowed token is reused, without another provider call.
    const again = await exchange(open, 'nina', 'narrowing', 'repo');
    expect(again.body.access_token).toBe(res.body.access_token);
    expect(op.tokenRequests.refresh_token).toBe(2);
    const event = await lastEvent(open.id);
    expect(event.outcome).toBe('allowed');
    expect(event.details).toMatchObject({ narrowed: 'cached', grantedScopes: ['repo'] });
    expect((event.details.narrowedFrom as string[]).sort()).toEqual([...GRANT].sort());
  });

  it('gives a connector with an allowed-scope list only those scopes, even when it names none', async () => {
    await connect('nora', 'narrowing');
    const res = await exchange(narrow, 'nora', 'narrowing');
    expect(res.status).toBe(200);
    expect(res.body.scope).toBe('repo');
    expect((await introspect(res.body.access_token)).scope).toBe('repo');
  });

  it('mints one token for concurrent requests of the same scopes', async () => {
    await connect('nell', 'narrowing');
    op.faults.delayMs = 100;
    const results = await Promise.all(
      Array.from({ length: 10 }, () => exchange(open, 'nell', 'narrowing', 'read:user')),
    );
    expect(results.map((r) => r.status)).toEqual(Array(10).fill(200));
    expect(new Set(results.map((r) => r.body.access_token)).size).toBe(1);
    expect(op.tokenRequests.refresh_token).toBe(1);
  });

  it('never widens: a scope outside the grant asks for consent, one outside the connector’s list is refused', async () => {
    await connect('noel', 'narrowing');
    const wider = await exchange(open, 'noel', 'narrowing', 'repo profile');
    expect(wider.status).toBe(400);
    expect(wider.body.error).toBe('consent_required');
    const outside = await exchange(narrow, 'noel', 'narrowing', 'read:user');
    expect(outside.status).toBe(400);
    expect(outside.body.error).toBe('invalid_scope');
    expect(op.tokenRequests.refresh_token).toBe(0);
  });

  it('hands out nothing when the provider answers a narrowing with a wider token', async () => {
    await importConnection(app, t, 'lia', 'liar', {
      type: 'oauth2',
      accessToken: 'stored-' + randomBytes(8).toString('hex'),
      refreshToken: 'refresh-' + randomBytes(8).toString('hex'),
      scopes: GRANT,
      expiresAt: new Date(Date.now() + 3600_000).toISOString(),
    });
    const res = await exchange(open, 'lia', 'liar', 'repo');
    expect(liarCalls).toBe(1);
    expect(res.status).toBe(503);
    expect(res.raw).not.toContain('wide-');
  });

  it('asks for consent again when the provider refuses the refresh token while narrowing', async () => {
    const c = await connect('nico', 'narrowing');
    op.faults.invalidGrant = true;
    const res = await exchange(open, 'nico', 'narrowing', 'repo');
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'consent_required', consent_reason: 'needs_reauth' });
    const [row] = await app.custos.runtime.dataSource.query('SELECT status FROM connections WHERE id = $1', [
      c.connectionId,
    ]);
    expect(row.status).toBe('needs_reauth');
  });

  it('answers 503 and hands out nothing when the provider is down while narrowing', async () => {
    await connect('nils', 'narrowing');
    op.faults.tokenStatus = 503;
    const res = await exchange(open, 'nils', 'narrowing', 'repo');
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBeDefined();
    expect(res.body.access_token).toBeUndefined();
  });
});

describe('a provider that cannot narrow', () => {
  it('refuses a grant wider than the connector’s allowed scopes, unless the tenant opts in to pass-through', async () => {
    await connect('walt', 'wide');
    const refused = await exchange(narrow, 'walt', 'wide', 'repo');
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe('invalid_scope');
    expect(refused.body.access_token).toBeUndefined();
    expect((await lastEvent(narrow.id)).details.reason).toBe('grant_exceeds_connector_scopes');
    expect(op.tokenRequests.refresh_token).toBe(0);

    await setPassThrough(true);
    try {
      const passed = await exchange(narrow, 'walt', 'wide', 'repo');
      expect(passed.status).toBe(200);
      expect(passed.body.scope.split(' ').sort()).toEqual([...GRANT].sort());
      expect((await lastEvent(narrow.id)).details).toMatchObject({ scopePassThrough: true });
    } finally {
      await setPassThrough(false);
    }
    expect((await exchange(narrow, 'walt', 'wide', 'repo')).status).toBe(400);
  });

  it('hands out the stored grant to a connector that may use all of it', async () => {
    await connect('wyn', 'wide');
    const res = await exchange(open, 'wyn', 'wide', 'repo');
    expect(res.status).toBe(200);
    expect(res.body.scope.split(' ').sort()).toEqual([...GRANT].sort());
    expect(op.tokenRequests.refresh_token).toBe(0);
  });
});
