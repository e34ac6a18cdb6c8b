import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AuditModule } from '../audit/audit.module.js';
import { CryptoModule } from '../crypto/crypto.module.js';
import { ProviderOAuthClient } from './oauth-client.js';
import { ProviderAppsRepository } from './provider-apps.repository.js';
import { ProviderAppsService } from './provider-apps.service.js';
import { ProviderCatalog } from './provider-catalog.js';
import { ProviderRegistry } from './provider-registry.js';
import { TenantProvidersRepository } from './tenant-providers.repository.js';
import { TenantProvidersService } from './tenant-providers.service.js';
import { TenantProvider } from './tenant-provider.entity.js';
import { ProviderApp } from './provider-app.entity.js';

/** Providers: the shipped catalog, tenants' custom providers and OAuth apps, and the provider OAuth client. */
@Module({
  imports: [TypeOrmModule.forFeature([ProviderApp, TenantProvider]), AuditModule, CryptoModule],
  providers: [
    { provide: ProviderCatalog, useFactory: () => ProviderCatalog.load() },
    TenantProvidersRepository,
    ProviderAppsRepository,
    ProviderRegistry,
    TenantProvidersService,
    ProviderAppsService,
    ProviderOAuthClient,
  ],
  exports: [
    ProviderCatalog,
    ProviderRegistry,
    TenantProvidersService,
    ProviderAppsService,
    ProviderOAuthClient,
  ],
})
export class ProvidersModule {}
