import { Controller, Get, Inject, Param, Query } from '@nestjs/common';
import { ApiBearerAuth, ApiTags } from '@nestjs/swagger';
import type { z } from 'zod';
import { Access } from '../common/admin-access.js';
import { UuidParam, ZodQuery } from '../common/validation.js';
import { auditQuerySchema } from './audit.dto.js';
import { AuditService } from './audit.service.js';

@ApiTags('audit')
@ApiBearerAuth()
@Controller()
export class AuditController {
  constructor(@Inject(AuditService) private readonly audit: AuditService) {}

  @Get('v1/tenants/:tenantId/audit/events')
  @Access('tenant_audit')
  list(
    @Param('tenantId', UuidParam) tenantId: string,
    @Query(new ZodQuery(auditQuerySchema)) q: z.output<typeof auditQuerySchema>,
  ) {
    return this.audit.list(tenantId, q);
  }

  /** The platform chain's events: denials that name no tenant (unknown admin keys, unknown clients). */
  @Get('v1/audit/platform/events')
  @Access('platform')
  listPlatform(@Query(new ZodQuery(auditQuerySchema)) q: z.output<typeof auditQuerySchema>) {
    return this.audit.list(null, q);
  }
}
