/** The tenant's own OAuth app at a provider: set, read (never its secrets), remove. */
import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Put, Req, Res } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import { CommonException } from '../common/errors.js';
import {
  ApiAdminErrors,
  ApiErrors,
  ApiJsonBody,
  ApiJsonResponse,
  ApiNoContent,
  ApiProviderParam,
  ApiTenantParam,
  zodSchema,
} from '../common/openapi.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import { providerAppExample, providerAppViewSchema } from './providers.openapi.js';
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
@ApiAdminErrors()
@ApiTenantParam()
@ApiProviderParam()
@Controller('v1/tenants/:tenantId/providers/:provider/app')
export class ProviderAppsController {
  constructor(@Inject(ProviderAppsService) private readonly apps: ProviderAppsService) {}

  @Put()
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Set the tenant’s OAuth app at a provider',
    description:
      'Tenant admin. The client the tenant registered at the provider: `clientId` and `clientSecret` (or ' +
      '`privateKeyJwk` for providers that authenticate clients with private_key_jwt), and optionally the ' +
      '`scopes` asked for by default. Register `{CUSTOS_PUBLIC_URL}/connect/callback/{provider}` as its ' +
      'redirect URI. The secrets are sealed and never returned. 201 when added, 200 when replaced. Audited as ' +
      '`provider_app.saved`.',
  })
  @ApiJsonBody(zodSchema(saveProviderAppSchema), {
    secret: {
      summary: 'A client id and secret',
      value: {
        clientId: 'Iv1.0123456789abcdef',
        clientSecret: 'github-client-secret',
        scopes: ['repo', 'read:user'],
      },
    },
  })
  @ApiJsonResponse(201, 'Added.', zodSchema(providerAppViewSchema, 'output'), providerAppExample)
  @ApiJsonResponse(200, 'Replaced.', zodSchema(providerAppViewSchema, 'output'), providerAppExample)
  @ApiErrors({
    400: ['validation_failed', 'unknown_field', 'malformed_id'],
    404: ['not_found', 'unknown_provider'],
  })
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
  @ApiOperation({
    summary: 'Read the tenant’s OAuth app at a provider',
    description:
      'Tenant admin: its client id and scopes, and whether it has a secret or private key (never them).',
  })
  @ApiJsonResponse(200, 'The app.', zodSchema(providerAppViewSchema, 'output'), providerAppExample)
  @ApiErrors({ 400: ['malformed_id', 'validation_failed'], 404: ['not_found'] })
  get(@Param('tenantId', UuidParam) tenantId: string, @Param('provider') provider: string) {
    return this.apps.get(tenantId, providerKey(provider));
  }

  @Delete()
  @HttpCode(204)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Remove the tenant’s OAuth app at a provider',
    description:
      'Tenant admin. Its secrets are erased. Users can no longer connect this provider, and existing ' +
      'connections can no longer be refreshed, until an app is set again. Audited as `provider_app.deleted`.',
  })
  @ApiNoContent('Removed.')
  @ApiErrors({ 400: ['malformed_id', 'validation_failed'], 404: ['not_found'] })
  async remove(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('provider') provider: string,
  ): Promise<void> {
    await this.apps.delete(adminActor(req.principal!), tenantId, providerKey(provider));
  }
}
