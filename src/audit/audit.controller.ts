import { Controller, Get, Inject, Param, Query, UseGuards } from '@nestjs/common';
import { ApiBearerAuth, ApiTags } from '@nestjs/swagger';
import type { z } from 'zod';
import { UuidParam, ZodQuery } from '../common/validation.js';
import { auditQuerySchema } from '../connections/connections.dto.js';
import { Access, AdminAuthGuard } from '../identity/admin-auth.guard.js';
import { AuditService } from './audit.service.js';

@ApiTags('audit')
@ApiBearerAuth()
@Controller('v1/tenants/:tenantId/audit')
@UseGuards(AdminAuthGuard)
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
