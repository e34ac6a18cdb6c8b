/** The portal-sessions API's input. */
import { z } from 'zod';
import { text, userIdSchema } from '../common/validation.js';

export const createPortalSessionSchema = z.strictObject({
  userId: userIdSchema,
  returnTo: text({ max: 2048 }).optional(),
});
export type CreatePortalSessionInput = z.output<typeof createPortalSessionSchema>;
