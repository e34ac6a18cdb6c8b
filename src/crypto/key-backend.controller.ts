/** The tenant's key backend: choose it (BYOK), read its status, rotate, flush cached keys, resume or cancel a migration. */
import { Body, Controller, Get, HttpCode, Inject, Param, Post, Put, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import { Access, adminActor, type AuthedRequest } from '../common/admin-access.js';
import {
  ApiAdminErrors,
  ApiErrors,
  ApiJsonBody,
  ApiJsonResponse,
  ApiTenantParam,
  zodSchema,
} from '../common/openapi.js';
import { UuidParam, ZodBody } from '../common/validation.js';
import {
  flushSchema,
  keyBackendViewExample,
  keyBackendViewSchema,
  managedViewExample,
  migratingViewExample,
  rotationSchema,
} from './key-backend.openapi.js';
import { keyBackendInputSchema, type KeyBackendInput } from './key-backend.dto.js';
import { KeyBackendService } from './key-backend.service.js';

@ApiTags('key backend')
@ApiBearerAuth()
@ApiAdminErrors()
@ApiTenantParam()
@Controller('v1/tenants/:tenantId/key-backend')
export class KeyBackendController {
  constructor(@Inject(KeyBackendService) private readonly keys: KeyBackendService) {}

  @Get()
  @Access('tenant_audit')
  @ApiOperation({
    summary: 'Read the tenant’s key backend',
    description:
      'Tenant admin or auditor: which backend wraps the tenant’s data keys (`managed`, `aws-kms`, ' +
      '`vault-transit`), its settings without credentials, how many data keys it holds, and a migration’s ' +
      'progress or failure after a switch. `awsExternalId` is what to put in an AWS role’s trust policy.',
  })
  @ApiJsonResponse(
    200,
    'The key backend.',
    zodSchema(keyBackendViewSchema, 'output'),
    keyBackendViewExample,
    {
      examples: {
        awsKms: { summary: 'The tenant’s AWS KMS key', value: keyBackendViewExample },
        managed: { summary: 'The managed keyring (the default)', value: managedViewExample },
        migrationFailed: { summary: 'A migration that is failing', value: migratingViewExample },
      },
    },
  )
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  get(@Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.view(tenantId);
  }

  @Put()
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Choose the tenant’s key backend (bring your own key)',
    description:
      'Tenant admin. `managed` (Custos’s root keyring), `aws-kms` (the tenant’s KMS key, signed with its own ' +
      '`credentials` — the only choice that may name an `endpoint` — or a role Custos assumes, `assumeRole`) or ' +
      '`vault-transit` (the tenant’s Transit key, with a `token` or `appRole`). Custos proves the backend with a ' +
      'real round trip first; a failure is 400 with a code per cause — `key_backend_unreachable` (DNS, ' +
      'refused, timeout), `key_backend_denied` (access denied, credentials not accepted, key disabled), ' +
      '`key_backend_not_found`, `key_backend_invalid` — `details.reason`, `details.endpoint` and a message that ' +
      'says what to check, and nothing is saved. Then new secrets use it at once and existing data keys move ' +
      'to it in the background (`status: "migrating"`). Credentials are sealed and never returned. To try it ' +
      'offline: `npm run emulator:kms` prints a body for this call. Audited as `key_backend.configured`.',
  })
  @ApiJsonBody(zodSchema(keyBackendInputSchema), {
    awsKmsRole: {
      summary: 'AWS KMS, through a role Custos assumes',
      value: {
        type: 'aws-kms',
        keyId: 'alias/custos',
        region: 'eu-west-1',
        assumeRole: { roleArn: 'arn:aws:iam::111122223333:role/custos-kms' },
      },
    },
    awsKmsEmulator: {
      summary: 'AWS KMS with its own credentials (as `npm run emulator:kms` prints)',
      value: {
        type: 'aws-kms',
        keyId: 'arn:aws:kms:us-east-1:111122223333:key/90bc7646-b104-4278-9214-7b601d1ccab5',
        region: 'us-east-1',
        endpoint: 'http://127.0.0.1:4599',
        credentials: {
          accessKeyId: 'AKIAEXAMPLE000000000',
          secretAccessKey: 'wJalrXUtnFEMIexampleSECRETkey0000000000',
        },
      },
    },
    vaultTransit: {
      summary: 'Vault Transit with AppRole',
      value: {
        type: 'vault-transit',
        address: 'https://vault.acme.example:8200',
        keyName: 'custos',
        appRole: { roleId: 'custos-role-id', secretId: 'custos-secret-id' },
      },
    },
    managed: { summary: 'Back to the managed keyring', value: { type: 'managed' } },
  })
  @ApiJsonResponse(
    200,
    'Accepted: the key backend, migrating the tenant’s data keys.',
    zodSchema(keyBackendViewSchema, 'output'),
    {
      ...keyBackendViewExample,
      status: 'migrating',
      dataKeys: { total: 3, onCurrentBackend: 1 },
      migration: { ...migratingViewExample.migration, attempts: 0, failingSince: null, lastError: null },
    },
  )
  @ApiErrors({
    400: [
      'key_backend_unreachable',
      'key_backend_denied',
      'key_backend_not_found',
      'key_backend_invalid',
      'validation_failed',
      'unknown_field',
      'malformed_id',
      'outbound_url_refused',
    ],
    404: ['not_found'],
  })
  put(
    @Req() req: AuthedRequest,
    @Param('tenantId', UuidParam) tenantId: string,
    @Body(new ZodBody(keyBackendInputSchema)) body: KeyBackendInput,
  ) {
    return this.keys.configure(adminActor(req.principal!), tenantId, body);
  }

  @Post('rotate')
  @HttpCode(200)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Rotate the tenant’s keys',
    description:
      'Tenant admin. A new data-key epoch for new secrets, and every data key rewrapped under the backend’s ' +
      'newest key version without decrypting any credential (Vault: the transit key is rotated first; KMS: ' +
      'ReEncrypt; managed: the newest root key). Audited as `key_backend.rotated`.',
  })
  @ApiJsonResponse(
    200,
    'Rotated.',
    zodSchema(rotationSchema, 'output'),
    { epoch: 4, rewrapped: 3 },
    {
      examples: {
        kms: { summary: 'AWS KMS or managed', value: { epoch: 4, rewrapped: 3 } },
        vault: {
          summary: 'Vault Transit (the key’s new version)',
          value: { epoch: 4, rewrapped: 3, keyVersion: 2 },
        },
      },
    },
  )
  @ApiErrors({
    400: ['malformed_id'],
    404: ['not_found'],
    503: ['key_unavailable', 'temporarily_unavailable'],
  })
  rotate(@Req() req: AuthedRequest, @Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.rotateTenantKey(adminActor(req.principal!), tenantId);
  }

  @Post('flush')
  @HttpCode(200)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Drop the tenant’s cached data keys',
    description:
      'Tenant admin. Every Custos process forgets the tenant’s unwrapped data keys (through Redis when it is ' +
      'configured), so the next read asks the key backend: after disabling a BYOK key, reads fail at once ' +
      'instead of when the cache ages out. Audited as `key_backend.flushed`.',
  })
  @ApiJsonResponse(200, 'Flushed.', zodSchema(flushSchema, 'output'), {
    flushed: true,
    replicasNotified: true,
  })
  @ApiErrors({ 400: ['malformed_id'], 404: ['not_found'] })
  flush(@Req() req: AuthedRequest, @Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.flush(adminActor(req.principal!), tenantId);
  }

  /** Retries a data-key migration now (after fixing what made it fail). */
  @Post('migration/resume')
  @HttpCode(200)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Retry a data-key migration now',
    description:
      'Tenant admin, after fixing what made a migration fail (credentials, a key restored): tries at once ' +
      'instead of waiting for the background retry, and answers the view. 409 when nothing is left to move. ' +
      'Audited as `key_backend.migration_resumed`.',
  })
  @ApiJsonResponse(
    200,
    'The key backend after the attempt.',
    zodSchema(keyBackendViewSchema, 'output'),
    keyBackendViewExample,
  )
  @ApiErrors(
    { 400: ['malformed_id'], 404: ['not_found'], 409: ['conflict'] },
    { 409: 'No migration to resume.' },
  )
  resumeMigration(@Req() req: AuthedRequest, @Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.resumeMigration(adminActor(req.principal!), tenantId);
  }

  /** Gives up on a data-key migration: back to the configuration the unmoved keys are wrapped by. */
  @Post('migration/cancel')
  @HttpCode(200)
  @Access('tenant_admin')
  @ApiOperation({
    summary: 'Give up a data-key migration',
    description:
      'Tenant admin. Back to the configuration the unmoved data keys are wrapped by, once a round trip proves ' +
      'it works (else 400 with the cause, as when choosing a backend); new secrets go under it at once and keys ' +
      'that already moved follow back. 409 when nothing is left to move. Audited as ' +
      '`key_backend.migration_cancelled`.',
  })
  @ApiJsonResponse(
    200,
    'The key backend, back on the previous configuration.',
    zodSchema(keyBackendViewSchema, 'output'),
    managedViewExample,
  )
  @ApiErrors(
    {
      400: ['key_backend_unreachable', 'key_backend_denied', 'key_backend_not_found', 'malformed_id'],
      404: ['not_found'],
      409: ['conflict'],
    },
    { 409: 'No migration to cancel, or it changed meanwhile.' },
  )
  cancelMigration(@Req() req: AuthedRequest, @Param('tenantId', UuidParam) tenantId: string) {
    return this.keys.cancelMigration(adminActor(req.principal!), tenantId);
  }
}
