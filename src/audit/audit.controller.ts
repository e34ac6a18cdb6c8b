import { Controller, Get, Inject, Param, Query } from '@nestjs/common';
import { applyDecorators } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import type { z } from 'zod';
import { Access } from '../common/admin-access.js';
import {
  ApiAdminErrors,
  ApiErrors,
  ApiJsonResponse,
  ApiTenantParam,
  EXAMPLE,
  paramExample,
  zodSchema,
} from '../common/openapi.js';
import { UuidParam, ZodQuery } from '../common/validation.js';
import { auditEventExample, auditEventPageSchema, platformEventExample } from './audit.openapi.js';
import { auditQuerySchema } from './audit.dto.js';
import { AuditService } from './audit.service.js';

/** The query of both event lists. */
const ApiAuditQuery = () =>
  applyDecorators(
    ApiQuery({
      name: 'limit',
      required: false,
      description: 'Events per page, 1 to 500 (default 50).',
      schema: { type: 'integer', minimum: 1, maximum: 500, default: 50 },
      ...paramExample(50),
    }),
    ApiQuery({
      name: 'cursor',
      required: false,
      description: 'The previous page’s `nextCursor`, for the next (older) page.',
      schema: { type: 'string', maxLength: 200 },
    }),
    ApiQuery({
      name: 'action',
      required: false,
      description: 'Only events of this action, e.g. `connection.revoked` or `access.denied`.',
      schema: { type: 'string', pattern: '^[a-z_.]+$', maxLength: 100 },
      ...paramExample('token.exchange'),
    }),
    ApiQuery({
      name: 'userId',
      required: false,
      description: 'Only events about this user.',
      schema: { type: 'string', maxLength: 255 },
      ...paramExample(EXAMPLE.userId),
    }),
  );

@ApiTags('audit')
@ApiBearerAuth()
@ApiAdminErrors()
@Controller()
export class AuditController {
  constructor(@Inject(AuditService) private readonly audit: AuditService) {}

  @Get('v1/tenants/:tenantId/audit/events')
  @Access('tenant_audit')
  @ApiOperation({
    summary: 'Read the tenant’s audit trail',
    description:
      'Tenant admin or auditor: audit events, newest first, a page at a time. Every credential release, ' +
      'consent, refresh, revocation, key operation, change and denial is an event; none carries a secret. ' +
      'For evidence that nothing was altered, use the sealed export (`…/audit/export`).',
  })
  @ApiTenantParam()
  @ApiAuditQuery()
  @ApiJsonResponse(200, 'A page of events.', zodSchema(auditEventPageSchema, 'output'), {
    items: [auditEventExample],
    nextCursor: 'eyJpZCI6IjUwMTcifQ',
  })
  @ApiErrors({ 400: ['validation_failed', 'unknown_field', 'malformed_id'], 404: ['not_found'] })
  list(
    @Param('tenantId', UuidParam) tenantId: string,
    @Query(new ZodQuery(auditQuerySchema)) q: z.output<typeof auditQuerySchema>,
  ) {
    return this.audit.list(tenantId, q);
  }

  /** The platform chain's events: denials that name no tenant (unknown admin keys, unknown clients). */
  @Get('v1/audit/platform/events')
  @Access('platform')
  @ApiOperation({
    summary: 'Read the platform audit trail',
    description:
      'Platform admin: the events that name no tenant — denials of unknown or revoked admin keys and of ' +
      'unknown client ids, the bootstrap key — newest first, with the same query as a tenant’s trail.',
  })
  @ApiAuditQuery()
  @ApiJsonResponse(200, 'A page of events.', zodSchema(auditEventPageSchema, 'output'), {
    items: [platformEventExample],
    nextCursor: null,
  })
  @ApiErrors({ 400: ['validation_failed', 'unknown_field'] })
  listPlatform(@Query(new ZodQuery(auditQuerySchema)) q: z.output<typeof auditQuerySchema>) {
    return this.audit.list(null, q);
  }
}
