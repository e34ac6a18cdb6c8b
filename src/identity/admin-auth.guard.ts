/**
 * Authenticates admin API keys and enforces who may touch what. A key for tenant A gets 404 for anything
 * of tenant B (existence is not revealed); a key without the role gets 403. Every denial is audited.
 * Failed authentications are throttled per source address and per presented key (see DenialThrottle):
 * over the limit, 429 `rate_limited` with Retry-After, before any key lookup.
 */
import { type CanActivate, type ExecutionContext, Inject, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { Logger } from 'pino';
import { AuditService } from '../audit/audit.service.js';
import {
  ACCESS,
  type AccessLevel,
  type AdminPrincipal,
  type AdminRole,
  type AuthedRequest,
} from '../common/admin-access.js';
import { DenialThrottle } from '../audit/denial-throttle.js';
import { CustosException, RateLimitedException } from '../common/errors.js';
import { LOGGER } from '../common/logger.js';
import { addressKey, adminKeyKey, sourceAddress, type LimitKey } from '../common/rate-limit.js';
import { uuidSchema } from '../common/validation.js';
import { AdminKeysService } from './admin-keys.service.js';

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
export class AdminAuthGuard implements CanActivate {
  constructor(
    @Inject(Reflector) private readonly reflector: Reflector,
    @Inject(AdminKeysService) private readonly keys: AdminKeysService,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(DenialThrottle) private readonly throttle: DenialThrottle,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const level = this.reflector.getAllAndOverride<AccessLevel | undefined>(ACCESS, [
      context.getHandler(),
      context.getClass(),
    ]);
    if (!level) return true;
    const req = context.switchToHttp().getRequest<AuthedRequest>();
    const route = `${req.method} ${req.routeOptions?.url ?? ''}`;
    const header = req.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer ([\x21-\x7e]+)$/i.exec(header) : null;
    const address = addressKey(req.ip);
    // From memory only: a throttled request costs no key lookup.
    const checked: LimitKey[] =
      m && this.throttle.credentialsMayBeBlocked() ? [adminKeyKey(m[1]), address] : [address];
    const block = this.throttle.gate(checked, 'admin');
    if (block) {
      throw new RateLimitedException('Too many failed authentications; retry later', block.retryAfterSeconds);
    }
    const principal = m ? await this.keys.authenticate(m[1]) : null;
    if (!principal) {
      const reason = m ? 'invalid_key' : 'missing_key';
      const verdict = await this.throttle.failed(m ? [adminKeyKey(m[1]), address] : [address], {
        endpoint: 'admin',
        tenantId: null,
        actor: { type: 'admin_key', id: null },
        reason,
      });
      if (verdict === 'audit') await this.deny(null, null, route, reason, sourceAddress(req.ip)?.address);
      throw new CustosException(
        'unauthenticated',
        'A valid admin API key is required (Authorization: Bearer <key>)',
      );
    }
    req.principal = principal;

    const params = (req.params ?? {}) as Record<string, string | undefined>;
    const tenantId = params.tenantId;
    if (tenantId !== undefined && !uuidSchema.safeParse(tenantId).success) {
      throw new CustosException('malformed_id', 'Malformed tenant id in path');
    }
    // Platform keys manage tenants, never a tenant's credentials or audit.
    if (
      tenantId !== undefined &&
      principal.role !== 'platform_admin' &&
      principal.tenantId !== tenantId.toLowerCase()
    ) {
      await this.deny(principal, tenantId, route, 'other_tenant');
      throw new CustosException('not_found', 'Not found');
    }
    if (!allowedRoles(level).includes(principal.role)) {
      await this.deny(principal, tenantId ?? null, route, 'role');
      throw new CustosException('forbidden', `This key's role (${principal.role}) may not do this`);
    }
    return true;
  }

  private async deny(
    p: AdminPrincipal | null,
    targetTenant: string | null,
    route: string,
    reason: string,
    address?: string,
  ) {
    try {
      await this.audit.record({
        tenantId: p?.tenantId ?? null,
        action: 'access.denied',
        outcome: 'denied',
        actor: { type: 'admin_key', id: p?.keyId ?? null },
        details: {
          reason,
          route,
          ...(address ? { sourceAddress: address } : {}),
          ...(targetTenant && p?.tenantId !== targetTenant ? { targetTenant } : {}),
        },
      });
    } catch (err) {
      // The denial stands whether or not its event could be written.
      this.log.error({ err: { name: (err as Error).name } }, 'could not write a denial audit event');
    }
  }
}
