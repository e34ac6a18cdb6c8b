import { Body, Controller, Get, HttpCode, Inject, Param, Patch, Post, Req, UseGuards } from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiTags } from '@nestjs/swagger';
import { z } from 'zod';
import { UuidParam, ZodBody } from '../common/validation.js';
import { Access, AdminAuthGuard, type AuthedRequest } from '../identity/admin-auth.guard.js';
import { AdminKeysService, adminActor } from '../identity/admin-keys.service.js';
import {
  createAdminKeySchema,
  createTenantSchema,
  updateTenantSchema,
  type UpdateTenantInput,
} from './tenants.dto.js';
import { TenantsService } from './tenants.service.js';

@ApiTags('tenants')
@ApiBearerAuth()
@Controller('v1/tenants')
@UseGuards(AdminAuthGuard)
export class TenantsController {
  constructor(
    @Inject(TenantsService) private readonly tenants: TenantsService,
    @Inject(AdminKeysService) private readonly adminKeys: AdminKeysService,
  ) {}

  @Post()
  @HttpCode(201)
  @Access('platform')
  @ApiBody({ schema: z.toJSONSchema(createTenantSchema) as object })
  create(
    @Req() req: AuthedRequest,
    @Body(new ZodBody(createTenantSchema)) body: z.output<typeof createTenantSchema>,
  ) {
    return this.tenants.createTenant(adminActor(req.principal!), body.name);
  }

  @Get()
  @Access('platform')
  async list() {
    return { items: await this.tenants.listTenants() };
  }

  @Get(':tenantId')
  @Access('tenant_or_platform_admin')
  get(@Param('tenantId', UuidParam) tenantId: string) {
    return this.tenants.getTenant(tenantId);
  }

  @Patch(':tenantId')
  @Access('tenant_admin')
  @ApiBody({ schema: z.toJSONSchema(updateTenantSchema) as object })
  update(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Body(new ZodBody(updateTenantSchema)) body: UpdateTenantInput,
  ) {
    return this.tenants.updateTenant(adminActor(req.principal!), tenantId, body);
  }

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
}
