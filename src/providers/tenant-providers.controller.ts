/** `/v1/tenants/{tenantId}/providers`: the providers a tenant has, and its custom ones (tenant admins). */
import {
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  Inject,
  Param,
  type PipeTransform,
  Put,
  Req,
  Res,
} from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import { CommonException } from '../common/errors.js';
import { UuidParam } from '../common/validation.js';
import { customProviderDefinitionSchema, PROVIDER_KEY_PATTERN } from './provider-definition.js';
import { TenantProvidersService } from './tenant-providers.service.js';

class ProviderKeyParam implements PipeTransform<string, string> {
  transform(value: string): string {
    if (!PROVIDER_KEY_PATTERN.test(value))
      throw new CommonException('malformed_id', 'Malformed provider key in path');
    return value;
  }
}

/** The body is validated by the service against the provider schema; only its shape is checked here. */
class JsonObjectBody implements PipeTransform<unknown, Record<string, unknown>> {
  transform(value: unknown): Record<string, unknown> {
    if (value === undefined || value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new CommonException('invalid_request', 'A JSON object body is required');
    }
    return value as Record<string, unknown>;
  }
}

@ApiTags('providers')
@ApiBearerAuth()
@Controller('v1/tenants/:tenantId/providers')
export class TenantProvidersController {
  constructor(@Inject(TenantProvidersService) private readonly providers: TenantProvidersService) {}

  @Put(':key')
  @Access('tenant_admin')
  @ApiBody({ schema: z.toJSONSchema(customProviderDefinitionSchema, { io: 'input' }) as object })
  async save(
    @Req() req: AuthedRequest,
    @Res({ passthrough: true }) reply: FastifyReply,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('key', ProviderKeyParam) key: string,
    @Body(JsonObjectBody) body: Record<string, unknown>,
  ) {
    const { provider, created } = await this.providers.saveCustomProvider(
      adminActor(req.principal!),
      tenantId,
      key,
      body,
    );
    void reply.status(created ? 201 : 200);
    return provider;
  }

  @Get()
  @Access('tenant_audit')
  async list(@Param('tenantId', UuidParam) tenantId: string) {
    return { items: await this.providers.listProviders(tenantId) };
  }

  @Get(':key')
  @Access('tenant_audit')
  get(@Param('tenantId', UuidParam) tenantId: string, @Param('key', ProviderKeyParam) key: string) {
    return this.providers.getProvider(tenantId, key);
  }

  @Delete(':key')
  @HttpCode(204)
  @Access('tenant_admin')
  async remove(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('key', ProviderKeyParam) key: string,
  ): Promise<void> {
    await this.providers.deleteCustomProvider(adminActor(req.principal!), tenantId, key);
  }
}
