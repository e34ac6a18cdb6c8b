/**
 * The oidc-provider test harness, proven end to end with openid-client 6 as the OAuth client: the flows and
 * faults that the connect-flow and background-refresh tests will rely on.
 */
import {
  allowInsecureRequests,
  AuthorizationResponseError,
  authorizationCodeGrant,
  buildAuthorizationUrl,
  calculatePKCECodeChallenge,
  ClientError,
  discovery,
  fetchUserInfo,
  randomPKCECodeVerifier,
  randomState,
  refreshTokenGrant,
  ResponseBodyError,
  tokenIntrospection,
  tokenRevocation,
  type Configuration,
} from 'openid-client';
import {
  startOAuthProvider,
  type TestOAuthClient,
  type TestOAuthProvider,
} from '../../support/oauth-provider.js';

const REDIRECT_URI = 'http://127.0.0.1:9/v1/connect/callback';
const SCOPE = 'openid profile email offline_access repo read:user';
// openid-client 6 authenticates with client_secret_post when given only a secret; the harness defaults to basic.
const postClient = {
  client_id: 'custos-post',
  client_secret: 'post-secret',
  redirect_uris: [REDIRECT_URI],
  token_endpoint_auth_method: 'client_secret_post',
} satisfies TestOAuthClient;
const basicClient = {
  client_id: 'custos-basic',
  client_secret: 'basic-secret',
  redirect_uris: [REDIRECT_URI],
};
const publicClient = { client_id: 'custos-public', redirect_uris: [REDIRECT_URI] };

async function clientFor(
  op: TestOAuthProvider,
  client: { client_id: string; client_secret: string } = postClient,
): Promise<Configuration> {
  return discovery(new URL(op.issuer), client.client_id, client.client_secret, undefined, {
    execute: [allowInsecureRequests],
  });
}

/** An authorization request as a connect flow builds it: PKCE S256 and state, no prompt. */
async function authorizationRequest(config: Configuration, params: Record<string, string> = {}) {
  const codeVerifier = randomPKCECodeVerifier();
  const state = randomState();
  const url = buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT_URI,
    scope: SCOPE,
    state,
    code_challenge: await calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    ...params,
  });
  return { url: url.href, codeVerifier, state };
}

