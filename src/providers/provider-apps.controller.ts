/** The tenant's own OAuth app at a provider: set, read (never its secrets), remove. */
import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Put, Req, Res } from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import { CommonException } from '../common/errors.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import { PROVIDER_KEY_PATTERN } from './provider-definition.js';
import { saveProviderAppSchema, type SaveProviderAppInput } from './provider-apps.dto.js';
import { ProviderAppsService } from './provider-apps.service.js';

function providerKey(raw: string): string {
  if (!PROVIDER_KEY_PATTERN.test(raw))
    throw new CommonException('validation_failed', 'Malformed provider key');
  return raw;
}

@ApiTags('providers')
@ApiBearerAuth()
@Controller('v1/tenants/:tenantId/providers/:provider/app')
export class ProviderAppsController {
  constructor(@Inject(ProviderAppsService) private readonly apps: ProviderAppsService) {}

  @Put()
  @Access('tenant_admin')
  @ApiBody({ schema: z.toJSONSchema(saveProviderAppSchema) as object })
  async save(
    @Req() req: AuthedRequest,
    @Res({ passthrough: true }) reply: FastifyReply,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('provider') provider: string,
    @Body(new ZodBody(saveProviderAppSchema)) body: SaveProviderAppInput,
  ) {
    const { app, created } = await this.apps.save(
      adminActor(req.principal!),
      tenantId,
      providerKey(provider),
      body,
    );
    void reply.status(created ? 201 : 200);
    return app;
  }

  @Get()
  @Access('tenant_admin')
  get(@Param('tenantId', UuidParam) tenantId: string, @Param('provider') provider: string) {
    return this.apps.get(tenantId, providerKey(provider));
  }

  @Delete()
  @HttpCode(204)
  @Access('tenant_admin')
  async remove(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('provider') provider: string,
  ): Promise<void> {
    await this.apps.delete(adminActor(req.principal!), tenantId, providerKey(provider));
  }
}
