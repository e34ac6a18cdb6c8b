import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { APP_GUARD } from '@nestjs/core';
import { AuditModule } from '../audit/audit.module.js';
import { ProvidersModule } from '../providers/providers.module.js';
import { TenantsModule } from '../tenants/tenants.module.js';
import { AccessDenials } from './access-denials.js';
import { AccessGuard } from './access.guard.js';
import { AdminAccessGuard } from './admin-access.guard.js';
import { AdminKeyAuthGuard } from './admin-auth.guard.js';
import { AdminKeyStrategy } from './admin-key.strategy.js';
import { AdminKeysRepository } from './admin-keys.repository.js';
import { AdminKeysService } from './admin-keys.service.js';
import { ClientAuthenticator } from './client-auth.js';
import { ConnectorAuthGuard } from './connector-auth.guard.js';
import { ConnectorsRepository } from './connectors.repository.js';
import { ConnectorProviderUsage } from './connector-provider-usage.js';
import { ConnectorsService } from './connectors.service.js';
import { IdentityProvidersRepository } from './identity-providers.repository.js';
import { IdentityProvidersService } from './identity-providers.service.js';
import { JwksResolver } from './jwks-resolver.js';
import { SubjectTokenVerifier } from './subject-token.js';
import { TenantDeletionCredentials } from './tenant-deletion-credentials.js';
import { UsedAssertionsRepository } from './used-assertions.repository.js';
import { IdentityProvider } from './identity-provider.entity.js';
import { Connector } from './connector.entity.js';
import { AdminKey } from './admin-key.entity.js';
import { UsedAssertion } from './used-assertion.entity.js';

/**
 * Who is calling: admin keys, connectors and their client authentication, tenants' identity providers and the
 * user tokens they issue. Registers the one global guard that enforces every route's @Access.
 */
@Module({
  imports: [
    TypeOrmModule.forFeature([AdminKey, Connector, IdentityProvider, UsedAssertion]),
    AuditModule,
    ProvidersModule,
    TenantsModule,
  ],
  providers: [
    AdminKeysService,
    AdminKeyStrategy,
    AdminKeyAuthGuard,
    AdminAccessGuard,
    AccessDenials,
    ConnectorsService,
    IdentityProvidersService,
    JwksResolver,
    SubjectTokenVerifier,
    ClientAuthenticator,
    ConnectorAuthGuard,
    UsedAssertionsRepository,
    ConnectorProviderUsage,
    TenantDeletionCredentials,
    AdminKeysRepository,
    ConnectorsRepository,
    IdentityProvidersRepository,
    { provide: APP_GUARD, useClass: AccessGuard },
  ],
  exports: [
    AdminKeysService,
    ConnectorsService,
    IdentityProvidersService,
    JwksResolver,
    SubjectTokenVerifier,
    ClientAuthenticator,
    UsedAssertionsRepository,
  ],
})
export class IdentityModule {}