/** Signs in and consents, then redeems the code with openid-client. */
async function connect(op: TestOAuthProvider, config: Configuration) {
  const req = await authorizationRequest(config);
  const { redirectedTo } = await op.authorize(req.url);
  return authorizationCodeGrant(config, new URL(redirectedTo), {
    pkceCodeVerifier: req.codeVerifier,
    expectedState: req.state,
  });
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('oauth-provider harness with default options', () => {
  let op: TestOAuthProvider;
  let config: Configuration;

  beforeAll(async () => {
    op = await startOAuthProvider({
      clients: [postClient, basicClient, publicClient],
      users: { alice: { email: 'alice@example.test', name: 'Alice' } },
    });
    config = await clientFor(op);
  });
  afterEach(() => {
    expect(op.serverErrors).toEqual([]);
    op.reset();
  });
  afterAll(() => op.close());

  it('serves discovery for an http issuer on loopback with iss in authorization responses', async () => {
    const meta = config.serverMetadata();
    expect(op.hostPort).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(meta.issuer).toBe(op.issuer);
    expect(meta.token_endpoint).toBe(op.endpoints.token);
    expect(meta.revocation_endpoint).toBe(op.endpoints.revocation);
    expect(meta.introspection_endpoint).toBe(op.endpoints.introspection);
    expect(meta.authorization_response_iss_parameter_supported).toBe(true);
    expect(meta.code_challenge_methods_supported).toEqual(['S256']);
    expect(meta.grant_types_supported).toEqual(
      expect.arrayContaining(['authorization_code', 'refresh_token']),
    );
  });

  it('completes a code flow with PKCE: access and refresh tokens, granted scopes, expires_in, iss on the callback', async () => {
    const req = await authorizationRequest(config);
    expect(new URL(req.url).searchParams.has('prompt')).toBe(false);

    const { redirectedTo } = await op.authorize(req.url);
    const callback = new URL(redirectedTo);
    expect(callback.origin + callback.pathname).toBe(REDIRECT_URI);
    expect(callback.searchParams.get('iss')).toBe(op.issuer);
    expect(callback.searchParams.get('state')).toBe(req.state);
    expect(callback.searchParams.get('code')).toEqual(expect.any(String));

    const tokens = await authorizationCodeGrant(config, callback, {
      pkceCodeVerifier: req.codeVerifier,
      expectedState: req.state,
    });
    expect(tokens.access_token).toEqual(expect.any(String));
    expect(tokens.refresh_token).toEqual(expect.any(String));
    expect(tokens.token_type.toLowerCase()).toBe('bearer');
    expect(tokens.expires_in).toBe(3600);
    expect(tokens.scope?.split(' ').sort()).toEqual(SCOPE.split(' ').sort());
    expect(tokens.claims()?.sub).toBe('alice');
    expect(op.tokenRequests).toEqual({ authorization_code: 1, refresh_token: 0, total: 1 });

    const userinfo = await fetchUserInfo(config, tokens.access_token, 'alice');
    expect(userinfo).toMatchObject({ sub: 'alice', email: 'alice@example.test', name: 'Alice' });
    const introspection = await tokenIntrospection(config, tokens.access_token);
    expect(introspection).toMatchObject({ active: true, client_id: postClient.client_id, sub: 'alice' });
  });

  it('signs in the account the driver is given', async () => {
    const req = await authorizationRequest(config);
    const { redirectedTo } = await op.authorize(req.url, { account: 'bob' });
    const tokens = await authorizationCodeGrant(config, new URL(redirectedTo), {
      pkceCodeVerifier: req.codeVerifier,
      expectedState: req.state,
    });
    expect(tokens.claims()?.sub).toBe('bob');
  });

  it('rotates refresh tokens; the old one then gives invalid_grant and revokes the grant', async () => {
    const first = await connect(op, config);
    const second = await refreshTokenGrant(config, first.refresh_token!);
    expect(second.refresh_token).toEqual(expect.any(String));
    expect(second.refresh_token).not.toBe(first.refresh_token);
    expect(second.expires_in).toBe(3600);
    expect(op.tokenRequests).toEqual({ authorization_code: 1, refresh_token: 1, total: 2 });

    const reused = await op.refresh(postClient.client_id, postClient.client_secret, first.refresh_token!);
    expect(reused.status).toBe(400);
    expect(reused.body.error).toBe('invalid_grant');
    // Reuse detection revoked the grant, so the current refresh token is dead too.
    const current = await op.refresh(postClient.client_id, postClient.client_secret, second.refresh_token!);
    expect(current.body.error).toBe('invalid_grant');
  });

  it('redeems codes and refreshes with the raw helpers (client_secret_basic)', async () => {
    const basicConfig = await clientFor(op, basicClient);
    const req = await authorizationRequest(basicConfig);
    const code = new URL((await op.authorize(req.url)).redirectedTo).searchParams.get('code')!;

    const exchanged = await op.exchangeCode(
      basicClient.client_id,
      basicClient.client_secret,
      code,
      REDIRECT_URI,
      req.codeVerifier,
    );
    expect(exchanged.status).toBe(200);
    expect(exchanged.headers.get('cache-control')).toBe('no-store');
    expect(exchanged.body).toMatchObject({ token_type: 'Bearer', expires_in: 3600 });
    const refreshed = await op.refresh(
      basicClient.client_id,
      basicClient.client_secret,
      exchanged.body.refresh_token!,
    );
    expect(refreshed.status).toBe(200);
    expect(refreshed.body.refresh_token).not.toBe(exchanged.body.refresh_token);

    const replayed = await op.exchangeCode(
      basicClient.client_id,
      basicClient.client_secret,
      code,
      REDIRECT_URI,
      req.codeVerifier,
    );
    expect(replayed.body.error).toBe('invalid_grant');
  });

  it('serves public clients (no secret), rotating their refresh tokens', async () => {
    const publicConfig = await discovery(new URL(op.issuer), publicClient.client_id, undefined, undefined, {
      execute: [allowInsecureRequests],
    });
    const req = await authorizationRequest(publicConfig);
    const code = new URL((await op.authorize(req.url)).redirectedTo).searchParams.get('code')!;

    const exchanged = await op.exchangeCode(
      publicClient.client_id,
      undefined,
      code,
      REDIRECT_URI,
      req.codeVerifier,
    );
    expect(exchanged.status).toBe(200);
    const refreshed = await refreshTokenGrant(publicConfig, exchanged.body.refresh_token!);
    expect(refreshed.refresh_token).not.toBe(exchanged.body.refresh_token);
  });

  it('redirects with access_denied (and iss, state) when the user denies consent', async () => {
    const req = await authorizationRequest(config);
    const { redirectedTo } = await op.authorize(req.url, { deny: true });
    const callback = new URL(redirectedTo);
    expect(callback.searchParams.get('error')).toBe('access_denied');
    expect(callback.searchParams.get('state')).toBe(req.state);
    expect(callback.searchParams.get('iss')).toBe(op.issuer);

    const err = await rejection(
      authorizationCodeGrant(config, callback, {
        pkceCodeVerifier: req.codeVerifier,
        expectedState: req.state,
      }),
    );
    expect(err).toBeInstanceOf(AuthorizationResponseError);
    expect((err as AuthorizationResponseError).error).toBe('access_denied');
    expect(op.tokenRequests.total).toBe(0);
  });

  it('rejects a code redeemed with the wrong code_verifier', async () => {
    const req = await authorizationRequest(config);
    const { redirectedTo } = await op.authorize(req.url);
    const err = await rejection(
      authorizationCodeGrant(config, new URL(redirectedTo), {
        pkceCodeVerifier: randomPKCECodeVerifier(),
        expectedState: req.state,
      }),
    );
    expect(err).toBeInstanceOf(ResponseBodyError);
    expect((err as ResponseBodyError).error).toBe('invalid_grant');
  });

  it('requires PKCE', async () => {
    const url = buildAuthorizationUrl(config, { redirect_uri: REDIRECT_URI, scope: SCOPE, state: 's' });
    const callback = new URL((await op.authorize(url.href)).redirectedTo);
    expect(callback.searchParams.get('error')).toBe('invalid_request');
    expect(callback.searchParams.get('error_description')).toMatch(/PKCE/);
  });

  it('answers token requests with an injected 503 and Retry-After, without calling oidc-provider', async () => {
    const tokens = await connect(op, config);
    op.faults.tokenStatus = 503;
    op.faults.retryAfterSeconds = 7;

    // openid-client reads OAuth error bodies on 4xx only: a 5xx is a ClientError whose cause is the Response.
    const err = await rejection(refreshTokenGrant(config, tokens.refresh_token!));
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe('OAUTH_RESPONSE_IS_NOT_CONFORM');
    const res = (err as ClientError).cause as Response;
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('7');
    expect(await res.json()).toMatchObject({ error: 'temporarily_unavailable' });
    expect(op.tokenRequests).toEqual({ authorization_code: 1, refresh_token: 1, total: 2 });

    // The refresh token was never presented to oidc-provider, so it still works (and rotates) afterwards.
    op.faults.tokenStatus = null;
    const refreshed = await refreshTokenGrant(config, tokens.refresh_token!);
    expect(refreshed.refresh_token).not.toBe(tokens.refresh_token);
  });

  it('answers an injected 429 as an OAuth error body', async () => {
    const tokens = await connect(op, config);
    op.faults.tokenStatus = 429;
    op.faults.retryAfterSeconds = 2;

    const err = await rejection(refreshTokenGrant(config, tokens.refresh_token!));
    expect(err).toBeInstanceOf(ResponseBodyError);
    expect((err as ResponseBodyError).status).toBe(429);
    expect((err as ResponseBodyError).error).toBe('temporarily_unavailable');
    expect((err as ResponseBodyError).response.headers.get('retry-after')).toBe('2');
  });

  it('answers refresh_token grants with an injected invalid_grant while other grants pass', async () => {
    op.faults.invalidGrant = true;
    const tokens = await connect(op, config);
    expect(tokens.refresh_token).toEqual(expect.any(String));

    const err = await rejection(refreshTokenGrant(config, tokens.refresh_token!));
    expect((err as ResponseBodyError).status).toBe(400);
    expect((err as ResponseBodyError).error).toBe('invalid_grant');
    expect(op.tokenRequests).toEqual({ authorization_code: 1, refresh_token: 1, total: 2 });

    op.faults.invalidGrant = false;
    await expect(refreshTokenGrant(config, tokens.refresh_token!)).resolves.toHaveProperty('access_token');
  });

  it('delays token responses by delayMs', async () => {
    const tokens = await connect(op, config);
    op.faults.delayMs = 300;
    const started = Date.now();
    await refreshTokenGrant(config, tokens.refresh_token!);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  });

  it('never answers token requests while hang is set', async () => {
    const tokens = await connect(op, config);
    op.faults.hang = true;
    const body = new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: tokens.refresh_token!,
      client_id: postClient.client_id,
      client_secret: postClient.client_secret,
    });
    const err = await rejection(
      fetch(op.endpoints.token, { method: 'POST', body, signal: AbortSignal.timeout(200) }),
    );
    expect((err as Error).name).toBe('TimeoutError');
    expect(op.tokenRequests.refresh_token).toBe(1);
  });

  it('revokes tokens (RFC 7009) and counts revocations by token type', async () => {
    const first = await connect(op, config);
    await tokenRevocation(config, first.refresh_token!, { token_type_hint: 'refresh_token' });
    const refused = await op.refresh(postClient.client_id, postClient.client_secret, first.refresh_token!);
    expect(refused.body.error).toBe('invalid_grant');
    await expect(tokenIntrospection(config, first.access_token)).resolves.toMatchObject({ active: false });

    // oidc-provider revokes every token of the grant even when the one revoked is an access token.
    const second = await connect(op, config);
    await tokenRevocation(config, second.access_token);
    await expect(tokenIntrospection(config, second.access_token)).resolves.toMatchObject({ active: false });
    const alsoRefused = await op.refresh(
      postClient.client_id,
      postClient.client_secret,
      second.refresh_token!,
    );
    expect(alsoRefused.body.error).toBe('invalid_grant');

    await tokenRevocation(config, 'not-a-token');
    expect(op.revocations).toBe(3);
    expect(op.revokedTokenTypes).toEqual(['refresh_token', 'access_token', 'unknown']);
  });
});

