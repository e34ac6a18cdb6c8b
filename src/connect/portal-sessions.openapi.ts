/** What the portal-sessions API answers, for the OpenAPI document. */
import { z } from 'zod';
import { EXAMPLE } from '../common/openapi.js';

export const createdPortalSessionSchema = z.looseObject({
  id: z.uuid(),
  userId: z.string(),
  url: z
    .string()
    .describe(
      'The one-time link to the user’s “my connections” page (it is the capability: send it to that user only).',
    ),
  expiresAt: z.iso.datetime({ offset: true }).describe('Until when the link can be opened.'),
});

export const createdPortalSessionExample = {
  id: EXAMPLE.sessionId,
  userId: EXAMPLE.userId,
  url: 'http://127.0.0.1:8080/connect/portal/cpt_Zb3kq0Yk7Jx2m9VwQp1sT4uH8nR6cE5aLdFgWi0oXyM',
  expiresAt: EXAMPLE.later,
};
