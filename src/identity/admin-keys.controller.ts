import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Post, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiTags } from '@nestjs/swagger';
import { z } from 'zod';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import { createAdminKeySchema } from './admin-keys.dto.js';
import { AdminKeysService } from './admin-keys.service.js';

/** A tenant's admin keys: issued once, shown once; listed without the key; revoked at once. */
@ApiTags('tenants')
@ApiBearerAuth()
@Controller('v1/tenants')
export class AdminKeysController {
  constructor(@Inject(AdminKeysService) private readonly adminKeys: AdminKeysService) {}

  @Post(':tenantId/admin-keys')
  @HttpCode(201)
  @Access('tenant_or_platform_admin')
  @ApiBody({ schema: z.toJSONSchema(createAdminKeySchema) as object })
  createAdminKey(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Body(new ZodBody(createAdminKeySchema)) body: z.output<typeof createAdminKeySchema>,
  ) {
    return this.adminKeys.issue(adminActor(req.principal!), tenantId, body.name, body.role);
  }

  @Get(':tenantId/admin-keys')
  @Access('tenant_or_platform_admin')
  listAdminKeys(@Param('tenantId', UuidParam) tenantId: string) {
    return this.adminKeys.list(tenantId);
  }

  @Delete(':tenantId/admin-keys/:keyId')
  @HttpCode(204)
  @Access('tenant_or_platform_admin')
  async revokeAdminKey(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('keyId', UuidParam) keyId: string,
  ): Promise<void> {
    await this.adminKeys.revoke(adminActor(req.principal!), tenantId, keyId);
  }
}
