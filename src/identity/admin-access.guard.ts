/**
 * What an authenticated admin key may touch, from the route's @Access: a key for tenant A gets 404 for
 * anything of tenant B (existence is not revealed); a key without the role gets 403. Every denial is
 * audited. Runs after AdminKeyAuthGuard, which put the key's principal on the request.
 */
import { type CanActivate, type ExecutionContext, Inject, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import {
  ACCESS,
  adminActor,
  type AccessLevel,
  type AdminRole,
  type AuthedRequest,
} from '../common/admin-access.js';
import { CommonException } from '../common/errors.js';
import { AccessDenials, pathTenantId, routeOf } from './access-denials.js';

function allowedRoles(level: AccessLevel): AdminRole[] {
  switch (level) {
    case 'platform':
      return ['platform_admin'];
    case 'tenant_admin':
      return ['admin'];
    case 'tenant_audit':
      return ['admin', 'auditor'];
    case 'tenant_or_platform_admin':
      return ['admin', 'platform_admin'];
    case 'any_key':
      return ['admin', 'auditor', 'platform_admin'];
  }
}

@Injectable()
export class AdminAccessGuard implements CanActivate {
  constructor(
    @Inject(Reflector) private readonly reflector: Reflector,
    @Inject(AccessDenials) private readonly denials: AccessDenials,
  ) {}

  canActivate(context: ExecutionContext): Promise<boolean> {
    const level = this.reflector.getAllAndOverride<AccessLevel | undefined>(ACCESS, [
      context.getHandler(),
      context.getClass(),
    ]);
    return level ? this.authorize(context, level) : Promise.resolve(true);
  }

  /** Checks the request's admin key against `level` (AccessGuard has read it from the route already). */
  async authorize(context: ExecutionContext, level: AccessLevel): Promise<boolean> {
    const req = context.switchToHttp().getRequest<AuthedRequest>();
    const principal = req.principal;
    // Only reachable by wiring this guard without AdminKeyAuthGuard in front of it: refuse.
    if (!principal) throw new Error('AdminAccessGuard needs an authenticated admin key');

    const tenantId = pathTenantId(req);
    const deny = (reason: string) =>
      this.denials.record({
        tenantId: principal.tenantId,
        actor: adminActor(principal),
        reason,
        route: routeOf(req),
        targetTenant: tenantId !== undefined && principal.tenantId !== tenantId ? tenantId : undefined,
      });
    // Platform keys manage tenants, never a tenant's credentials or audit.
    if (
      tenantId !== undefined &&
      principal.role !== 'platform_admin' &&
      principal.tenantId !== tenantId.toLowerCase()
    ) {
      await deny('other_tenant');
      throw new CommonException('not_found', 'Not found');
    }
    if (!allowedRoles(level).includes(principal.role)) {
      await deny('role');
      throw new CommonException('forbidden', `This key's role (${principal.role}) may not do this`);
    }
    return true;
  }
}
