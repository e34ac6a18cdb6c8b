import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Put, Query, Req, Res } from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import { CommonException } from '../common/errors.js';
import { UserIdParam, UuidParam, ZodBody, ZodQuery } from '../common/validation.js';
import {
  importCredentialSchema,
  listConnectionsQuerySchema,
  type ImportCredentialInput,
} from './connections.dto.js';
import { ConnectionsService } from './connections.service.js';
import { ProviderRevocationService } from './provider-revocation.service.js';
import { PROVIDER_KEY_PATTERN } from '../providers/provider-definition.js';

@ApiTags('connections')
@ApiBearerAuth()
@Controller('v1/tenants/:tenantId')
export class ConnectionsController {
  constructor(
    @Inject(ConnectionsService) private readonly connections: ConnectionsService,
    @Inject(ProviderRevocationService) private readonly revocations: ProviderRevocationService,
  ) {}

  @Put('users/:userId/connections/:provider')
  @Access('tenant_admin')
  @ApiBody({ schema: z.toJSONSchema(importCredentialSchema) as object })
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
