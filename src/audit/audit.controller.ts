import { Controller, Get, Inject, Param, Query } from '@nestjs/common';
import { ApiBearerAuth, ApiTags } from '@nestjs/swagger';
import type { z } from 'zod';
import { Access } from '../common/admin-access.js';
import { UuidParam, ZodQuery } from '../common/validation.js';
import { auditQuerySchema } from './audit.dto.js';
import { AuditService } from './audit.service.js';

@ApiTags('audit')
@ApiBearerAuth()
@Controller('v1/tenants/:tenantId/audit')
export class AuditController {
  constructor(@Inject(AuditService) private readonly audit: AuditService) {}

  @Get('events')
  @Access('tenant_audit')
  list(
    @Param('tenantId', UuidParam) tenantId: string,
    @Query(new ZodQuery(auditQuerySchema)) q: z.output<typeof auditQuerySchema>,
  ) {
    return this.audit.list(tenantId, q);
  }
}
