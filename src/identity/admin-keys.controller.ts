import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Post, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import { z } from 'zod';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import {
  ApiAdminErrors,
  ApiErrors,
  ApiJsonBody,
  ApiJsonResponse,
  ApiNoContent,
  ApiTenantParam,
  ApiUuidParam,
  EXAMPLE,
  zodSchema,
} from '../common/openapi.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import {
  adminKeyExample,
  adminKeyListSchema,
  issuedAdminKeyExample,
  issuedAdminKeySchema,
} from './identity.openapi.js';
import { createAdminKeySchema } from './admin-keys.dto.js';
import { AdminKeysService } from './admin-keys.service.js';

/** A tenant's admin keys: issued once, shown once; listed without the key; revoked at once. */
@ApiTags('tenants')
@ApiBearerAuth()
@ApiAdminErrors()
@ApiTenantParam()
@Controller('v1/tenants')
export class AdminKeysController {
  constructor(@Inject(AdminKeysService) private readonly adminKeys: AdminKeysService) {}

  @Post(':tenantId/admin-keys')
  @HttpCode(201)
  @Access('tenant_or_platform_admin')
  @ApiOperation({
    summary: 'Issue a tenant admin key',
    description:
      'The platform admin, or a tenant admin for its own tenant, issues a key with the role `admin` (manages the ' +
      'tenant) or `auditor` (reads its audit trail only). The `key` is in this answer only; Custos keeps its ' +
      'hash. Audited as `admin_key.created`.',
  })
  @ApiJsonBody(zodSchema(createAdminKeySchema), {
    admin: { summary: 'A tenant admin key', value: { name: 'acme-ops', role: 'admin' } },
    auditor: {
      summary: 'An auditor key (audit trail only)',
      value: { name: 'security-team', role: 'auditor' },
    },
  })
  @ApiJsonResponse(
    201,
    'The key, shown this once.',
    zodSchema(issuedAdminKeySchema, 'output'),
    issuedAdminKeyExample,
  )
  @ApiErrors({ 400: ['validation_failed', 'unknown_field', 'malformed_id'], 404: ['not_found'] })
  createAdminKey(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Body(new ZodBody(createAdminKeySchema)) body: z.output<typeof createAdminKeySchema>,
  ) {
    return this.adminKeys.issue(adminActor(req.principal!), tenantId, body.name, body.role);
  }

  @Get(':tenantId/admin-keys')
  @Access('tenant_or_platform_admin')
  @ApiOperation({
    summary: 'List a tenant’s admin keys',
    description:
      'The platform admin, or a tenant admin for its own tenant: every key issued for the tenant, revoked ' +
      'ones included (`revokedAt`), oldest first. Never the key itself nor its hash.',
  })
  @ApiJsonResponse(200, 'The keys (a JSON array).', zodSchema(adminKeyListSchema, 'output'), [
    adminKeyExample,
  ])
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  listAdminKeys(@Param('tenantId', UuidParam) tenantId: string) {
    return this.adminKeys.list(tenantId);
  }

  @Delete(':tenantId/admin-keys/:keyId')
  @HttpCode(204)
  @Access('tenant_or_platform_admin')
  @ApiOperation({
    summary: 'Revoke a tenant admin key',
    description:
      'The key stops working at once, in every Custos process. It stays listed with `revokedAt`. Audited as ' +
      '`admin_key.revoked`.',
  })
  @ApiUuidParam('keyId', 'The admin key’s id (`id` when it was issued).', EXAMPLE.keyId)
  @ApiNoContent('Revoked.')
  @ApiErrors(
    { 400: ['malformed_id'], 404: ['not_found'] },
    { 404: 'No such key for this tenant, or it is already revoked.' },
  )
  async revokeAdminKey(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('keyId', UuidParam) keyId: string,
  ): Promise<void> {
    await this.adminKeys.revoke(adminActor(req.principal!), tenantId, keyId);
  }
}
