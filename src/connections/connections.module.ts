import { Module } from '@nestjs/common';
import { AuditModule } from '../audit/audit.module.js';
import { CryptoModule } from '../crypto/crypto.module.js';
import { JobsModule } from '../jobs/jobs.module.js';
import { ProvidersModule } from '../providers/providers.module.js';
import { TenantsModule } from '../tenants/tenants.module.js';
import { ConnectionsService } from './connections.service.js';
import { ProviderRevocationService } from './provider-revocation.service.js';
import { TokenRefresher } from './token-refresher.service.js';

/** The credential store: connections, their refresh and their revocation at the provider. */
@Module({
  imports: [AuditModule, CryptoModule, ProvidersModule, TenantsModule, JobsModule],
  providers: [ConnectionsService, TokenRefresher, ProviderRevocationService],
  exports: [ConnectionsService, TokenRefresher, ProviderRevocationService],
})
export class ConnectionsModule {}
