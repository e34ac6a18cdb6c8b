import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AuditModule } from '../audit/audit.module.js';
import { CryptoModule } from '../crypto/crypto.module.js';
import { JobsModule } from '../jobs/jobs.module.js';
import { ProvidersModule } from '../providers/providers.module.js';
import { TenantsModule } from '../tenants/tenants.module.js';
import { ConnectionProviderUsage } from './connection-provider-usage.js';
import { ConnectionsRepository } from './connections.repository.js';
import { ConnectionsService } from './connections.service.js';
import { PendingRevocationsRepository } from './pending-revocations.repository.js';
import { ProviderRevocationService } from './provider-revocation.service.js';
import { TokenRefresher } from './token-refresher.service.js';
import { PendingRevocation } from './pending-revocation.entity.js';
import { Connection } from './connection.entity.js';

/** The credential store: connections, their refresh and their revocation at the provider. */
@Module({
  imports: [
    TypeOrmModule.forFeature([Connection, PendingRevocation]),
    AuditModule,
    CryptoModule,
    ProvidersModule,
    TenantsModule,
    JobsModule,
  ],
  providers: [
    ConnectionsRepository,
    PendingRevocationsRepository,
    ConnectionsService,
    TokenRefresher,
    ProviderRevocationService,
    ConnectionProviderUsage,
  ],
  exports: [ConnectionsRepository, ConnectionsService, TokenRefresher, ProviderRevocationService],
})
export class ConnectionsModule {}
