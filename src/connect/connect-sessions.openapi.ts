/** What the connect-sessions API answers, for the OpenAPI document: response schemas and examples. */
import { z } from 'zod';
import { EXAMPLE } from '../common/openapi.js';

const isoTime = z.iso.datetime({ offset: true });

export const connectSessionViewSchema = z.looseObject({
  id: z.uuid(),
  userId: z.string(),
  provider: z.string(),
  scopes: z.array(z.string()),
  status: z
    .enum(['pending', 'declined', 'failed', 'completed', 'expired'])
    .describe(
      '`pending` until the user connects (`completed`), declines at the provider (`declined`) or an attempt ' +
        'fails (`failed`, the link still works until it expires); `expired` once `expiresAt` passed.',
    ),
  failureReason: z
    .string()
    .nullable()
    .describe(
      'Why the last attempt did not connect, as a stable code (`access_denied`, `invalid_grant`, …).',
    ),
  createdAt: isoTime,
  expiresAt: isoTime,
});

export const createdConnectSessionSchema = connectSessionViewSchema.extend({
  url: z
    .string()
    .describe('The one-time link to hand to the user (it is the capability: send it to that user only).'),
});

export const connectSessionExample = {
  id: EXAMPLE.sessionId,
  userId: EXAMPLE.userId,
  provider: EXAMPLE.provider,
  scopes: ['repo'],
  status: 'pending',
  failureReason: null,
  createdAt: EXAMPLE.time,
  expiresAt: EXAMPLE.later,
};

export const createdConnectSessionExample = {
  ...connectSessionExample,
  url: 'http://127.0.0.1:8080/connect/cst_Gh_N8gUhHKcxfbfBmHE5idnUD8caFd9GaKXS8msKG84',
};
