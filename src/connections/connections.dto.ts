import { z } from 'zod';
import { text, userIdSchema } from '../common/validation.js';

/** A credential: one line of well-formed text (it is sealed, but must round-trip through UTF-8 intact). */
const secret = (max: number) => text({ max });

/** One OAuth scope token (RFC 6749 section 3.3). */
export const scopeTokenSchema = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'must be a valid OAuth scope token');

export const importCredentialSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('api_key'),
    apiKey: secret(8192),
  }),
  z.strictObject({
    type: z.literal('oauth2'),
    accessToken: secret(16384),
    refreshToken: secret(16384).optional(),
    expiresAt: z.iso.datetime({ offset: true }).optional(),
    scopes: z.array(scopeTokenSchema).max(200).optional(),
  }),
]);
export type ImportCredentialInput = z.output<typeof importCredentialSchema>;

export const listConnectionsQuerySchema = z.strictObject({
  includeRevoked: z.enum(['true', 'false']).optional(),
});

export const auditQuerySchema = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: text({ max: 200 }).optional(),
  action: z
    .string()
    .min(1)
    .max(100)
    .regex(/^[a-z_.]+$/)
    .optional(),
  userId: userIdSchema.optional(),
});
