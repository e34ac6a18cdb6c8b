import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Put, Query, Req, Res } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiParam, ApiQuery, ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { z } from 'zod';
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
  ApiUuidParam,
  EXAMPLE,
  paramExample,
  zodSchema,
} from '../common/openapi.js';
import { UserIdParam, UuidParam, ZodBody, ZodQuery } from '../common/validation.js';
import { connectionExample, connectionListSchema, connectionViewSchema } from './connections.openapi.js';
import {
  importCredentialSchema,
  listConnectionsQuerySchema,
  type ImportCredentialInput,
} from './connections.dto.js';
import { ConnectionsService } from './connections.service.js';
import { ProviderRevocationService } from './provider-revocation.service.js';
import { PROVIDER_KEY_PATTERN } from '../providers/provider-definition.js';

/** The `userId` path parameter. */
const ApiUserParam = () =>
  ApiParam({
    name: 'userId',
    description:
      'The user’s id in the tenant (as the identity provider names them, e.g. `sub` or an email), ' +
      'percent-encoded: up to 255 characters.',
    schema: { type: 'string', minLength: 1, maxLength: 255 },
    ...paramExample(EXAMPLE.userId),
  });

@ApiTags('connections')
@ApiBearerAuth()
@ApiAdminErrors()
@ApiTenantParam()
@Controller('v1/tenants/:tenantId')
export class ConnectionsController {
  constructor(
    @Inject(ConnectionsService) private readonly connections: ConnectionsService,
    @Inject(ProviderRevocationService) private readonly revocations: ProviderRevocationService,
  ) {}

  @Put('users/:userId/connections/:provider')
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Store a user’s credential for a provider',
    description:
      'Tenant admin: import a credential obtained elsewhere (the connect flow stores them itself). An API key ' +
      '(`type: "api_key"`), or OAuth tokens (`type: "oauth2"`: the access token, optionally a refresh token, ' +
      'its expiry and scopes; Custos refreshes it ahead of expiry). The type must match the provider’s auth ' +
      'mode. Sealed under the tenant’s data key; the answer, like every other, carries no secret. 201 when ' +
      'created, 200 when it replaces the user’s live connection to this provider. Audited as ' +
      '`connection.created` (`connection.replaced`).',
  })
  @ApiUserParam()
  @ApiProviderParam()
  @ApiJsonBody(zodSchema(importCredentialSchema), {
    oauth2: {
      summary: 'OAuth tokens',
      value: {
        type: 'oauth2',
        accessToken: 'example-access-token',
        refreshToken: 'example-refresh-token',
        expiresAt: '2030-01-01T00:00:00Z',
        scopes: ['repo', 'read:user'],
      },
    },
    apiKey: { summary: 'An API key', value: { type: 'api_key', apiKey: 'sk-example-api-key' } },
  })
  @ApiJsonResponse(201, 'Created.', zodSchema(connectionViewSchema, 'output'), connectionExample)
  @ApiJsonResponse(
    200,
    'Replaced the user’s live connection.',
    zodSchema(connectionViewSchema, 'output'),
    connectionExample,
  )
  @ApiErrors({
    400: ['validation_failed', 'unknown_field', 'malformed_id', 'credential_type_mismatch'],
    404: ['not_found', 'unknown_provider'],
    503: ['key_unavailable', 'temporarily_unavailable'],
  })
  async importCredential(
    @Req() req: AuthedRequest,
    @Res({ passthrough: true }) reply: FastifyReply,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('userId', UserIdParam) userId: string,
    @Param('provider') provider: string,
    @Body(new ZodBody(importCredentialSchema)) body: ImportCredentialInput,
  ) {
    if (!PROVIDER_KEY_PATTERN.test(provider))
      throw new CommonException('malformed_id', 'Malformed provider key in path');
    const { connection, created } = await this.connections.importCredential(
      adminActor(req.principal!),
      tenantId,
      userId,
      provider,
      body,
    );
    void reply.status(created ? 201 : 200);
    return connection;
  }

  @Get('users/:userId/connections')
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'List a user’s connections',
    description:
      'Tenant admin: the user’s connections, one per provider, with status and expiry; metadata only, never a ' +
      'secret. `?includeRevoked=true` adds revoked ones. Audited as `connection.listed`.',
  })
  @ApiUserParam()
  @ApiQuery({
    name: 'includeRevoked',
    required: false,
    description: 'Also list revoked connections.',
    schema: { type: 'string', enum: ['true', 'false'] },
    ...paramExample('false'),
  })
  @ApiJsonResponse(200, 'The connections.', zodSchema(connectionListSchema, 'output'), {
    items: [connectionExample],
  })
  @ApiErrors({ 400: ['validation_failed', 'malformed_id'], 404: ['not_found'] })
  async list(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('userId', UserIdParam) userId: string,
    @Query(new ZodQuery(listConnectionsQuerySchema)) query: z.output<typeof listConnectionsQuerySchema>,
  ) {
    const items = await this.connections.listConnections(
      adminActor(req.principal!),
      tenantId,
      userId,
      query.includeRevoked === 'true',
    );
    return { items };
  }

  @Delete('connections/:connectionId')
  @HttpCode(204)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Revoke a connection',
    description:
      'Tenant admin. The stored secret is erased at once and no connector gets the token again; the token is ' +
      'also revoked at the provider where it supports revocation, in the background (retried if it is down). ' +
      'The connection stays listed as `revoked` (`?includeRevoked=true`). Audited as `connection.revoked`.',
  })
  @ApiUuidParam('connectionId', 'The connection’s id.', EXAMPLE.connectionId)
  @ApiNoContent('Revoked.')
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  async revoke(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('connectionId', UuidParam) connectionId: string,
  ): Promise<void> {
    const { providerRevocation } = await this.connections.revokeConnection(
      adminActor(req.principal!),
      tenantId,
      connectionId,
    );
    // The local secret is gone; the provider is told in the background (and retried by a job if it is down).
    if (providerRevocation) {
      this.revocations.processDue(connectionId).catch(() => undefined);
    }
  }
}
