import {
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  Inject,
  type OnModuleInit,
  Param,
  Patch,
  Post,
  Put,
  Query,
  Req,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { ApiBearerAuth, ApiBody, ApiConsumes, ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import { CommonException } from '../common/errors.js';
import {
  ApiAdminErrors,
  ApiErrors,
  ApiJsonBody,
  ApiJsonResponse,
  ApiNoContent,
  ApiTenantParam,
  paramExample,
  zodSchema,
} from '../common/openapi.js';
import { UuidParam, ZodBody, ZodQuery } from '../common/validation.js';
import {
  logoExample,
  logoViewSchema,
  tenantDeletionExample,
  tenantDeletionSchema,
  tenantExample,
  tenantListSchema,
  tenantViewSchema,
  updatedTenantSchema,
} from './tenants.openapi.js';
import { LOGO_MAX_BYTES } from './logo-image.js';
import {
  createTenantSchema,
  deleteTenantQuerySchema,
  updateTenantSchema,
  type UpdateTenantInput,
} from './tenants.dto.js';
import { TenantsService } from './tenants.service.js';

/** The route that takes a logo's bytes as its body; no other route is given an image body. */
const LOGO_ROUTE = '/v1/tenants/:tenantId/logo';
/** The types a logo may be sent as. They only open the route: the bytes decide what the image is. */
const LOGO_UPLOAD_TYPES = ['image/png', 'image/jpeg', 'application/octet-stream'];

/**
 * Lets the logo route read its body as bytes, up to LOGO_MAX_BYTES (more is 413 before it is all read). Any
 * other route sent one of these types answers 415, as it would without this parser.
 */
function acceptLogoUploads(fastify: FastifyInstance): void {
  fastify.addContentTypeParser(
    LOGO_UPLOAD_TYPES,
    { parseAs: 'buffer', bodyLimit: LOGO_MAX_BYTES },
    (req, body, done) => {
      if (req.method === 'PUT' && req.routeOptions.url === LOGO_ROUTE) {
        done(null, body);
        return;
      }
      done(
        Object.assign(new Error('Unsupported Content-Type'), {
          code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE',
          statusCode: 415,
        }),
        undefined,
      );
    },
  );
}

@ApiTags('tenants')
@ApiBearerAuth()
@ApiAdminErrors()
@Controller('v1/tenants')
export class TenantsController implements OnModuleInit {
  constructor(
    @Inject(TenantsService) private readonly tenants: TenantsService,
    @Inject(HttpAdapterHost) private readonly http: HttpAdapterHost,
  ) {}

  onModuleInit(): void {
    // The command line opens the services without an HTTP server: nothing to parse there.
    const adapter = this.http.httpAdapter as HttpAdapterHost['httpAdapter'] | undefined;
    if (adapter) acceptLogoUploads(adapter.getInstance<FastifyInstance>());
  }

  @Post()
  @HttpCode(201)
  @Access('platform')
  @ApiOperation({
    summary: 'Create a tenant',
    description:
      'Platform admin only. A tenant is one customer organisation: its connections, connectors, providers, keys ' +
      'and audit trail are kept apart from every other tenant’s. Next, issue it a tenant admin key ' +
      '(`POST /v1/tenants/{tenantId}/admin-keys`).',
  })
  @ApiJsonBody(zodSchema(createTenantSchema), { acme: { summary: 'A tenant', value: { name: 'Acme' } } })
  @ApiJsonResponse(201, 'The tenant.', zodSchema(tenantViewSchema, 'output'), tenantExample)
  @ApiErrors({ 400: ['validation_failed', 'unknown_field', 'invalid_request'] })
  create(
    @Req() req: AuthedRequest,
    @Body(new ZodBody(createTenantSchema)) body: z.output<typeof createTenantSchema>,
  ) {
    return this.tenants.createTenant(adminActor(req.principal!), body.name);
  }

  @Get()
  @Access('platform')
  @ApiOperation({
    summary: 'List tenants',
    description: 'Platform admin only: every tenant, including those being deleted (`status: "deleting"`).',
  })
  @ApiJsonResponse(200, 'The tenants.', zodSchema(tenantListSchema, 'output'), { items: [tenantExample] })
  async list() {
    return { items: await this.tenants.listTenants() };
  }

  @Get(':tenantId')
  @Access('tenant_or_platform_admin')
  @ApiOperation({
    summary: 'Read a tenant',
    description:
      'Platform admins read any tenant; a tenant admin key reads its own. Shows the settings of the connect ' +
      'flow (return URLs, sign-in, branding) and the key backend type, never a secret.',
  })
  @ApiTenantParam()
  @ApiJsonResponse(200, 'The tenant.', zodSchema(tenantViewSchema, 'output'), tenantExample)
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  get(@Param('tenantId', UuidParam) tenantId: string) {
    return this.tenants.getTenant(tenantId);
  }

  @Patch(':tenantId')
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Change a tenant’s settings',
    description:
      'Tenant admin. Any of: `name`; `allowedReturnUrls` (the exact URLs a connect flow may return to: https, ' +
      'http only for localhost); `webhookUrl` (signed notifications; the signing secret is answered once, as ' +
      '`webhookSecret`, also with `rotateWebhookSecret: true`; null removes it); `connectLogin` (sign-in at one of ' +
      'the tenant’s identity providers before connecting; null turns it off); `consoleLogin` (console single ' +
      'sign-on through one of them: the OIDC client and which of its users are `admins` and `auditors`; null ' +
      'turns it off and ends those sessions); `scopePassThrough`; the hosted ' +
      'pages’ `displayName` and `brandColor` (null removes them). Audited as `tenant.updated`.',
  })
  @ApiTenantParam()
  @ApiJsonBody(zodSchema(updateTenantSchema), {
    returnUrls: {
      summary: 'Where connect flows may return',
      value: { allowedReturnUrls: ['https://app.acme.example/connected'] },
    },
    webhook: {
      summary: 'A webhook (its secret comes back once)',
      value: { webhookUrl: 'https://hooks.acme.example/custos' },
    },
    connectLogin: {
      summary: 'Sign in before connecting',
      value: {
        connectLogin: {
          identityProvider: 'corp',
          clientId: 'custos-connect',
          clientSecret: 'idp-client-secret',
        },
      },
    },
    consoleLogin: {
      summary: 'Console single sign-on',
      value: {
        consoleLogin: {
          identityProvider: 'corp',
          clientId: 'custos-console',
          clientSecret: 'idp-client-secret',
          admins: ['alice@acme.example'],
          auditors: ['audit@acme.example'],
        },
      },
    },
    branding: {
      summary: 'Branding of the hosted pages',
      value: { displayName: 'Acme Corp', brandColor: '#0b5fff' },
    },
  })
  @ApiJsonResponse(200, 'The tenant as changed.', zodSchema(updatedTenantSchema, 'output'), tenantExample, {
    examples: {
      changed: { summary: 'Changed', value: tenantExample },
      webhook: {
        summary: 'With a new webhook: its signing secret, this once',
        value: {
          ...tenantExample,
          webhookUrl: 'https://hooks.acme.example/custos',
          webhookSecret: 'whsec_4mJ0c2VjcmV0LWV4YW1wbGUtb25seQ',
        },
      },
    },
  })
  @ApiErrors({
    400: [
      'validation_failed',
      'unknown_field',
      'malformed_id',
      'outbound_url_refused',
      'outbound_url_unresolvable',
    ],
    404: ['not_found'],
  })
  update(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Body(new ZodBody(updateTenantSchema)) body: UpdateTenantInput,
  ) {
    return this.tenants.updateTenant(adminActor(req.principal!), tenantId, body);
  }

  /**
   * The hosted pages' logo: the image itself as the body (`Content-Type: image/png`, `image/jpeg` or
   * `application/octet-stream`), at most 64 KiB and 512×512 pixels; the bytes decide whether it is a PNG or a
   * JPEG, and anything else (SVG included) is refused. Replaces any logo.
   */
  @Put(':tenantId/logo')
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Upload the hosted pages’ logo',
    description:
      'Tenant admin. The body is the image itself (`Content-Type: image/png`, `image/jpeg` or ' +
      '`application/octet-stream`), at most 64 KiB and 512×512 pixels. The bytes decide whether it is a PNG or ' +
      'a JPEG; anything else (SVG included) is refused. Replaces any logo; served without a key at `url`.',
  })
  @ApiTenantParam()
  @ApiConsumes(...LOGO_UPLOAD_TYPES)
  @ApiBody({ schema: { type: 'string', format: 'binary' } })
  @ApiJsonResponse(200, 'The logo as stored.', zodSchema(logoViewSchema, 'output'), logoExample)
  @ApiErrors({
    400: ['validation_failed', 'malformed_id'],
    404: ['not_found'],
    413: ['payload_too_large'],
    415: ['unsupported_media_type'],
  })
  setLogo(@Req() req: AuthedRequest, @Param('tenantId', UuidParam) tenantId: string) {
    if (!Buffer.isBuffer(req.body)) {
      throw new CommonException(
        'unsupported_media_type',
        'Send the image itself as the body, with Content-Type image/png or image/jpeg',
      );
    }
    return this.tenants.setLogo(
      adminActor(req.principal!),
      tenantId,
      req.body,
      req.headers['content-type']?.split(';')[0].trim().toLowerCase(),
    );
  }

  @Delete(':tenantId/logo')
  @HttpCode(204)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Remove the hosted pages’ logo',
    description: 'Tenant admin. The hosted pages show the tenant’s name without a logo from now on.',
  })
  @ApiTenantParam()
  @ApiNoContent('Removed.')
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] }, { 404: 'No such tenant, or it has no logo.' })
  async removeLogo(@Req() req: AuthedRequest, @Param('tenantId', UuidParam) tenantId: string) {
    await this.tenants.removeLogo(adminActor(req.principal!), tenantId);
  }

  /** 202: the tenant is `deleting`; a worker job crypto-shreds it once its tokens are revoked at providers. */
  @Delete(':tenantId')
  @HttpCode(202)
  @Access('platform')
  @ApiOperation({
    summary: 'Delete a tenant (crypto-shredding)',
    description:
      'Platform admin only; `?confirm=` must be the tenant’s current name. From the answer on, its keys and ' +
      'connectors stop working; its tokens are revoked at providers, then a worker destroys its data keys and ' +
      'rows (404 from then on). Asking again answers the same 202 with where the deletion stands.',
  })
  @ApiTenantParam()
  @ApiQuery({
    name: 'confirm',
    required: true,
    description: 'The tenant’s current name, as a safeguard against deleting the wrong one.',
    schema: { type: 'string', minLength: 1, maxLength: 200 },
    ...paramExample('Acme'),
  })
  @ApiJsonResponse(
    202,
    'Deletion requested (or already under way).',
    zodSchema(tenantDeletionSchema, 'output'),
    tenantDeletionExample,
  )
  @ApiErrors(
    { 400: ['validation_failed', 'malformed_id'], 404: ['not_found'] },
    { 400: 'A malformed id, or `confirm` is not the tenant’s name.' },
  )
  delete(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Query(new ZodQuery(deleteTenantQuerySchema)) query: z.output<typeof deleteTenantQuerySchema>,
  ) {
    return this.tenants.deleteTenant(adminActor(req.principal!), tenantId, { confirmName: query.confirm });
  }
}
