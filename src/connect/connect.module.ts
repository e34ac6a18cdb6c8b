import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AuditModule } from '../audit/audit.module.js';
import { ConnectionsModule } from '../connections/connections.module.js';
import { CryptoModule } from '../crypto/crypto.module.js';
import { IdentityModule } from '../identity/identity.module.js';
import { ProvidersModule } from '../providers/providers.module.js';
import { TenantsModule } from '../tenants/tenants.module.js';
import { ConnectFlowService } from './connect-flow.service.js';
import { ConnectLoginService } from './connect-login.service.js';
import { SessionProviderUsage } from './session-provider-usage.js';
import { ConnectSessionsRepository } from './connect-sessions.repository.js';
import { ConnectSessionsService } from './connect-sessions.service.js';
import { ConnectSession } from './connect-session.entity.js';

/** Connecting an account: connect sessions (links), the hosted pages' flow and the sign-in before it. */
@Module({
  imports: [
    TypeOrmModule.forFeature([ConnectSession]),
    AuditModule,
    CryptoModule,
    ProvidersModule,
    TenantsModule,
    IdentityModule,
    ConnectionsModule,
  ],
  providers: [
    ConnectSessionsRepository,
    ConnectSessionsService,
    ConnectFlowService,
    ConnectLoginService,
    SessionProviderUsage,
  ],
  exports: [ConnectSessionsService, ConnectFlowService, ConnectLoginService],
})
export class ConnectModule {}
