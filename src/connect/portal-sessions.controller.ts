import { Body, Controller, HttpCode, Inject, Param, Post, Req } from '@nestjs/common';
import { ApiBasicAuth, ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { Actor } from '../audit/audit.service.js';
import { AcceptsConnectors, Access, adminActor } from '../common/admin-access.js';
import {
  ApiAdminErrors,
  ApiErrors,
  ApiJsonBody,
  ApiJsonResponse,
  ApiTenantParam,
  EXAMPLE,
  zodSchema,
} from '../common/openapi.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import type { ConnectorOrAdminRequest } from '../identity/connector-auth.guard.js';
import { createPortalSessionSchema, type CreatePortalSessionInput } from './portal-sessions.dto.js';
import { createdPortalSessionExample, createdPortalSessionSchema } from './portal-sessions.openapi.js';
import { PortalService } from './portal.service.js';

/**
 * Links to a user's "my connections" page, for tenant admins (admin key) and for connectors (their client
 * credentials). A connector may make one for any user of its tenant, as it may make connect links for any
 * user: the tenant's own backend is trusted to hand a link only to the person it names. Where that is not
 * enough, the tenant's connectLogin makes the page ask that person to sign in at the tenant's identity
 * provider first, so a link alone shows nothing.
 */
@ApiTags('connect')
@ApiBearerAuth()
@ApiBasicAuth()
@ApiAdminErrors()
@ApiTenantParam()
@Controller('v1/tenants/:tenantId/portal/sessions')
@AcceptsConnectors()
export class PortalSessionsController {
  constructor(@Inject(PortalService) private readonly portal: PortalService) {}

  @Post()
  @HttpCode(201)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Create a “my connections” link for a user',
    description:
      'A tenant admin (admin key) or a connector (its client credentials) asks for a one-time link to the page ' +
      'where `userId` sees their connections (provider, what each may do, when connected, its status, when it was ' +
      'last used and by which connector) and can disconnect one (revoked here at once and at the provider). The ' +
      'link opens once within 15 minutes; the browser session it starts ends after 30 minutes without activity. ' +
      'With the tenant’s `connectLogin`, the person signs in at the tenant’s identity provider first and must be ' +
      '`userId`. `returnTo` (one of the tenant’s allowed return URLs) is linked as the way back. Audited as ' +
      '`portal_session.created`.',
  })
  @ApiJsonBody(zodSchema(createPortalSessionSchema), {
    withReturn: {
      summary: 'With a way back to the app',
      value: { userId: EXAMPLE.userId, returnTo: 'https://app.acme.example/settings' },
    },
    minimal: { summary: 'Just the user', value: { userId: EXAMPLE.userId } },
  })
  @ApiJsonResponse(
    201,
    'The link.',
    zodSchema(createdPortalSessionSchema, 'output'),
    createdPortalSessionExample,
  )
  @ApiErrors({
    400: ['validation_failed', 'unknown_field', 'malformed_id', 'return_url_not_allowed'],
    404: ['not_found'],
  })
  create(
    @Req() req: ConnectorOrAdminRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Body(new ZodBody(createPortalSessionSchema)) body: CreatePortalSessionInput,
  ) {
    return this.portal.createPortalSession(actorOf(req), tenantId, body);
  }
}

function actorOf(req: ConnectorOrAdminRequest): Actor {
  if (req.connector) return { type: 'connector', id: req.connector.connector.connectorId };
  return adminActor(req.principal!);
}
