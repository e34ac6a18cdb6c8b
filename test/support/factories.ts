/**
 * Test data, made through the admin API the way a tenant's backend makes it: a tenant with its admin and
 * auditor keys, a connector with its secret (or its key pair), a trusted identity provider, an imported
 * connection, a custom provider and a provider app. Each factory fails loudly when Custos refuses, so a broken
 * set-up is never mistaken for a test's own failure; a test that asserts on one of these answers sends that
 * request itself.
 */
import type { Reply, TestApp } from './app.js';
import type { SigningKey } from './idp.js';
import type { TestOAuthProvider } from './oauth-provider.js';

export interface TenantFixture {
  tenantId: string;
  adminKey: string;
  adminKeyId: string;
  auditorKey: string;
}

/** A fresh tenant with an admin key and an auditor key, made through the API. */
export async function createTenant(
  app: TestApp,
  name = `t-${Math.random().toString(36).slice(2)}`,
): Promise<TenantFixture> {
  const t = await app.request('POST', '/v1/tenants', { key: app.bootstrapKey, body: { name } });
  if (t.status !== 201) throw new Error(`tenant create failed: ${t.raw}`);
  const a = await app.request('POST', `/v1/tenants/${t.body.id}/admin-keys`, {
    key: app.bootstrapKey,
    body: { name: 'admin', role: 'admin' },
  });
  const b = await app.request('POST', `/v1/tenants/${t.body.id}/admin-keys`, {
    key: a.body.key,
    body: { name: 'auditor', role: 'auditor' },
  });
  if (a.status !== 201 || b.status !== 201) throw new Error(`key create failed: ${a.raw} ${b.raw}`);
  return { tenantId: t.body.id, adminKey: a.body.key, adminKeyId: a.body.id, auditorKey: b.body.key };
}

/** A secret no other test holds, so that finding it anywhere means it came from this test. */
export const uniqueSecret = (label: string) =>
  `${label}-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;

/** Throws unless Custos answered with one of `statuses`. */
function expectAccepted(res: Reply, what: string, statuses: number[]): void {
  if (!statuses.includes(res.status)) throw new Error(`${what}: ${res.status} ${res.raw}`);
}

/** A connector's policy: by default trusted delegation to GitHub only. */
export interface ConnectorPolicy {
  name?: string;
  owner?: string;
  allowedProviders?: string[];
  allowedScopes?: Record<string, string[]>;
  delegation?: 'trusted' | 'user_token';
}

export interface SecretConnector {
  id: string;
  clientId: string;
  /** Shown once, in the creation's answer. */
  clientSecret: string;
}

export interface KeyedConnector {
  id: string;
  clientId: string;
  /** The key its client assertions are signed with (its public JWK is registered). */
  key: SigningKey;
}

async function postConnector(app: TestApp, t: TenantFixture, body: Record<string, unknown>) {
  const res = await app.request('POST', `/v1/tenants/${t.tenantId}/connectors`, { key: t.adminKey, body });
  expectAccepted(res, 'connector', [201]);
  return res.body as { id: string; clientId: string; clientSecret?: string };
}

const connectorBody = (policy: ConnectorPolicy) => ({
  name: 'connector',
  allowedProviders: ['github'],
  delegation: 'trusted',
  ...policy,
});

/** A connector that authenticates with a client secret (client_secret_basic). */
export async function createConnector(
  app: TestApp,
  t: TenantFixture,
  policy: ConnectorPolicy = {},
): Promise<SecretConnector> {
  const c = await postConnector(app, t, {
    ...connectorBody(policy),
    auth: { method: 'client_secret_basic' },
  });
  if (typeof c.clientSecret !== 'string') throw new Error('connector: no client secret in the answer');
  return { id: c.id, clientId: c.clientId, clientSecret: c.clientSecret };
}

/** A connector that authenticates with private_key_jwt, signing its assertions with `key`. */
export async function createKeyedConnector(
  app: TestApp,
  t: TenantFixture,
  key: SigningKey,
  policy: ConnectorPolicy = {},
): Promise<KeyedConnector> {
  const c = await postConnector(app, t, {
    ...connectorBody(policy),
    auth: { method: 'private_key_jwt', jwks: { keys: [key.publicJwk] } },
  });
  return { id: c.id, clientId: c.clientId, key };
}

/** The Authorization header of client_secret_basic (RFC 6749 §2.3.1: both parts form-encoded first). */
export const basicAuth = (c: { clientId: string; clientSecret: string }) =>
  'Basic ' +
  Buffer.from(`${encodeURIComponent(c.clientId)}:${encodeURIComponent(c.clientSecret)}`).toString('base64');

/**
 * Trusts an identity provider (a TestIdp, or anything with an issuer and a JWK Set URL) for the tenant's user
 * tokens: audience `custos`, ES256, unless `extra` says otherwise.
 */
export async function trustIdentityProvider(
  app: TestApp,
  t: TenantFixture,
  idp: { issuer: string; jwksUri: string },
  extra: Record<string, unknown> = {},
  name = 'main',
): Promise<void> {
  const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/identity-providers/${name}`, {
    key: t.adminKey,
    body: {
      issuer: idp.issuer,
      jwksUri: idp.jwksUri,
      audiences: ['custos'],
      algorithms: ['ES256'],
      ...extra,
    },
  });
  expectAccepted(res, 'identity provider', [200, 201]);
}

