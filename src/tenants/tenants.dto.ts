import { z } from 'zod';
import { text, textRule, userIdSchema } from '../common/validation.js';

const tenantName = text({ max: 200, trim: true });

/**
 * Text shown to end users on a tenant's behalf: the string rule, and no invisible formatting characters (bidi
 * overrides, zero-width characters), private-use or unassigned code points, which could make the text read
 * differently from what it is.
 */
const cleanText = (max: number) =>
  text({ max, trim: true }).refine(
    (v) => !/[\p{Cf}\p{Co}\p{Cn}]/u.test(v),
    'must not contain invisible formatting, private-use or unassigned characters',
  );

/** The name the hosted pages show for the tenant. */
const displayNameSchema = cleanText(100);

/** The hosted pages' accent colour: `#rrggbb`, stored in lower case. */
const brandColorSchema = z
  .string()
  .regex(/^#[0-9a-fA-F]{6}$/, 'must be a colour written #rrggbb')
  .transform((v) => v.toLowerCase());

export const createTenantSchema = z.strictObject({
  name: tenantName,
});

/** Deleting a tenant: `confirm` is its current name, so that a mistyped id deletes nothing. */
export const deleteTenantQuerySchema = z.strictObject({
  confirm: text({ max: 200 }),
});

/**
 * A return URL a connect flow may redirect to. Absolute https (http only for localhost, for development),
 * no credentials, no fragment, and nothing that browsers or proxies read differently: no backslashes,
 * control characters or whitespace. Matched exactly, byte for byte.
 */
export const returnUrlSchema = text({ max: 2048 }).refine((raw) => {
  // Backslashes, whitespace and control characters (checked by code point: no control characters in a regex).
  if (
    [...raw].some(
      (ch) => ch === '\\' || /\s/.test(ch) || ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f,
    )
  ) {
    return false;
  }
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return false;
  }
  const local = u.hostname === 'localhost' || u.hostname === '127.0.0.1' || u.hostname === '[::1]';
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && local)) return false;
  return !u.username && !u.password && !u.hash && u.href === raw;
}, 'must be an absolute https URL in canonical form, without credentials or fragment (http only for localhost)');

const oidcClientId = z
  .string()
  .min(1)
  .max(512)
  .regex(/^[\x21-\x7e]+$/);
const oidcClientSecret = z
  .string()
  .min(1)
  .max(4096)
  .regex(/^[\x21-\x7e]+$/);
/**
 * A list of the identity provider's user ids: at most 100, no repeats, none with invisible formatting,
 * private-use or unassigned characters (the console shows them: they must read as what they are).
 */
const consoleUsers = z
  .array(
    userIdSchema.refine(
      (v) => !/[\p{Cf}\p{Co}\p{Cn}]/u.test(v),
      'must not contain invisible formatting, private-use or unassigned characters',
    ),
  )
  .max(100)
  .refine((ids) => new Set(ids).size === ids.length, 'must not list a user twice');

/** Console single sign-on: who of the identity provider's users are the tenant's admins and auditors. */
export const consoleLoginSchema = z
  .strictObject({
    identityProvider: text({ max: 100 }),
    clientId: oidcClientId,
    clientSecret: oidcClientSecret,
    admins: consoleUsers.default([]),
    auditors: consoleUsers.default([]),
  })
  .refine((c) => c.admins.length + c.auditors.length > 0, {
    message: 'must list at least one admin or auditor',
    path: ['admins'],
  })
  .refine((c) => !c.admins.some((u) => c.auditors.includes(u)), {
    message: 'a user is either an admin or an auditor, not both',
    path: ['auditors'],
  });

export const updateTenantSchema = z
  .strictObject({
    name: tenantName.optional(),
    allowedReturnUrls: z.array(returnUrlSchema).max(50).optional(),
    /** Signed notifications (connection.created); null removes the webhook. */
    webhookUrl: z
      .url({ protocol: /^https?$/ })
      .max(2048)
      .superRefine(textRule())
      .nullable()
      .optional(),
    /** Sign-in at one of the tenant's identity providers before connecting; null turns it off. */
    connectLogin: z
      .strictObject({
        identityProvider: text({ max: 100 }),
        clientId: oidcClientId,
        clientSecret: oidcClientSecret,
      })
      .nullable()
      .optional(),
    /** Console single sign-on through one of the tenant's identity providers; null turns it off. */
    consoleLogin: consoleLoginSchema.nullable().optional(),
    /**
     * Least privilege: with false (the default), a connector whose allowed scopes are narrower than a user's
     * stored grant gets no token for a provider that cannot mint a narrower one; true hands out the whole grant.
     */
    scopePassThrough: z.boolean().optional(),
    /** The name the hosted connect pages show (else the tenant's name); null removes it. */
    displayName: displayNameSchema.nullable().optional(),
    /** The hosted connect pages' accent colour, `#rrggbb`; null removes it. */
    brandColor: brandColorSchema.nullable().optional(),
    /** Issue a new signing secret (shown once in the response). */
    rotateWebhookSecret: z.literal(true).optional(),
  })
  .refine((p) => Object.keys(p).length > 0, { message: 'at least one field is required' });
export type UpdateTenantInput = z.output<typeof updateTenantSchema>;
