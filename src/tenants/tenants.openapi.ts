/** What the tenants API answers, for the OpenAPI document: response schemas and examples. */
import { z } from 'zod';
import { EXAMPLE } from '../common/openapi.js';

const isoTime = z.iso.datetime({ offset: true });

export const logoViewSchema = z.looseObject({
  url: z.string().describe('Where Custos serves it, without a key (the hosted pages show it).'),
  contentType: z.enum(['image/png', 'image/jpeg']),
  bytes: z.number().int(),
  width: z.number().int(),
  height: z.number().int(),
  sha256: z.string(),
  updatedAt: isoTime,
});

export const tenantViewSchema = z.looseObject({
  id: z.uuid(),
  name: z.string(),
  status: z
    .enum(['active', 'deleting'])
    .describe('`deleting` from the deletion request until it is shredded.'),
  deletionRequestedAt: isoTime.nullable(),
  keyBackend: z.looseObject({ type: z.enum(['managed', 'aws-kms', 'vault-transit']) }),
  allowedReturnUrls: z.array(z.string()).describe('The exact URLs a connect flow may return to.'),
  webhookUrl: z.string().nullable(),
  connectLogin: z
    .looseObject({ identityProvider: z.string(), clientId: z.string() })
    .nullable()
    .describe('Sign-in at an identity provider before connecting (never its client secret).'),
  consoleLogin: z
    .looseObject({
      identityProvider: z.string(),
      clientId: z.string(),
      admins: z.array(z.string()),
      auditors: z.array(z.string()),
    })
    .nullable()
    .optional()
    .describe('Console single sign-on through an identity provider (never its client secret).'),
  scopePassThrough: z.boolean(),
  displayName: z.string().nullable().optional(),
  brandColor: z.string().nullable().optional(),
  logo: logoViewSchema.nullable().optional(),
  createdAt: isoTime,
});

export const updatedTenantSchema = tenantViewSchema.extend({
  webhookSecret: z
    .string()
    .optional()
    .describe('The webhook signing secret: only in the answer that set the webhook or rotated the secret.'),
});

export const tenantListSchema = z.looseObject({ items: z.array(tenantViewSchema) });

export const tenantDeletionSchema = z.looseObject({
  id: z.uuid(),
  name: z.string(),
  status: z.enum(['active', 'deleting']),
  deletionRequestedAt: isoTime.nullable(),
  pendingRevocations: z.number().int().describe('Tokens still to be revoked at their providers.'),
  shredBy: isoTime.nullable().describe('When the tenant is shredded at the latest.'),
});

export const tenantExample = {
  id: EXAMPLE.tenantId,
  name: 'Acme',
  status: 'active',
  deletionRequestedAt: null,
  keyBackend: { type: 'managed' },
  allowedReturnUrls: ['https://app.acme.example/connected'],
  webhookUrl: null,
  connectLogin: null,
  consoleLogin: null,
  scopePassThrough: false,
  displayName: null,
  brandColor: null,
  logo: null,
  createdAt: EXAMPLE.time,
};

export const tenantDeletionExample = {
  id: EXAMPLE.tenantId,
  name: 'Acme',
  status: 'deleting',
  deletionRequestedAt: EXAMPLE.time,
  pendingRevocations: 2,
  shredBy: '2026-12-03T11:15:30.000Z',
};

export const logoExample = {
  url: `http://127.0.0.1:8080/connect/branding/${EXAMPLE.tenantId}/logo`,
  contentType: 'image/png',
  bytes: 4182,
  width: 128,
  height: 128,
  sha256: '9f2c4e1a7b3d5f6e8a0c2e4f6a8b0d2e4f6a8c0e2a4c6e8f0b2d4f6a8c0e2a4c',
  updatedAt: EXAMPLE.time,
};
