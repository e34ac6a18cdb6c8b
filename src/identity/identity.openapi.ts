/**
 * What the admin-key, connector and identity-provider APIs answer, for the OpenAPI document: response schemas
 * and examples.
 */
import { z } from 'zod';
import { EXAMPLE } from '../common/openapi.js';

const isoTime = z.iso.datetime({ offset: true });
const jwks = z.looseObject({ keys: z.array(z.looseObject({ kty: z.string() })) });

export const adminKeyViewSchema = z.looseObject({
  id: z.uuid(),
  name: z.string(),
  role: z.enum(['admin', 'auditor']),
  createdAt: isoTime,
  revokedAt: isoTime.nullable(),
});

export const issuedAdminKeySchema = z.looseObject({
  id: z.uuid(),
  name: z.string(),
  role: z.enum(['admin', 'auditor']),
  key: z.string().regex(/^cus_/).describe('The key itself: shown in this answer only, stored hashed.'),
  createdAt: isoTime,
});

export const adminKeyListSchema = z.array(adminKeyViewSchema);

export const adminKeyExample = {
  id: EXAMPLE.keyId,
  name: 'acme-ops',
  role: 'admin',
  createdAt: EXAMPLE.time,
  revokedAt: null,
};

export const issuedAdminKeyExample = {
  id: EXAMPLE.keyId,
  name: 'acme-ops',
  role: 'admin',
  key: 'cus_0q9VhZl3mC6TtYx2bQ8rN1kD4sF7gJ5wE2aP9uH6yL0',
  createdAt: EXAMPLE.time,
};

export const connectorViewSchema = z.looseObject({
  id: z.uuid(),
  clientId: z.string().regex(/^cus_ci_/),
  clientSecret: z
    .string()
    .regex(/^cus_cs_/)
    .optional()
    .describe('Only in the answer that created the connector or rotated its secret.'),
  name: z.string(),
  owner: z.string().nullable(),
  allowedProviders: z.array(z.string()),
  allowedScopes: z.record(z.string(), z.array(z.string())),
  delegation: z.enum(['user_token', 'trusted']),
  auth: z.looseObject({
    method: z.enum(['client_secret_basic', 'private_key_jwt']),
    jwks: jwks.optional(),
    jwksUri: z.string().optional(),
  }),
  disabled: z.boolean(),
  createdAt: isoTime,
  updatedAt: isoTime,
});

export const connectorListSchema = z.looseObject({ items: z.array(connectorViewSchema) });

export const connectorSecretSchema = z.looseObject({
  clientSecret: z
    .string()
    .regex(/^cus_cs_/)
    .describe('The new secret, shown this once; the old one stops working.'),
});

export const connectorExample = {
  id: EXAMPLE.connectorId,
  clientId: EXAMPLE.clientId,
  name: 'github-mcp',
  owner: 'platform-team',
  allowedProviders: ['github'],
  allowedScopes: { github: ['repo', 'read:user'] },
  delegation: 'user_token',
  auth: { method: 'client_secret_basic' },
  disabled: false,
  createdAt: EXAMPLE.time,
  updatedAt: EXAMPLE.time,
};

export const connectorSecretExample = {
  clientSecret: 'cus_cs_3Jm8QvL2nR7tW0yB5cF9hK1pS4xD6gA8eU2iO7zN3qM',
};

export const identityProviderViewSchema = z.looseObject({
  name: z.string(),
  issuer: z.string(),
  jwksUri: z.string().nullable(),
  jwks: jwks.nullable(),
  audiences: z.array(z.string()),
  userClaim: z.string(),
  algorithms: z.array(z.string()),
  createdAt: isoTime,
  updatedAt: isoTime,
});

export const identityProviderListSchema = z.looseObject({ items: z.array(identityProviderViewSchema) });

export const identityProviderExample = {
  name: 'corp',
  issuer: 'https://login.acme.example',
  jwksUri: 'https://login.acme.example/.well-known/jwks.json',
  jwks: null,
  audiences: ['custos'],
  userClaim: 'sub',
  algorithms: ['RS256', 'ES256'],
  createdAt: EXAMPLE.time,
  updatedAt: EXAMPLE.time,
};
