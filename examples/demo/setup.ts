/**
 * What a tenant's backend and its administrators do before a user can connect, done through Custos's admin
 * API as they would do it: a tenant with an admin key and an auditor key, a custom OAuth provider and the
 * tenant's OAuth app there, a trusted identity provider, a connector, and a connect link for the user.
 */
import type { DemoIdentityProvider } from './identity-provider.js';
import type { DemoProvider } from './oauth-provider.js';

export const PROVIDER_KEY = 'demo';
export const PROVIDER_NAME = 'Demo Provider';
export const IDP_NAME = 'demo-idp';
/** The audience Custos expects in the identity provider's user tokens. */
export const USER_TOKEN_AUDIENCE = 'custos-demo';

export interface DemoTenant {
  tenantId: string;
  tenantName: string;
  /** Manages the whole tenant: kept in a 0600 file, never printed. */
  adminKey: string;
  /** Reads the tenant's audit trail and nothing else: printed for the audit curl. */
  auditorKey: string;
  connector: { id: string; name: string; clientId: string; clientSecret: string };
  /** The user's first connect link. */
  session: { id: string; url: string };
}

/** An admin API answer other than the one expected; the message names the step, never a secret. */
export class SetupError extends Error {}

/** Calls Custos's admin API with `key`; answers the JSON body of a 2xx, throws SetupError otherwise. */
export async function api<T = Record<string, unknown>>(
  baseUrl: string,
  key: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  if (!res.ok) throw new SetupError(`${method} ${path} answered ${res.status}: ${text.slice(0, 500)}`);
  return (text ? JSON.parse(text) : {}) as T;
}

export async function setUpTenant(opts: {
  baseUrl: string;
  platformKey: string;
  provider: DemoProvider;
  providerApp: { clientId: string; clientSecret: string };
  idp: DemoIdentityProvider;
  userId: string;
}): Promise<DemoTenant> {
  const { baseUrl, provider, idp } = opts;
  const tenantName = 'Acme (demo)';
  const tenant = await api<{ id: string }>(baseUrl, opts.platformKey, 'POST', '/v1/tenants', {
    name: tenantName,
  });
  const t = `/v1/tenants/${tenant.id}`;
  const admin = await api<{ key: string }>(baseUrl, opts.platformKey, 'POST', `${t}/admin-keys`, {
    name: 'demo-admin',
    role: 'admin',
  });
  const call = <T>(method: string, path: string, body?: unknown) =>
    api<T>(baseUrl, admin.key, method, `${t}${path}`, body);
  const auditor = await call<{ key: string }>('POST', '/admin-keys', {
    name: 'demo-auditor',
    role: 'auditor',
  });

  // The provider, as a tenant adds an in-house or unlisted system (same schema as providers/*.yaml).
  await call('PUT', `/providers/${PROVIDER_KEY}`, {
    key: PROVIDER_KEY,
    name: PROVIDER_NAME,
    authMode: 'oauth2',
    oauth2: {
      authorizationUrl: provider.endpoints.authorization,
      tokenUrl: provider.endpoints.token,
      revocationUrl: provider.endpoints.revocation,
      issuer: provider.issuer,
      jwksUri: provider.endpoints.jwks,
      scopes: ['openid', 'profile', 'offline_access', 'files:read'],
      // Like Google: a refresh token only when the user is asked for consent.
      authorizationParams: { prompt: 'consent' },
      tokenEndpointAuthMethod: 'client_secret_basic',
    },
  });
  // The tenant's own OAuth app at the provider; Custos seals the secret and never returns it.
  await call('PUT', `/providers/${PROVIDER_KEY}/app`, opts.providerApp);
  // Whose user tokens a connector may present: the company's identity provider.
  await call('PUT', `/identity-providers/${IDP_NAME}`, {
    issuer: idp.issuer,
    jwksUri: idp.jwksUri,
    audiences: [USER_TOKEN_AUDIENCE],
    algorithms: ['ES256'],
  });
  // The workload acting for users (say, an MCP server): it must present the user's own token.
  const connectorName = 'Demo agent';
  const connector = await call<{ id: string; clientId: string; clientSecret: string }>(
    'POST',
    '/connectors',
    {
      name: connectorName,
      owner: 'demo',
      allowedProviders: [PROVIDER_KEY],
      delegation: 'user_token',
      auth: { method: 'client_secret_basic' },
    },
  );
  const session = await call<{ id: string; url: string }>('POST', '/connect/sessions', {
    userId: opts.userId,
    provider: PROVIDER_KEY,
  });
  return {
    tenantId: tenant.id,
    tenantName,
    adminKey: admin.key,
    auditorKey: auditor.key,
    connector: { ...connector, name: connectorName },
    session: { id: session.id, url: session.url },
  };
}
