import { z } from 'zod';
import { userIdSchema } from '../common/validation.js';
import { scopeTokenSchema } from '../connections/connections.dto.js';

export const createConnectSessionSchema = z.strictObject({
  userId: userIdSchema,
  provider: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'must be a provider key'),
  scopes: z.array(scopeTokenSchema).max(100).optional(),
  returnTo: z.string().min(1).max(2048).optional(),
});
export type CreateConnectSessionInput = z.output<typeof createConnectSessionSchema>;