/** A credential as a tenant's backend imports it. */
export type Credential =
  | { type: 'api_key'; apiKey: string }
  | { type: 'oauth2'; accessToken: string; refreshToken?: string; scopes?: string[]; expiresAt?: string };

/** Imports `credential` as `user`'s connection to `provider` (new: 201, replaced: 200); gives its id. */
export async function importConnection(
  app: TestApp,
  t: TenantFixture,
  user: string,
  provider: string,
  credential: Credential,
): Promise<{ id: string }> {
  const res = await app.request(
    'PUT',
    `/v1/tenants/${t.tenantId}/users/${encodeURIComponent(user)}/connections/${provider}`,
    { key: t.adminKey, body: credential },
  );
  expectAccepted(res, `connection of ${user} to ${provider}`, [200, 201]);
  return { id: res.body.id as string };
}

/** Imports an OAuth access token no other test holds for `user`; gives the connection's id and the token. */
export async function importUniqueToken(
  app: TestApp,
  t: TenantFixture,
  user: string,
  provider = 'github',
): Promise<{ id: string; secret: string }> {
  const secret = uniqueSecret('tok');
  const { id } = await importConnection(app, t, user, provider, { type: 'oauth2', accessToken: secret });
  return { id, secret };
}

/** Saves a custom provider for the tenant (its definition names its key). */
export async function saveCustomProvider(
  app: TestApp,
  t: TenantFixture,
  definition: { key: string } & Record<string, unknown>,
): Promise<void> {
  const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/${definition.key}`, {
    key: t.adminKey,
    body: definition,
  });
  expectAccepted(res, `provider ${definition.key}`, [200, 201]);
}

/** The tenant's own OAuth app at `provider`, as registered there (the provider's client id and secret). */
export async function saveProviderApp(
  app: TestApp,
  t: TenantFixture,
  provider: string,
  client: { client_id: string; client_secret: string },
): Promise<void> {
  const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/${provider}/app`, {
    key: t.adminKey,
    body: { clientId: client.client_id, clientSecret: client.client_secret },
  });
  expectAccepted(res, `app at ${provider}`, [200, 201]);
}

/**
 * oidc-provider (`op`) as the tenant's custom OAuth provider `key`, with every endpoint it has (authorization with
 * PKCE, token, revocation, issuer and JWKS for ID tokens), and the tenant's app there (`client`).
 */
export async function saveOidcProvider(
  app: TestApp,
  t: TenantFixture,
  key: string,
  op: TestOAuthProvider,
  client: { client_id: string; client_secret: string },
  name = key,
): Promise<void> {
  await saveCustomProvider(app, t, {
    key,
    name,
    authMode: 'oauth2',
    oauth2: {
      authorizationUrl: op.endpoints.authorization,
      tokenUrl: op.endpoints.token,
      revocationUrl: op.endpoints.revocation,
      issuer: op.issuer,
      jwksUri: op.endpoints.jwks,
      scopes: ['openid'],
      pkce: true,
      tokenEndpointAuthMethod: 'client_secret_basic',
    },
  });
  await saveProviderApp(app, t, key, client);
}
