import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Patch, Post, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiTags } from '@nestjs/swagger';
import { z } from 'zod';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import {
  createConnectorSchema,
  updateConnectorSchema,
  type CreateConnectorInput,
  type UpdateConnectorInput,
} from './connectors.dto.js';
import { ConnectorsService } from './connectors.service.js';

@ApiTags('connectors')
@ApiBearerAuth()
@Controller('v1/tenants/:tenantId/connectors')
export class ConnectorsController {
  constructor(@Inject(ConnectorsService) private readonly connectors: ConnectorsService) {}

  @Post()
  @HttpCode(201)
  @Access('tenant_admin')
  @ApiBody({ schema: z.toJSONSchema(createConnectorSchema) as object })
  create(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Body(new ZodBody(createConnectorSchema)) body: CreateConnectorInput,
  ) {
    return this.connectors.createConnector(adminActor(req.principal!), tenantId, body);
  }

  @Get()
  @Access('tenant_admin')
  async list(@Param('tenantId', UuidParam) tenantId: string) {
    return { items: await this.connectors.listConnectors(tenantId) };
  }

  @Get(':connectorId')
  @Access('tenant_admin')
  get(@Param('tenantId', UuidParam) tenantId: string, @Param('connectorId', UuidParam) connectorId: string) {
    return this.connectors.getConnector(tenantId, connectorId);
  }

  @Patch(':connectorId')
  @Access('tenant_admin')
  @ApiBody({ schema: z.toJSONSchema(updateConnectorSchema) as object })
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
  rotateSecret(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Param('connectorId', UuidParam) connectorId: string,
  ) {
    return this.connectors.rotateClientSecret(adminActor(req.principal!), tenantId, connectorId);
  }
}
