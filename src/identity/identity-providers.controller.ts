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
import { UuidParam, ZodBody } from '../common/validation.js';
import {
  IDENTITY_PROVIDER_NAME,
  saveIdentityProviderSchema,
  type SaveIdentityProviderInput,
} from './connectors.dto.js';
import { IdentityProvidersService } from './identity-providers.service.js';

class IdentityProviderNameParam implements PipeTransform<string, string> {
  transform(value: string): string {
    if (!IDENTITY_PROVIDER_NAME.test(value))
      throw new CommonException('malformed_id', 'Malformed identity provider name in path');
    return value;
  }
}

@ApiTags('identity-providers')
@ApiBearerAuth()
@Controller('v1/tenants/:tenantId/identity-providers')
export class IdentityProvidersController {
  constructor(
    @Inject(IdentityProvidersService) private readonly identityProviders: IdentityProvidersService,
  ) {}

  @Put(':name')
  @Access('tenant_admin')
  @ApiBody({ schema: z.toJSONSchema(saveIdentityProviderSchema) as object })
  async save(
    @Req() req: AuthedRequest,
    @Res({ passthrough: true }) reply: FastifyReply,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('name', IdentityProviderNameParam) name: string,
    @Body(new ZodBody(saveIdentityProviderSchema)) body: SaveIdentityProviderInput,
  ) {
    const { identityProvider, created } = await this.identityProviders.saveIdentityProvider(
      adminActor(req.principal!),
      tenantId,
      name,
      body,
    );
    void reply.status(created ? 201 : 200);
    return identityProvider;
  }

  @Get()
  @Access('tenant_admin')
  async list(@Param('tenantId', UuidParam) tenantId: string) {
    return { items: await this.identityProviders.listIdentityProviders(tenantId) };
  }

  @Get(':name')
  @Access('tenant_admin')
  get(
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('name', IdentityProviderNameParam) name: string,
  ) {
    return this.identityProviders.getIdentityProvider(tenantId, name);
  }

  @Delete(':name')
  @HttpCode(204)
  @Access('tenant_admin')
  async remove(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('name', IdentityProviderNameParam) name: string,
  ): Promise<void> {
    await this.identityProviders.deleteIdentityProvider(adminActor(req.principal!), tenantId, name);
  }
}
