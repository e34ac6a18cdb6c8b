/**
 * What the hosted pages share: the error page a step can end with, `__Host-` cookies, and constant-time
 * checks of a cookie against the hash stored for it (state cookies, sign-in cookies).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { PageAction, PageBranding } from './connect-pages.js';

/**
 * A step of the hosted flow ends with this page (status, title, what happened and what to do next, the ways
 * forward, and the tenant's branding when the session is known), never with a stack.
 */
export class FlowPageError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    message: string,
    readonly more: { actions?: PageAction[]; brand?: PageBranding } = {},
  ) {
    super(message);
  }
}

export const sha256 = (v: string): Buffer => createHash('sha256').update(v).digest();

/** Whether `value` (a cookie) hashes to `stored`, compared in constant time. */
export function sameHash(stored: Buffer | null, value: string | undefined): boolean {
  if (!stored || value === undefined || value.length > 200) return false;
  const b = sha256(value);
  return stored.length === b.length && timingSafeEqual(stored, b);
}

/** A `__Host-` cookie: Secure, HttpOnly, host-only, whole site. */
export function cookie(
  name: string,
  value: string,
  maxAgeSeconds: number,
  sameSite: 'Lax' | 'Strict',
): string {
  return `${name}=${value}; Path=/; Secure; HttpOnly; SameSite=${sameSite}; Max-Age=${maxAgeSeconds}`;
}
