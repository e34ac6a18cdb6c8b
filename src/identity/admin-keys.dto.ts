import { z } from 'zod';
import { text } from '../common/validation.js';

/** An admin key a tenant admin (or the platform) issues for a tenant: never a platform key. */
export const createAdminKeySchema = z.strictObject({
  name: text({ max: 200, trim: true }),
  role: z.enum(['admin', 'auditor']),
});
