import {
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  Inject,
  Param,
  Patch,
  Post,
  Query,
  Req,
} from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiTags } from '@nestjs/swagger';
import { z } from 'zod';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import { UuidParam, ZodBody, ZodQuery } from '../common/validation.js';
import {
  createTenantSchema,
  deleteTenantQuerySchema,
  updateTenantSchema,
  type UpdateTenantInput,
} from './tenants.dto.js';
import { TenantsService } from './tenants.service.js';

@ApiTags('tenants')
@ApiBearerAuth()
@Controller('v1/tenants')
export class TenantsController {
  constructor(@Inject(TenantsService) private readonly tenants: TenantsService) {}

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

  /** 202: the tenant is `deleting`; a worker job crypto-shreds it once its tokens are revoked at providers. */
  @Delete(':tenantId')
  @HttpCode(202)
  @Access('platform')
  delete(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Query(new ZodQuery(deleteTenantQuerySchema)) query: z.output<typeof deleteTenantQuerySchema>,
  ) {
    return this.tenants.deleteTenant(adminActor(req.principal!), tenantId, { confirmName: query.confirm });
  }
}
