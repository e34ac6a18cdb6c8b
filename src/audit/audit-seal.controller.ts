import { Readable } from 'node:stream';
import { Controller, Get, Header, Inject, Param, Query, Res } from '@nestjs/common';
import { applyDecorators } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiQuery, ApiResponse, ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import { Access } from '../common/admin-access.js';
import {
  ApiAdminErrors,
  ApiErrors,
  ApiJsonResponse,
  ApiTenantParam,
  paramExample,
  zodSchema,
} from '../common/openapi.js';
import { UuidParam, ZodQuery } from '../common/validation.js';
import { auditExportExample, auditJwksExample, auditJwksSchema } from './audit.openapi.js';
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

/** The `from` and `to` of an export, and its NDJSON answer. */
const ApiExport = () =>
  applyDecorators(
    ApiQuery({
      name: 'from',
      required: false,
      description: 'Events from this time (ISO 8601 with an offset); the range widens to whole checkpoints.',
      schema: { type: 'string', format: 'date-time' },
      ...paramExample('2026-12-01T00:00:00Z'),
    }),
    ApiQuery({
      name: 'to',
      required: false,
      description: 'Events before this time (exclusive).',
      schema: { type: 'string', format: 'date-time' },
      ...paramExample('2026-12-04T00:00:00Z'),
    }),
    ApiResponse({
      status: 200,
      description:
        'NDJSON (`custos-audit/1`, docs/audit-format.md): a header line, then for each checkpoint the events it ' +
        'covers and the signed checkpoint. Sent as an attachment.',
      content: {
        'application/x-ndjson': {
          schema: { type: 'string', description: 'One JSON object per line.' },
          example: auditExportExample,
        },
      },
    }),
    ApiErrors({ 400: ['validation_failed', 'unknown_field'] }),
  );

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
  @ApiTenantParam()
  @ApiJsonResponse(
    200,
    'The keys (cacheable for 5 minutes).',
    zodSchema(auditJwksSchema, 'output'),
    auditJwksExample,
  )
  @ApiErrors({ 400: ['malformed_id'], 503: ['temporarily_unavailable'] })
  tenantKeys(@Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.jwks(chainOf(tenantId));
  }

  @Get('v1/audit/platform/keys')
  @Header('cache-control', 'public, max-age=300')
  @ApiOperation({
    summary: "The platform chain's checkpoint signing keys (JWKS)",
    description:
      'Ed25519 public keys that sign the platform chain’s checkpoints (events that name no tenant), with their ' +
      'validity windows; no authentication, so that anyone holding an export can verify it.',
  })
  @ApiJsonResponse(
    200,
    'The keys (cacheable for 5 minutes).',
    zodSchema(auditJwksSchema, 'output'),
    auditJwksExample,
  )
  @ApiErrors({ 503: ['temporarily_unavailable'] })
  platformKeys() {
    return this.keys.jwks(chainOf(null));
  }

  @Get('v1/tenants/:tenantId/audit/export')
  @Access('tenant_audit')
  @ApiBearerAuth()
  @ApiAdminErrors()
  @ApiTenantParam()
  @ApiExport()
  @ApiErrors({ 400: ['validation_failed', 'unknown_field', 'malformed_id'], 404: ['not_found'] })
  @ApiOperation({
    summary: "Export the tenant's sealed audit trail (NDJSON, custos-audit/1)",
    description:
      'Tenant admin or auditor: the events and the signed checkpoints covering them, for events in [from, to) (both optional; whole checkpoints, so the range may be widened). Verify with `custos audit verify`.',
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
    description:
      'Platform admin: the platform chain’s events and the signed checkpoints covering them, for events in ' +
      '[from, to) (both optional; whole checkpoints). Verify with `custos audit verify` and the platform keys.',
  })
  @ApiAdminErrors()
  @ApiExport()
  async platformExport(
    @Query(new ZodQuery(auditExportQuerySchema)) q: ExportQuery,
    @Res() reply: FastifyReply,
  ): Promise<void> {
    await stream(reply, await this.exporter.open(null, rangeOf(q)), 'custos-audit-platform');
  }
}
