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
import { ApiBearerAuth, ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import { CommonException } from '../common/errors.js';
import {
  ApiAdminErrors,
  ApiErrors,
  ApiJsonBody,
  ApiJsonResponse,
  ApiNoContent,
  ApiTenantParam,
  paramExample,
  zodSchema,
} from '../common/openapi.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import {
  identityProviderExample,
  identityProviderListSchema,
  identityProviderViewSchema,
} from './identity.openapi.js';
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

/** The `name` path parameter. */
const ApiNameParam = () =>
  ApiParam({
    name: 'name',
    description: 'The identity provider’s name within the tenant (lower case, digits, `-` and `_`).',
    schema: { type: 'string', pattern: IDENTITY_PROVIDER_NAME.source },
    ...paramExample('corp'),
  });

@ApiTags('identity-providers')
@ApiBearerAuth()
@ApiAdminErrors()
@ApiTenantParam()
@Controller('v1/tenants/:tenantId/identity-providers')
export class IdentityProvidersController {
  constructor(
    @Inject(IdentityProvidersService) private readonly identityProviders: IdentityProvidersService,
  ) {}

  @Put(':name')
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Trust an identity provider (add or replace)',
    description:
      'Tenant admin. Connectors with `user_token` delegation present user tokens from an identity provider the ' +
      'tenant trusts: its `issuer` (compared exactly with `iss`), its keys (`jwksUri`, fetched and cached, or ' +
      '`jwks`), the `audiences` a token must carry, the claim naming the user (`userClaim`, default `sub`) and ' +
      'the signing `algorithms` allowed. 201 when added, 200 when replaced. Audited as `identity_provider.saved`.',
  })
  @ApiNameParam()
  @ApiJsonBody(zodSchema(saveIdentityProviderSchema), {
    jwksUri: {
      summary: 'Keys fetched from the issuer',
      value: {
        issuer: 'https://login.acme.example',
        jwksUri: 'https://login.acme.example/.well-known/jwks.json',
        audiences: ['custos'],
      },
    },
    jwks: {
      summary: 'Keys given inline',
      value: {
        issuer: 'https://login.acme.example',
        jwks: {
          keys: [{ kty: 'OKP', crv: 'Ed25519', kid: 'k1', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo' }],
        },
        audiences: ['custos'],
        userClaim: 'email',
        algorithms: ['EdDSA'],
      },
    },
  })
  @ApiJsonResponse(201, 'Added.', zodSchema(identityProviderViewSchema, 'output'), identityProviderExample)
  @ApiJsonResponse(200, 'Replaced.', zodSchema(identityProviderViewSchema, 'output'), identityProviderExample)
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
    { 409: 'Another of the tenant’s identity providers has this issuer.' },
  )
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
  @ApiOperation({
    summary: 'List trusted identity providers',
    description:
      'Tenant admin: the identity providers whose user tokens the tenant’s connectors may present.',
  })
  @ApiJsonResponse(200, 'The identity providers.', zodSchema(identityProviderListSchema, 'output'), {
    items: [identityProviderExample],
  })
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  async list(@Param('tenantId', UuidParam) tenantId: string) {
    return { items: await this.identityProviders.listIdentityProviders(tenantId) };
  }

  @Get(':name')
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Read a trusted identity provider',
    description:
      'Tenant admin: one identity provider, its issuer, keys, audiences, user claim and algorithms.',
  })
  @ApiNameParam()
  @ApiJsonResponse(
    200,
    'The identity provider.',
    zodSchema(identityProviderViewSchema, 'output'),
    identityProviderExample,
  )
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  get(
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('name', IdentityProviderNameParam) name: string,
  ) {
    return this.identityProviders.getIdentityProvider(tenantId, name);
  }

  @Delete(':name')
  @HttpCode(204)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Stop trusting an identity provider',
    description:
      'Tenant admin. User tokens from its issuer are refused from now on. Audited as ' +
      '`identity_provider.deleted`.',
  })
  @ApiNameParam()
  @ApiNoContent('Removed.')
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  async remove(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('name', IdentityProviderNameParam) name: string,
  ): Promise<void> {
    await this.identityProviders.deleteIdentityProvider(adminActor(req.principal!), tenantId, name);
  }
}
