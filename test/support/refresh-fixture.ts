/**
 * The set-up the refresh tests share: a tenant whose custom provider `inhouse` is an oidc-provider with
 * refresh-token rotation, its OAuth app, a trusted connector, real token sets from the provider, and the
 * token exchange (in-process through fastify inject, or over HTTP to a Custos process).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Reply, TestApp } from './app.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  importConnection,
  saveCustomProvider,
  saveProviderApp,
  type SecretConnector,
  type TenantFixture,
} from './factories.js';
import type { TestOAuthProvider } from './oauth-provider.js';

export const PUBLIC_URL = 'https://custos.example.test';
export const REDIRECT = `${PUBLIC_URL}/connect/callback/inhouse`;

export interface RefreshFixture {
  t: TenantFixture;
  connector: SecretConnector;
  client: { client_id: string; client_secret: string };
  /** A real token set for `account`, straight from the provider (authorization code + PKCE). */
  tokensFor(account: string): Promise<{ access_token: string; refresh_token: string }>;
  /** Stores a token set for `user` that expires in `expiresInSeconds` (negative: already expired). */
  connect(
    user: string,
    expiresInSeconds: number,
    provider?: string,
  ): Promise<{ access_token: string; refresh_token: string; connectionId: string }>;
  /** A trusted token exchange for `user`, in-process (`on` a TestApp) or over HTTP (`on` a base URL). */
  exchange(user: string, on?: TestApp | string, audience?: string): Promise<Reply>;
}

export function refreshClient(): { client_id: string; client_secret: string } {
  return { client_id: 'custos-refresh', client_secret: 'refresh-secret-' + randomBytes(8).toString('hex') };
}

export async function setUpRefreshTenant(
  app: TestApp,
  op: TestOAuthProvider,
  client: { client_id: string; client_secret: string },
  extraProviders: Record<string, string> = {},
): Promise<RefreshFixture> {
  const t = await createTenant(app);
  const providers: Record<string, string> = { inhouse: op.endpoints.token, ...extraProviders };
  for (const [key, tokenUrl] of Object.entries(providers)) {
    await saveCustomProvider(app, t, {
      key,
      name: `Provider ${key}`,
      authMode: 'oauth2',
      oauth2: {
        authorizationUrl: op.endpoints.authorization,
        tokenUrl,
        ...(key === 'inhouse' ? { issuer: op.issuer } : {}),
        scopes: ['openid', 'offline_access', 'repo'],
        rotatesRefreshToken: true,
      },
    });
    await saveProviderApp(app, t, key, client);
  }
  const connector = await createConnector(app, t, {
    name: 'refresh test',
    allowedProviders: Object.keys(providers),
  });

  const tokensFor = async (account: string) => {
    const verifier = randomBytes(32).toString('base64url');
    const url = new URL(op.endpoints.authorization);
    url.search = new URLSearchParams({
      client_id: client.client_id,
      redirect_uri: REDIRECT,
      response_type: 'code',
      scope: 'openid offline_access repo',
      state: randomBytes(8).toString('hex'),
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    }).toString();
    const { redirectedTo } = await op.authorize(url.href, { account });
    const code = new URL(redirectedTo).searchParams.get('code')!;
    const res = await op.exchangeCode(client.client_id, client.client_secret, code, REDIRECT, verifier);
    if (res.status !== 200) throw new Error(`code exchange failed: ${res.status}`);
    return res.body as { access_token: string; refresh_token: string };
  };

  const connect = async (user: string, expiresInSeconds: number, provider = 'inhouse') => {
    const tokens = await tokensFor(user);
    const { id } = await importConnection(app, t, user, provider, {
      type: 'oauth2',
      accessToken: tokens.access_token,
      refreshToken: tokens.refresh_token,
      scopes: ['repo'],
      expiresAt: new Date(Date.now() + expiresInSeconds * 1000).toISOString(),
    });
    return { ...tokens, connectionId: id };
  };

  const exchange = async (user: string, on: TestApp | string = app, audience = 'inhouse') => {
    const payload = new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: user,
      subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
      audience,
    }).toString();
    const headers = {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: basicAuth(connector),
    };
    if (typeof on !== 'string') return on.request('POST', '/oauth/token', { payload, headers });
    const res = await fetch(`${on}/oauth/token`, { method: 'POST', headers, body: payload });
    const raw = await res.text();
    return {
      status: res.status,
      headers: Object.fromEntries(res.headers.entries()),
      body: JSON.parse(raw) as unknown,
      raw,
    } as Reply;
  };

  return { t, connector, client, tokensFor, connect, exchange };
}
