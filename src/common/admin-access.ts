/**
 * What a route declares about who may call it, and what the admin API knows about its caller. Controllers of
 * every domain use these; identity/ enforces them in the one global guard (identity/access.guard.ts), so no
 * domain imports identity/ to protect its routes.
 */
import { SetMetadata } from '@nestjs/common';
import type { FastifyRequest } from 'fastify';

/** An admin key's role: the platform (tenants), a tenant's admin, or a tenant's auditor (read-only audit). */
export type AdminRole = 'platform_admin' | 'admin' | 'auditor';

/** What a route needs: the platform (tenants), a tenant admin, or tenant audit read access. */
export type AccessLevel =
  'platform' | 'tenant_admin' | 'tenant_audit' | 'tenant_or_platform_admin' | 'any_key';
export const ACCESS = 'custos:access';
/** The admin key a route requires. A route without it is open (the token endpoint, probes, hosted pages). */
export const Access = (level: AccessLevel) => SetMetadata(ACCESS, level);

export const ACCEPTS_CONNECTORS = 'custos:accepts-connectors';
/**
 * The route also accepts a connector's client credentials (Basic, or a private_key_jwt assertion as a Bearer
 * token) in place of an admin key; the connector is then limited to its own tenant.
 */
export const AcceptsConnectors = () => SetMetadata(ACCEPTS_CONNECTORS, true);

/** The admin key that authenticated a request. */
export interface AdminPrincipal {
  keyId: string;
  tenantId: string | null;
  role: AdminRole;
  name: string;
}

export interface AuthedRequest extends FastifyRequest {
  principal?: AdminPrincipal;
}

/** The audit actor for an admin key. */
export function adminActor(p: AdminPrincipal): { type: 'admin_key'; id: string } {
  return { type: 'admin_key', id: p.keyId };
}
