/**
 * What the access guards share: the name a route has in events, the tenant a path names, and the
 * `access.denied` event every refusal writes (admin keys and connectors alike).
 */
import { Inject, Injectable } from '@nestjs/common';
import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CommonException } from '../common/errors.js';
import { LOGGER } from '../common/logger.js';
import { uuidSchema } from '../common/validation.js';

/** `METHOD /path/template`, as denial events name the route. */
export function routeOf(req: FastifyRequest): string {
  return `${req.method} ${req.routeOptions?.url ?? ''}`;
}

/** The `:tenantId` of the path, as given (not lower-cased); 400 `malformed_id` if it is no UUID. */
export function pathTenantId(req: FastifyRequest): string | undefined {
  const tenantId = ((req.params ?? {}) as Record<string, string | undefined>).tenantId;
  if (tenantId !== undefined && !uuidSchema.safeParse(tenantId).success) {
    throw new CommonException('malformed_id', 'Malformed tenant id in path');
  }
  return tenantId;
}

export interface AccessDenial {
  /** The tenant of the refused key or connector; null for the platform or an unknown caller. */
  tenantId: string | null;
  actor: Actor;
  reason: string;
  route: string;
  /** Only for failed authentications of admin keys. */
  sourceAddress?: string;
  /** The other tenant a path named, when it is not the caller's own. */
  targetTenant?: string;
}

@Injectable()
export class AccessDenials {
  constructor(
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  /** Writes the denial's `access.denied` event. The denial stands whether or not its event could be written. */
  async record({ tenantId, actor, reason, route, sourceAddress, targetTenant }: AccessDenial): Promise<void> {
    try {
      await this.audit.record({
        tenantId,
        action: 'access.denied',
        outcome: 'denied',
        actor,
        details: {
          reason,
          route,
          ...(sourceAddress ? { sourceAddress } : {}),
          ...(targetTenant ? { targetTenant } : {}),
        },
      });
    } catch (err) {
      this.log.error({ err: { name: (err as Error).name } }, 'could not write a denial audit event');
    }
  }
}
