import { Readable } from 'node:stream';
import { Controller, Get, Header, Inject, Param, Query, Res } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import { Access } from '../common/admin-access.js';
import { UuidParam, ZodQuery } from '../common/validation.js';
import { chainOf } from './audit-format.js';
import { AuditExport } from './audit-export.js';
import { AuditSigningKeys } from './audit-signing-keys.js';

export const auditExportQuerySchema = z.strictObject({
  from: z.iso.datetime({ offset: true }).optional(),
  to: z.iso.datetime({ offset: true }).optional(),
});

type ExportQuery = z.output<typeof auditExportQuerySchema>;

function rangeOf(q: ExportQuery) {
  return { from: q.from ? new Date(q.from) : null, to: q.to ? new Date(q.to) : null };
}

async function stream(reply: FastifyReply, lines: AsyncGenerator<string>, name: string): Promise<void> {
  await reply
    .header('content-type', 'application/x-ndjson; charset=utf-8')
    .header('content-disposition', `attachment; filename="${name}.ndjson"`)
    .header('cache-control', 'no-store')
    .send(Readable.from(lines));
}

/** The sealed trail: public keys (no authentication: anyone may verify) and exports. */
@ApiTags('audit')
@Controller()
export class AuditSealController {
  constructor(
    @Inject(AuditSigningKeys) private readonly keys: AuditSigningKeys,
    @Inject(AuditExport) private readonly exporter: AuditExport,
  ) {}

  @Get('v1/tenants/:tenantId/audit/keys')
  @Header('cache-control', 'public, max-age=300')
  @ApiOperation({
    summary: "The tenant's checkpoint signing keys (JWKS)",
    description:
      'Ed25519 public keys with their validity windows (validFrom, validUntil); no authentication. A tenant with no sealed events yet has none.',
  })
  tenantKeys(@Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.jwks(chainOf(tenantId));
  }

  @Get('v1/audit/platform/keys')
  @Header('cache-control', 'public, max-age=300')
  @ApiOperation({ summary: "The platform chain's checkpoint signing keys (JWKS)" })
  platformKeys() {
    return this.keys.jwks(chainOf(null));
  }

  @Get('v1/tenants/:tenantId/audit/export')
  @Access('tenant_audit')
  @ApiBearerAuth()
  @ApiOperation({
    summary: "Export the tenant's sealed audit trail (NDJSON, custos-audit/1)",
    description:
      'Events and the signed checkpoints covering them, for events in [from, to) (both optional; whole checkpoints, so the range may be widened). Verify with `custos audit verify`.',
  })
  async tenantExport(
    @Param('tenantId', UuidParam) tenantId: string,
    @Query(new ZodQuery(auditExportQuerySchema)) q: ExportQuery,
    @Res() reply: FastifyReply,
  ): Promise<void> {
    await stream(reply, await this.exporter.open(tenantId, rangeOf(q)), `custos-audit-${tenantId}`);
  }

  @Get('v1/audit/platform/export')
  @Access('platform')
  @ApiBearerAuth()
  @ApiOperation({
    summary: 'Export the platform chain (events with no tenant: denials of unknown keys and clients)',
  })
  async platformExport(
    @Query(new ZodQuery(auditExportQuerySchema)) q: ExportQuery,
    @Res() reply: FastifyReply,
  ): Promise<void> {
    await stream(reply, await this.exporter.open(null, rangeOf(q)), 'custos-audit-platform');
  }
}
