import { Body, Controller, Get, HttpCode, Inject, Param, Post, Req } from '@nestjs/common';
import { ApiBasicAuth, ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { Actor } from '../audit/audit.service.js';
import { AcceptsConnectors, Access, adminActor } from '../common/admin-access.js';
import { CommonException } from '../common/errors.js';
import {
  ApiAdminErrors,
  ApiErrors,
  ApiJsonBody,
  ApiJsonResponse,
  ApiTenantParam,
  ApiUuidParam,
  EXAMPLE,
  zodSchema,
} from '../common/openapi.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import type { ConnectorOrAdminRequest } from '../identity/connector-auth.guard.js';
import { createConnectSessionSchema, type CreateConnectSessionInput } from './connect-sessions.dto.js';
import {
  connectSessionExample,
  connectSessionViewSchema,
  createdConnectSessionExample,
  createdConnectSessionSchema,
} from './connect-sessions.openapi.js';
import { ConnectSessionsService } from './connect-sessions.service.js';

/**
 * Connect sessions, for tenant admins (admin key) and for connectors (their client credentials). A
 * connector may only create sessions for providers and scopes its policy allows, and only reads the
 * sessions it created itself (including those handed out in consent_required answers).
 */
@ApiTags('connect')
@ApiBearerAuth()
@ApiBasicAuth()
@ApiAdminErrors()
@ApiTenantParam()
@Controller('v1/tenants/:tenantId/connect/sessions')
@AcceptsConnectors()
export class ConnectSessionsController {
  constructor(@Inject(ConnectSessionsService) private readonly sessions: ConnectSessionsService) {}

  @Post()
  @HttpCode(201)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Create a connect link for a user',
    description:
      'A tenant admin (admin key) or a connector (its client credentials: Basic, or a private_key_jwt ' +
      'assertion as a bearer token) asks for a one-time link that lets `userId` connect `provider` (with ' +
      '`scopes`, default the provider’s). A connector may only use providers and scopes its policy allows. ' +
      'Hand `url` to that user; after the flow the browser goes to `returnTo` (one of the tenant’s allowed ' +
      'return URLs) with the session id and outcome. OAuth providers need the tenant’s app first (400 ' +
      '`provider_not_configured`). Audited as `connect_session.created`.',
  })
  @ApiJsonBody(zodSchema(createConnectSessionSchema), {
    github: {
      summary: 'Connect GitHub',
      value: {
        userId: EXAMPLE.userId,
        provider: 'github',
        scopes: ['repo'],
        returnTo: 'https://app.acme.example/connected',
      },
    },
    minimal: {
      summary: 'Default scopes, no return URL',
      value: { userId: EXAMPLE.userId, provider: 'github' },
    },
  })
  @ApiJsonResponse(
    201,
    'The session and its link.',
    zodSchema(createdConnectSessionSchema, 'output'),
    createdConnectSessionExample,
  )
  @ApiErrors(
    {
      400: [
        'validation_failed',
        'unknown_field',
        'malformed_id',
        'provider_not_configured',
        'return_url_not_allowed',
      ],
      403: ['forbidden'],
      404: ['not_found', 'unknown_provider'],
    },
    { 403: 'The key’s role, or the connector’s policy, does not allow this provider or these scopes.' },
  )
  create(
    @Req() req: ConnectorOrAdminRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Body(new ZodBody(createConnectSessionSchema)) body: CreateConnectSessionInput,
  ) {
    const connector = req.connector?.connector;
    if (connector) {
      if (!connector.allowedProviders.includes(body.provider)) {
        throw new CommonException('forbidden', 'This connector may not use that provider');
      }
      const allowed = connector.allowedScopes[body.provider];
      if (allowed && (body.scopes ?? []).some((s) => !allowed.includes(s))) {
        throw new CommonException('forbidden', 'Scope outside what this connector is allowed');
      }
    }
    return this.sessions.createSession(actorOf(req), tenantId, body);
  }

  @Get(':id')
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Read a connect session',
    description:
      'Where a connect link stands (`pending`, `completed`, `declined`, `failed` with `failureReason`, ' +
      '`expired`); kept for an hour after it expires. A connector reads only the sessions it created, including ' +
      'those handed out in `consent_required` answers (`connect_session_uri`). Never the link itself.',
  })
  @ApiUuidParam('id', 'The session’s id.', EXAMPLE.sessionId)
  @ApiJsonResponse(200, 'The session.', zodSchema(connectSessionViewSchema, 'output'), {
    ...connectSessionExample,
    status: 'completed',
  })
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  get(
    @Req() req: ConnectorOrAdminRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('id', UuidParam) id: string,
  ) {
    return this.sessions.getSession(tenantId, id, req.connector ? actorOf(req) : undefined);
  }
}

function actorOf(req: ConnectorOrAdminRequest): Actor {
  if (req.connector) return { type: 'connector', id: req.connector.connector.connectorId };
  return adminActor(req.principal!);
}