describe('oauth-provider harness with a 2 s access-token TTL and no rotation', () => {
  let op: TestOAuthProvider;
  let config: Configuration;

  beforeAll(async () => {
    op = await startOAuthProvider({
      clients: [postClient],
      accessTokenTtlSeconds: 2,
      refreshTokenRotation: false,
    });
    config = await clientFor(op);
  });
  afterAll(() => op.close());

  it('reports the short TTL in expires_in, on the code grant and on refresh', async () => {
    const tokens = await connect(op, config);
    expect(tokens.expires_in).toBe(2);
    const refreshed = await refreshTokenGrant(config, tokens.refresh_token!);
    expect(refreshed.expires_in).toBe(2);
  });

  it('keeps the same refresh token when rotation is off', async () => {
    const tokens = await connect(op, config);
    const refreshed = await refreshTokenGrant(config, tokens.refresh_token!);
    expect(refreshed.refresh_token ?? tokens.refresh_token).toBe(tokens.refresh_token);
    await expect(refreshTokenGrant(config, tokens.refresh_token!)).resolves.toHaveProperty('access_token');
  });
});

describe('oauth-provider harness without refresh tokens or required PKCE', () => {
  let op: TestOAuthProvider;
  let config: Configuration;

  beforeAll(async () => {
    op = await startOAuthProvider({ clients: [postClient], issueRefreshTokens: false, pkceRequired: false });
    config = await clientFor(op);
  });
  afterAll(() => op.close());

  it('issues no refresh token even for offline_access', async () => {
    const tokens = await connect(op, config);
    expect(tokens.access_token).toEqual(expect.any(String));
    expect(tokens.refresh_token).toBeUndefined();
  });

  it('accepts a code flow without PKCE', async () => {
    const state = randomState();
    const url = buildAuthorizationUrl(config, { redirect_uri: REDIRECT_URI, scope: 'openid repo', state });
    const { redirectedTo } = await op.authorize(url.href);
    const tokens = await authorizationCodeGrant(config, new URL(redirectedTo), { expectedState: state });
    expect(tokens.scope).toBe('openid repo');
  });
});
