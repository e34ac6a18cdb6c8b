import { z } from 'zod';
import { text, userIdSchema } from '../common/validation.js';

/** The query of GET /v1/tenants/{tenantId}/audit. */
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
