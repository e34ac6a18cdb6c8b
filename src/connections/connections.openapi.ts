/** What the connections API answers, for the OpenAPI document: response schemas and examples. */
import { z } from 'zod';
import { EXAMPLE } from '../common/openapi.js';

const isoTime = z.iso.datetime({ offset: true });

/** A connection as every answer shows it: metadata only, never a secret. */
export const connectionViewSchema = z.looseObject({
  id: z.uuid(),
  tenantId: z.uuid(),
  userId: z.string(),
  provider: z.string(),
  type: z.enum(['api_key', 'oauth2']),
  status: z
    .enum(['active', 'expired', 'needs_reauth', 'revoked'])
    .describe(
      '`needs_reauth`: the provider refused the refresh token (the user must connect again); `expired`: an ' +
        'access token past its expiry with no refresh token.',
    ),
  scopes: z.array(z.string()),
  expiresAt: isoTime.nullable().describe('When the access token expires (null: it does not, or unknown).'),
  createdAt: isoTime,
  updatedAt: isoTime,
});

export const connectionListSchema = z.looseObject({ items: z.array(connectionViewSchema) });

export const connectionExample = {
  id: EXAMPLE.connectionId,
  tenantId: EXAMPLE.tenantId,
  userId: EXAMPLE.userId,
  provider: EXAMPLE.provider,
  type: 'oauth2',
  status: 'active',
  scopes: ['repo', 'read:user'],
  expiresAt: '2027-01-01T00:00:00.000Z',
  createdAt: EXAMPLE.time,
  updatedAt: EXAMPLE.time,
};
