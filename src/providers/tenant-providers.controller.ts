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
import { UuidParam } from '../common/validation.js';
import {
  customOAuthProviderExample,
  customProviderExample,
  githubExample,
  tenantProviderListSchema,
  tenantProviderViewExample,
  tenantProviderViewSchema,
} from './providers.openapi.js';
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
@ApiAdminErrors()
@ApiTenantParam()
@Controller('v1/tenants/:tenantId/providers')
export class TenantProvidersController {
  constructor(@Inject(TenantProvidersService) private readonly providers: TenantProvidersService) {}

  @Put(':key')
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Add or replace a custom provider',
    description:
      'Tenant admin. A provider only this tenant uses, in the schema of providers/*.yaml (its `key` must be the ' +
      'key in the path, and may not be a catalog key: 409). Every URL passes the SSRF guard. 201 when added, ' +
      '200 when replaced (its `version` goes up). Changing its auth mode while it has live connections is 409. ' +
      'Audited as `provider.saved`.',
  })
  @ApiProviderParam('key')
  @ApiJsonBody(zodSchema(customProviderDefinitionSchema), {
    apiKey: { summary: 'An API-key provider, verified on connect', value: customProviderExample },
    oauth2: { summary: 'An OAuth provider', value: customOAuthProviderExample },
  })
  @ApiJsonResponse(201, 'Added.', zodSchema(tenantProviderViewSchema, 'output'), tenantProviderViewExample)
  @ApiJsonResponse(200, 'Replaced.', zodSchema(tenantProviderViewSchema, 'output'), {
    ...tenantProviderViewExample,
    version: 2,
  })
  @ApiErrors(
    {
      400: [
        'validation_failed',
        'unknown_field',
        'malformed_id',
        'outbound_url_refused',
        'outbound_url_unresolvable',
      ],
      404: ['not_found'],
      409: ['conflict'],
    },
    { 409: 'A catalog key, or a change of auth mode while the provider has live connections.' },
  )
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
  @ApiOperation({
    summary: 'List the tenant’s providers',
    description:
      'Tenant admin or auditor: the catalog and the tenant’s custom providers (`custom: true`, with `version`), ' +
      'in the shape of `GET /v1/providers`.',
  })
  @ApiJsonResponse(200, 'The providers.', zodSchema(tenantProviderListSchema, 'output'), {
    items: [
      { ...githubExample, custom: false },
      {
        ...customProviderExample,
        scopes: [],
        custom: true,
        version: 1,
        updatedAt: tenantProviderViewExample.updatedAt,
      },
    ],
  })
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  async list(@Param('tenantId', UuidParam) tenantId: string) {
    return { items: await this.providers.listProviders(tenantId) };
  }

  @Get(':key')
  @Access('tenant_audit')
  @ApiOperation({
    summary: 'Read a provider’s definition',
    description:
      'Tenant admin or auditor: the whole definition of a catalog or custom provider, with its defaults applied.',
  })
  @ApiProviderParam('key')
  @ApiJsonResponse(
    200,
    'The provider.',
    zodSchema(tenantProviderViewSchema, 'output'),
    tenantProviderViewExample,
  )
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  get(@Param('tenantId', UuidParam) tenantId: string, @Param('key', ProviderKeyParam) key: string) {
    return this.providers.getProvider(tenantId, key);
  }

  @Delete(':key')
  @HttpCode(204)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Delete a custom provider',
    description:
      'Tenant admin. Refused (409) while it has live connections: revoke them first. Its OAuth app and the ' +
      'connectors’ references to it go with it. Audited as `provider.deleted`.',
  })
  @ApiProviderParam('key')
  @ApiNoContent('Deleted.')
  @ApiErrors(
    { 400: ['malformed_id'], 404: ['not_found'], 409: ['conflict'] },
    { 409: 'A catalog provider, or one with live connections.' },
  )
  async remove(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('key', ProviderKeyParam) key: string,
  ): Promise<void> {
    await this.providers.deleteCustomProvider(adminActor(req.principal!), tenantId, key);
  }
}
