import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Patch, Post, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import {
  ApiAdminErrors,
  ApiErrors,
  ApiJsonBody,
  ApiJsonResponse,
  ApiNoContent,
  ApiTenantParam,
  ApiUuidParam,
  EXAMPLE,
  zodSchema,
} from '../common/openapi.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import {
  connectorExample,
  connectorListSchema,
  connectorSecretExample,
  connectorSecretSchema,
  connectorViewSchema,
} from './identity.openapi.js';
import {
  createConnectorSchema,
  updateConnectorSchema,
  type CreateConnectorInput,
  type UpdateConnectorInput,
} from './connectors.dto.js';
import { ConnectorsService } from './connectors.service.js';

@ApiTags('connectors')
@ApiBearerAuth()
@ApiAdminErrors()
@ApiTenantParam()
@Controller('v1/tenants/:tenantId/connectors')
export class ConnectorsController {
  constructor(@Inject(ConnectorsService) private readonly connectors: ConnectorsService) {}

  @Post()
  @HttpCode(201)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Register a connector',
    description:
      'Tenant admin. A connector is a workload (an MCP server, an agent backend) that gets users’ provider ' +
      'tokens at `POST /oauth/token`. Its policy: `allowedProviders`, optionally `allowedScopes` per provider, ' +
      'and `delegation` (`user_token`: it must present the user’s token from a trusted identity provider; ' +
      '`trusted`: it may name the user). It authenticates with a client secret (`client_secret_basic`: ' +
      '`clientSecret` is in this answer only) or `private_key_jwt` with its public keys (`jwks` or `jwksUri`). ' +
      'Audited as `connector.created`.',
  })
  @ApiJsonBody(zodSchema(createConnectorSchema), {
    secret: {
      summary: 'With a client secret',
      value: {
        name: 'github-mcp',
        owner: 'platform-team',
        allowedProviders: ['github'],
        allowedScopes: { github: ['repo', 'read:user'] },
        delegation: 'user_token',
        auth: { method: 'client_secret_basic' },
      },
    },
    privateKeyJwt: {
      summary: 'With private_key_jwt (its public keys at a URL)',
      value: {
        name: 'salesforce-agent',
        allowedProviders: ['salesforce'],
        delegation: 'user_token',
        auth: { method: 'private_key_jwt', jwksUri: 'https://agent.acme.example/.well-known/jwks.json' },
      },
    },
  })
  @ApiJsonResponse(
    201,
    'The connector, with its `clientSecret` this once (client_secret_basic).',
    zodSchema(connectorViewSchema, 'output'),
    { ...connectorExample, clientSecret: connectorSecretExample.clientSecret },
  )
  @ApiErrors({
    400: [
      'validation_failed',
      'unknown_field',
      'malformed_id',
      'unknown_provider',
      'outbound_url_refused',
      'outbound_url_unresolvable',
    ],
    404: ['not_found'],
  })
  create(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Body(new ZodBody(createConnectorSchema)) body: CreateConnectorInput,
  ) {
    return this.connectors.createConnector(adminActor(req.principal!), tenantId, body);
  }

  @Get()
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'List connectors',
    description:
      'Tenant admin: the tenant’s connectors with their policies, disabled ones included. Never a secret.',
  })
  @ApiJsonResponse(200, 'The connectors.', zodSchema(connectorListSchema, 'output'), {
    items: [connectorExample],
  })
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  async list(@Param('tenantId', UuidParam) tenantId: string) {
    return { items: await this.connectors.listConnectors(tenantId) };
  }

  @Get(':connectorId')
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Read a connector',
    description:
      'Tenant admin: one connector, its client id, policy and authentication method. Never its secret.',
  })
  @ApiUuidParam('connectorId', 'The connector’s id (not its client id).', EXAMPLE.connectorId)
  @ApiJsonResponse(200, 'The connector.', zodSchema(connectorViewSchema, 'output'), connectorExample)
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  get(@Param('tenantId', UuidParam) tenantId: string, @Param('connectorId', UuidParam) connectorId: string) {
    return this.connectors.getConnector(tenantId, connectorId);
  }

  @Patch(':connectorId')
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Change a connector’s policy, or disable it',
    description:
      'Tenant admin. Any of `name`, `owner`, `allowedProviders`, `allowedScopes`, `delegation`, `disabled`. ' +
      '`disabled: true` refuses the connector at once, everywhere, until it is enabled again. Audited as ' +
      '`connector.updated` (`connector.disabled` when disabling).',
  })
  @ApiUuidParam('connectorId', 'The connector’s id.', EXAMPLE.connectorId)
  @ApiJsonBody(zodSchema(updateConnectorSchema), {
    disable: { summary: 'Disable it at once', value: { disabled: true } },
    narrow: {
      summary: 'Narrow its scopes',
      value: { allowedProviders: ['github'], allowedScopes: { github: ['read:user'] } },
    },
  })
  @ApiJsonResponse(200, 'The connector as changed.', zodSchema(connectorViewSchema, 'output'), {
    ...connectorExample,
    disabled: true,
  })
  @ApiErrors({
    400: ['validation_failed', 'unknown_field', 'malformed_id', 'unknown_provider'],
    404: ['not_found'],
  })
  update(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('connectorId', UuidParam) connectorId: string,
    @Body(new ZodBody(updateConnectorSchema)) body: UpdateConnectorInput,
  ) {
    return this.connectors.updateConnector(adminActor(req.principal!), tenantId, connectorId, body);
  }

  @Delete(':connectorId')
  @HttpCode(204)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Delete a connector',
    description:
      'Tenant admin. The connector can no longer authenticate; users’ connections are untouched (they belong ' +
      'to the users, not to the connector). Audited as `connector.deleted`.',
  })
  @ApiUuidParam('connectorId', 'The connector’s id.', EXAMPLE.connectorId)
  @ApiNoContent('Deleted.')
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  async remove(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('connectorId', UuidParam) connectorId: string,
  ): Promise<void> {
    await this.connectors.deleteConnector(adminActor(req.principal!), tenantId, connectorId);
  }

  @Post(':connectorId/secret')
  @HttpCode(200)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Rotate a connector’s client secret',
    description:
      'Tenant admin, for a `client_secret_basic` connector: a new secret, shown in this answer only; the old one ' +
      'stops working at once. Audited as `connector.secret_rotated`.',
  })
  @ApiUuidParam('connectorId', 'The connector’s id.', EXAMPLE.connectorId)
  @ApiJsonResponse(
    200,
    'The new secret, this once.',
    zodSchema(connectorSecretSchema, 'output'),
    connectorSecretExample,
  )
  @ApiErrors({ 400: ['malformed_id', 'invalid_request'], 404: ['not_found'] })
  rotateSecret(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('connectorId', UuidParam) connectorId: string,
  ) {
    return this.connectors.rotateClientSecret(adminActor(req.principal!), tenantId, connectorId);
  }
}
