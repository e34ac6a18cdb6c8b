/**
 * What the hosted pages hand on: the tenant's branding for a session's pages, and where the browser goes back
 * to — the session's `returnTo` with the session's id and outcome appended.
 */
import { logoPath } from '../tenants/tenants.service.js';
import type { PageAction, PageBranding } from './connect-pages.js';
import type { TenantBrandColumns } from './connect-sessions.repository.js';

/**
 * What `returnTo` learns (`custos_outcome`): connected; declined at the provider; failed (the last attempt,
 * `failureReason` on the session says why); expired (only from the "return" link of an expired link's page).
 */
export type ReturnOutcome = 'connected' | 'declined' | 'failed' | 'expired';

/**
 * `returnTo` with `custos_session=<id>&custos_outcome=<outcome>` appended to its query, whatever it already
 * has: the URL is otherwise kept byte for byte, as the tenant registered it (it has no fragment).
 */
export function withOutcome(returnTo: string, sessionId: string, outcome: ReturnOutcome): string {
  const params = `custos_session=${encodeURIComponent(sessionId)}&custos_outcome=${outcome}`;
  if (!returnTo.includes('?')) return `${returnTo}?${params}`;
  return returnTo.endsWith('?') || returnTo.endsWith('&') ? returnTo + params : `${returnTo}&${params}`;
}

/** The branding of a session's pages: its tenant's display name (else its name), colour and logo. */
export function pageBranding(t: TenantBrandColumns, publicUrl: string): PageBranding {
  const logo =
    t.tenant_logo_sha256 && t.tenant_logo_width && t.tenant_logo_height
      ? {
          // The version makes a new logo show at once; the address without it stays the same.
          url: `${publicUrl}${logoPath(t.tenant_id)}?v=${t.tenant_logo_sha256.slice(0, 16)}`,
          width: t.tenant_logo_width,
          height: t.tenant_logo_height,
        }
      : null;
  return { name: t.tenant_display_name ?? t.tenant_name, color: t.tenant_brand_color, logo };
}

/** A "return to the app" link, when the session has a `returnTo`. */
export function returnAction(
  s: { id: string; return_to: string | null },
  brand: PageBranding,
  outcome: ReturnOutcome,
): PageAction[] {
  return s.return_to
    ? [{ href: withOutcome(s.return_to, s.id, outcome), label: `Return to ${brand.name}` }]
    : [];
}
