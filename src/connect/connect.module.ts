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
import { PortalSession } from './portal-session.entity.js';
import { PortalSessionsRepository } from './portal-sessions.repository.js';
import { PortalService } from './portal.service.js';

/**
 * Connecting an account: connect sessions (links), the hosted pages' flow and the sign-in before it, and the
 * end user's "my connections" portal.
 */
@Module({
  imports: [
    TypeOrmModule.forFeature([ConnectSession, PortalSession]),
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
    PortalSessionsRepository,
    PortalService,
  ],
  exports: [ConnectSessionsService, ConnectFlowService, ConnectLoginService, PortalService],
})
export class ConnectModule {}
