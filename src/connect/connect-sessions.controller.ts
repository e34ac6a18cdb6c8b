import { Body, Controller, Get, HttpCode, Inject, Param, Post, Req, UseGuards } from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiTags } from '@nestjs/swagger';
import { z } from 'zod';
import { UuidParam, ZodBody } from '../common/validation.js';
import { Access, AdminAuthGuard, type AuthedRequest } from '../identity/admin-auth.guard.js';
import { adminActor } from '../identity/admin-keys.service.js';
import { createConnectSessionSchema, type CreateConnectSessionInput } from './connect-sessions.dto.js';
import { ConnectSessionsService } from './connect-sessions.service.js';

@ApiTags('connect')
@ApiBearerAuth()
@Controller('v1/tenants/:tenantId/connect/sessions')
@UseGuards(AdminAuthGuard)
export class ConnectSessionsController {
  constructor(@Inject(ConnectSessionsService) private readonly sessions: ConnectSessionsService) {}

  @Post()
  @HttpCode(201)
  @Access('tenant_admin')
  @ApiBody({ schema: z.toJSONSchema(createConnectSessionSchema) as object })
  create(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Body(new ZodBody(createConnectSessionSchema)) body: CreateConnectSessionInput,
  ) {
    return this.sessions.createSession(adminActor(req.principal!), tenantId, body);
  }

  @Get(':id')
  @Access('tenant_admin')
  get(@Param('tenantId', UuidParam) tenantId: string, @Param('id', UuidParam) id: string) {
    return this.sessions.getSession(tenantId, id);
  }
}
