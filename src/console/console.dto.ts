/**
 * What the console accepts: every query parameter and form field, bounded and typed. Empty fields (a filter
 * form submitted with blanks) count as absent; an unknown or repeated parameter is refused.
 */
import { z } from 'zod';
import { CommonException } from '../common/errors.js';
import { parseWith, userIdSchema, uuidSchema } from '../common/validation.js';
import { PROVIDER_KEY_PATTERN } from '../providers/provider-definition.js';

const providerKey = z.string().regex(PROVIDER_KEY_PATTERN, 'must be a provider key');

/** A day (YYYY-MM-DD) or a minute or second of it (YYYY-MM-DDTHH:MM[:SS][Z]), always read as UTC. */
const DATE = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2}))?Z?)?$/;

export function parseUtc(value: string): Date | null {
  const m = DATE.exec(value);
  if (!m) return null;
  const [y, mo, d, h, mi, s] = [m[1], m[2], m[3], m[4] ?? '0', m[5] ?? '0', m[6] ?? '0'].map(Number);
  if (y < 2000 || y > 2999) return null;
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  // Refuses 2026-02-30 or 25:00 rather than rolling them over into the next month or day.
  const back = [
    date.getUTCFullYear(),
    date.getUTCMonth() + 1,
    date.getUTCDate(),
    date.getUTCHours(),
    date.getUTCMinutes(),
    date.getUTCSeconds(),
  ];
  return back.every((v, i) => v === [y, mo, d, h, mi, s][i]) ? date : null;
}

const utcDate = z
  .string()
  .max(20)
  .refine((v) => parseUtc(v) !== null, 'must be a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM) in UTC');

export const STATUS_VALUES = ['live', 'active', 'expired', 'needs_reauth', 'revoked', 'all'] as const;

export const connectionsQuerySchema = z.strictObject({
  user: userIdSchema.optional(),
  provider: providerKey.optional(),
  status: z.enum(STATUS_VALUES).default('live'),
  /** A cursor this console wrote (base64url). */
  after: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,1400}$/, 'must be a page cursor')
    .optional(),
});

export const auditQuerySchema = z.strictObject({
  action: z
    .string()
    .max(100)
    .regex(/^[a-z_.]+$/, 'must be an action name')
    .optional(),
  outcome: z.enum(['allowed', 'denied', 'failed']).optional(),
  user: userIdSchema.optional(),
  connector: uuidSchema.optional(),
  provider: providerKey.optional(),
  from: utcDate.optional(),
  to: utcDate.optional(),
  before: z
    .string()
    .regex(/^\d{1,19}$/, 'must be an event id')
    .optional(),
});
export type AuditQuery = z.output<typeof auditQuerySchema>;

export const connectorsQuerySchema = z.strictObject({
  done: z.enum(['enabled', 'disabled']).optional(),
  id: uuidSchema.optional(),
});

const count = z
  .string()
  .regex(/^\d{1,9}$/)
  .transform(Number);

export const keyBackendQuerySchema = z.strictObject({
  done: z.enum(['rotated', 'flushed']).optional(),
  epoch: count.optional(),
  rewrapped: count.optional(),
  notified: z.enum(['0', '1']).optional(),
});

export const signInQuerySchema = z.strictObject({
  ended: z.enum(['signed_out', 'expired']).optional(),
});

export const emptyQuerySchema = z.strictObject({});

/** The sign-in page's single sign-on form: the tenant's id. */
export const ssoQuerySchema = z.strictObject({ tenant: z.string().trim().pipe(uuidSchema) });

/** A form token this console wrote (base64url). */
const csrf = z.string().regex(/^[A-Za-z0-9_-]{1,200}$/, 'must be a form token');

/** An admin key is printable ASCII; anything else is refused before it is looked up. */
export const signInFormSchema = z.strictObject({
  csrf,
  key: z.string().regex(/^[\x21-\x7e]{1,512}$/, 'must be an admin key'),
});
export const csrfFormSchema = z.strictObject({ csrf });
export const connectorStateFormSchema = z.strictObject({ csrf, enabled: z.enum(['true', 'false']) });
export const verifyFormSchema = z.strictObject({ csrf, from: utcDate.optional(), to: utcDate.optional() });

/** Query or form fields as strings, blanks dropped; a repeated field (an array) is left for the schema to refuse. */
function fields(raw: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (raw && typeof raw === 'object') {
    for (const [k, v] of Object.entries(raw as Record<string, unknown>)) if (v !== '') out[k] = v;
  }
  return out;
}

/** Validates a query string or form body against the console's schema for it (400 on anything else). */
export function parseFields<T extends z.ZodType>(schema: T, raw: unknown): z.output<T> {
  return parseWith(schema, fields(raw));
}

/** The position after which a page of connections starts: user, provider and id, in one opaque parameter. */
export interface ConnectionsCursor {
  userId: string;
  provider: string;
  id: string;
}

export function encodeConnectionsCursor(c: ConnectionsCursor): string {
  return Buffer.from(JSON.stringify([c.userId, c.provider, c.id]), 'utf8').toString('base64url');
}

export function decodeConnectionsCursor(value: string): ConnectionsCursor {
  const refuse = () => new CommonException('validation_failed', 'Malformed page cursor');
  if (!/^[A-Za-z0-9_-]+$/.test(value)) throw refuse();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
  } catch {
    throw refuse();
  }
  const shape = z.tuple([userIdSchema, providerKey, uuidSchema]).safeParse(parsed);
  if (!shape.success) throw refuse();
  const [userId, provider, id] = shape.data;
  return { userId, provider, id };
}
