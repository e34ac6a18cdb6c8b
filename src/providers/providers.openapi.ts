/** What the provider APIs answer, for the OpenAPI document: response schemas, examples and a custom provider. */
import { z } from 'zod';
import { EXAMPLE } from '../common/openapi.js';

const isoTime = z.iso.datetime({ offset: true });

export const publicProviderViewSchema = z.looseObject({
  key: z.string(),
  name: z.string(),
  authMode: z.string().describe('`oauth2` or `api_key`.'),
  docsUrl: z.string().optional(),
  scopes: z.array(z.string()).describe('Default scopes (empty for API-key providers).'),
  connectionConfig: z
    .array(z.looseObject({ key: z.string(), label: z.string(), pattern: z.string().optional() }))
    .optional()
    .describe('Values a user gives when connecting (a subdomain, an instance), used in the provider’s URLs.'),
  oauth2: z
    .looseObject({
      authorizationUrl: z.string(),
      tokenUrl: z.string(),
      revocationUrl: z.string().optional(),
      issuer: z.string().optional(),
      scopeSeparator: z.string(),
      pkce: z.boolean(),
      rotatesRefreshToken: z.boolean(),
    })
    .optional(),
});

export const providerListSchema = z.looseObject({ items: z.array(publicProviderViewSchema) });

export const tenantProviderSummarySchema = publicProviderViewSchema.extend({
  custom: z.boolean().describe('A custom provider of this tenant, rather than one of the catalog.'),
  version: z.number().int().optional(),
  updatedAt: isoTime.optional(),
});

export const tenantProviderListSchema = z.looseObject({ items: z.array(tenantProviderSummarySchema) });

export const tenantProviderViewSchema = z.looseObject({
  key: z.string(),
  custom: z.boolean(),
  definition: z
    .looseObject({ key: z.string(), name: z.string(), authMode: z.string() })
    .describe('The whole definition, in the schema of providers/*.yaml, with defaults applied.'),
  version: z.number().int().optional().describe('Custom providers: incremented on each replacement.'),
  createdAt: isoTime.optional(),
  updatedAt: isoTime.optional(),
});

export const providerAppViewSchema = z.looseObject({
  provider: z.string(),
  clientId: z.string(),
  hasClientSecret: z.boolean(),
  hasPrivateKey: z.boolean(),
  scopes: z.array(z.string()).describe('Scopes asked for by default (empty: the provider’s defaults).'),
  createdAt: isoTime,
  updatedAt: isoTime,
});

export const githubExample = {
  key: 'github',
  name: 'GitHub',
  authMode: 'oauth2',
  docsUrl: 'https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps',
  scopes: ['repo', 'read:user', 'user:email'],
  oauth2: {
    authorizationUrl: 'https://github.com/login/oauth/authorize',
    tokenUrl: 'https://github.com/login/oauth/access_token',
    scopeSeparator: ' ',
    pkce: true,
    rotatesRefreshToken: true,
  },
};

export const anthropicExample = {
  key: 'anthropic',
  name: 'Anthropic',
  authMode: 'api_key',
  scopes: [],
  docsUrl: 'https://docs.anthropic.com/en/api/getting-started',
};

/** A custom provider as sent to PUT …/providers/{key}: an API-key provider that is verified on connect. */
export const customProviderExample = {
  key: 'acme-crm',
  name: 'Acme CRM',
  authMode: 'api_key',
  docsUrl: 'https://developer.acme-crm.example/docs',
  connectionConfig: [{ key: 'instance', label: 'Your Acme CRM instance' }],
  apiKey: { verify: { url: 'https://{instance}.acme-crm.example/api/me' } },
};

/** A custom OAuth provider. */
export const customOAuthProviderExample = {
  key: 'corp-wiki',
  name: 'Corp Wiki',
  authMode: 'oauth2',
  oauth2: {
    authorizationUrl: 'https://wiki.acme.example/oauth/authorize',
    tokenUrl: 'https://wiki.acme.example/oauth/token',
    scopes: ['read'],
    pkce: true,
  },
};

export const tenantProviderViewExample = {
  key: 'acme-crm',
  custom: true,
  definition: customProviderExample,
  version: 1,
  createdAt: EXAMPLE.time,
  updatedAt: EXAMPLE.time,
};

export const providerAppExample = {
  provider: 'github',
  clientId: 'Iv1.0123456789abcdef',
  hasClientSecret: true,
  hasPrivateKey: false,
  scopes: ['repo', 'read:user'],
  createdAt: EXAMPLE.time,
  updatedAt: EXAMPLE.time,
};
