/**
 * Request bodies for registering connectors and trusted identity providers. Shapes only: whether a provider
 * key exists and whether a URL may be fetched are checked by the services.
 */
import { z } from 'zod';
import { scopeTokenSchema, text } from '../common/validation.js';
import { PROVIDER_KEY_PATTERN } from '../providers/provider-definition.js';
import { SIGNING_ALGORITHMS } from '../common/jwt-policy.js';
import { publicJwksSchema } from './jwk.js';

export const IDENTITY_PROVIDER_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

const providerKey = z.string().regex(PROVIDER_KEY_PATTERN, 'must be a provider key');

const scope = scopeTokenSchema;

const absoluteUrl = (raw: string): URL | null => {
  try {
    return new URL(raw);
  } catch {
    return null;
  }
};

/** A URL Custos will fetch; https unless the host is allow-listed, which the outbound guard decides. */
const fetchUrl = text({ max: 2048 }).refine((raw) => {
  const url = absoluteUrl(raw);
  return url !== null && (url.protocol === 'https:' || url.protocol === 'http:');
}, 'must be an absolute https URL');

const name = text({ max: 200, trim: true });
const owner = text({ max: 200, trim: true });
const allowedProviders = z.array(providerKey).min(1).max(100);
/** Provider key → the scopes a connector may ask for; a provider absent here is not narrowed further. */
const allowedScopes = z.record(providerKey, z.array(scope).min(1).max(200));
const delegation = z.enum(['user_token', 'trusted']);

const exactlyOneKeySource = (a: { jwks?: unknown; jwksUri?: unknown }) =>
  (a.jwks === undefined) !== (a.jwksUri === undefined);
const exactlyOneKeySourceMessage = { message: 'exactly one of jwks or jwksUri is required' };

export const connectorAuthSchema = z.discriminatedUnion('method', [
  z.strictObject({ method: z.literal('client_secret_basic') }),
  z
    .strictObject({
      method: z.literal('private_key_jwt'),
      jwks: publicJwksSchema.optional(),
      jwksUri: fetchUrl.optional(),
    })
    .refine(exactlyOneKeySource, exactlyOneKeySourceMessage),
]);

export const createConnectorSchema = z.strictObject({
  name,
  owner: owner.optional(),
  allowedProviders,
  allowedScopes: allowedScopes.optional(),
  delegation,
  auth: connectorAuthSchema,
});
export type CreateConnectorInput = z.output<typeof createConnectorSchema>;

export const updateConnectorSchema = z
  .strictObject({
    name: name.optional(),
    owner: owner.nullable().optional(),
    allowedProviders: allowedProviders.optional(),
    allowedScopes: allowedScopes.optional(),
    delegation: delegation.optional(),
    disabled: z.boolean().optional(),
  })
  .refine((p) => Object.keys(p).length > 0, { message: 'at least one field is required' });
export type UpdateConnectorInput = z.output<typeof updateConnectorSchema>;

export const saveIdentityProviderSchema = z
  .strictObject({
    // Compared byte for byte with a token's `iss`, so kept exactly as given.
    issuer: text({ max: 2048 }).refine(
      (raw) => absoluteUrl(raw) !== null && !/\s/.test(raw),
      'must be an absolute URL',
    ),
    jwksUri: fetchUrl.optional(),
    jwks: publicJwksSchema.optional(),
    audiences: z
      .array(text({ max: 512 }))
      .min(1)
      .max(20),
    userClaim: z
      .string()
      .min(1)
      .max(256)
      .regex(/^[\x21-\x7e]+$/, 'must be a claim name')
      .default('sub'),
    algorithms: z
      .array(z.enum(SIGNING_ALGORITHMS))
      .min(1)
      .max(SIGNING_ALGORITHMS.length)
      .default(['RS256', 'ES256']),
  })
  .refine(exactlyOneKeySource, exactlyOneKeySourceMessage);
export type SaveIdentityProviderInput = z.output<typeof saveIdentityProviderSchema>;
