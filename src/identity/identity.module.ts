import { Module } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { AuditModule } from '../audit/audit.module.js';
import { ProvidersModule } from '../providers/providers.module.js';
import { AccessGuard } from './access.guard.js';
import { AdminAuthGuard } from './admin-auth.guard.js';
import { AdminKeysService } from './admin-keys.service.js';
import { ClientAuthenticator } from './client-auth.js';
import { ConnectorOrAdminGuard } from './connector-auth.guard.js';
import { ConnectorsService } from './connectors.service.js';
import { IdentityProvidersService } from './identity-providers.service.js';
import { JwksResolver } from './jwks-resolver.js';
import { SubjectTokenVerifier } from './subject-token.js';

/**
 * Who is calling: admin keys, connectors and their client authentication, tenants' identity providers and the
 * user tokens they issue. Registers the one global guard that enforces every route's @Access.
 */
@Module({
  imports: [AuditModule, ProvidersModule],
  providers: [
    AdminKeysService,
    AdminAuthGuard,
    ConnectorsService,
    IdentityProvidersService,
    JwksResolver,
    SubjectTokenVerifier,
    ClientAuthenticator,
    ConnectorOrAdminGuard,
    { provide: APP_GUARD, useClass: AccessGuard },
  ],
  exports: [
    AdminKeysService,
    ConnectorsService,
    IdentityProvidersService,
    JwksResolver,
    SubjectTokenVerifier,
    ClientAuthenticator,
  ],
})
export class IdentityModule {}
