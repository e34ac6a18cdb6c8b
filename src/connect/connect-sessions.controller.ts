import { Body, Controller, Get, HttpCode, Inject, Param, Post, Req } from '@nestjs/common';
import { ApiBasicAuth, ApiBearerAuth, ApiBody, ApiTags } from '@nestjs/swagger';
import { z } from 'zod';
import type { Actor } from '../audit/audit.service.js';
import { AcceptsConnectors, Access, adminActor } from '../common/admin-access.js';
import { CommonException } from '../common/errors.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import type { ConnectorOrAdminRequest } from '../identity/connector-auth.guard.js';
import { createConnectSessionSchema, type CreateConnectSessionInput } from './connect-sessions.dto.js';
import { ConnectSessionsService } from './connect-sessions.service.js';

/**
 * Connect sessions, for tenant admins (admin key) and for connectors (their client credentials). A
 * connector may only create sessions for providers and scopes its policy allows, and only reads the
 * sessions it created itself (including those handed out in consent_required answers).
 */
@ApiTags('connect')
@ApiBearerAuth()
@ApiBasicAuth()
@Controller('v1/tenants/:tenantId/connect/sessions')
@AcceptsConnectors()
export class ConnectSessionsController {
  constructor(@Inject(ConnectSessionsService) private readonly sessions: ConnectSessionsService) {}

  @Post()
  @HttpCode(201)
  @Access('tenant_admin')
  @ApiBody({ schema: z.toJSONSchema(createConnectSessionSchema) as object })
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
