/** The tenant's key backend: choose it (BYOK), read its status, rotate, flush cached keys, resume or cancel a migration. */
import { Body, Controller, Get, HttpCode, Inject, Param, Post, Put, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiTags } from '@nestjs/swagger';
import { z } from 'zod';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import { keyBackendInputSchema, type KeyBackendInput } from './key-backend.dto.js';
import { KeyBackendService } from './key-backend.service.js';

@ApiTags('key backend')
@ApiBearerAuth()
@Controller('v1/tenants/:tenantId/key-backend')
export class KeyBackendController {
  constructor(@Inject(KeyBackendService) private readonly keys: KeyBackendService) {}

  @Get()
  @Access('tenant_audit')
  get(@Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.view(tenantId);
  }

  @Put()
  @Access('tenant_admin')
  @ApiBody({ schema: z.toJSONSchema(keyBackendInputSchema, { io: 'input' }) as object })
  put(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Body(new ZodBody(keyBackendInputSchema)) body: KeyBackendInput,
  ) {
    return this.keys.configure(adminActor(req.principal!), tenantId, body);
  }

  @Post('rotate')
  @HttpCode(200)
  @Access('tenant_admin')
  rotate(@Req() req: AuthedRequest, @Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.rotateTenantKey(adminActor(req.principal!), tenantId);
  }

  @Post('flush')
  @HttpCode(200)
  @Access('tenant_admin')
  flush(@Req() req: AuthedRequest, @Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.flush(adminActor(req.principal!), tenantId);
  }

  /** Retries a data-key migration now (after fixing what made it fail). */
  @Post('migration/resume')
  @HttpCode(200)
  @Access('tenant_admin')
  resumeMigration(@Req() req: AuthedRequest, @Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.resumeMigration(adminActor(req.principal!), tenantId);
  }

  /** Gives up on a data-key migration: back to the configuration the unmoved keys are wrapped by. */
  @Post('migration/cancel')
  @HttpCode(200)
  @Access('tenant_admin')
  cancelMigration(@Req() req: AuthedRequest, @Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.cancelMigration(adminActor(req.principal!), tenantId);
  }
}
