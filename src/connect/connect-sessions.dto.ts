import { z } from 'zod';
import { PROVIDER_KEY_PATTERN } from '../providers/provider-definition.js';
import { scopeTokenSchema, text, userIdSchema } from '../common/validation.js';

export const createConnectSessionSchema = z.strictObject({
  userId: userIdSchema,
  provider: z.string().regex(PROVIDER_KEY_PATTERN, 'must be a provider key'),
  scopes: z.array(scopeTokenSchema).max(100).optional(),
  returnTo: text({ max: 2048 }).optional(),
});
export type CreateConnectSessionInput = z.output<typeof createConnectSessionSchema>;
