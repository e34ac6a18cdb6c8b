import { z } from 'zod';
import { scopeTokenSchema, text } from '../common/validation.js';

/** A credential: one line of well-formed text (it is sealed, but must round-trip through UTF-8 intact). */
const secret = (max: number) => text({ max });

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
