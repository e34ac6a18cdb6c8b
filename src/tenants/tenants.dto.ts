import { z } from 'zod';

export const createTenantSchema = z.strictObject({
  name: z.string().trim().min(1).max(200),
});

export const createAdminKeySchema = z.strictObject({
  name: z.string().trim().min(1).max(200),
  role: z.enum(['admin', 'auditor']),
});
