import { Module } from '@nestjs/common';
import { AuditController } from './audit/audit.controller.js';
import { AuditSealController } from './audit/audit-seal.controller.js';
import { AuditModule } from './audit/audit.module.js';
import { BrokerModule } from './broker/broker.module.js';
import { TokenController } from './broker/token.controller.js';
import { ConnectFlowController } from './connect/connect-flow.controller.js';
import { ConnectModule } from './connect/connect.module.js';
import { ConnectSessionsController } from './connect/connect-sessions.controller.js';
import { PortalController } from './connect/portal.controller.js';
import { PortalSessionsController } from './connect/portal-sessions.controller.js';
import { ConnectionsController } from './connections/connections.controller.js';
import { ConnectionsModule } from './connections/connections.module.js';
import { ConsoleModule } from './console/console.module.js';
import { CryptoModule } from './crypto/crypto.module.js';
import { KeyBackendController } from './crypto/key-backend.controller.js';
import { AdminKeysController } from './identity/admin-keys.controller.js';
import { ConnectorsController } from './identity/connectors.controller.js';
import { IdentityModule } from './identity/identity.module.js';
import { IdentityProvidersController } from './identity/identity-providers.controller.js';
import { ProviderAppsController } from './providers/provider-apps.controller.js';
import { ProvidersController } from './providers/providers.controller.js';
import { ProvidersModule } from './providers/providers.module.js';
import { TenantProvidersController } from './providers/tenant-providers.controller.js';
import { TenantsController } from './tenants/tenants.controller.js';
import { TenantsModule } from './tenants/tenants.module.js';

/**
 * The api role: the admin API, the token endpoint and the hosted connect pages. Each domain module exports
 * what its routes (and other domains) may use; a worker imports the same modules without these routes.
 */
@Module({
  imports: [
    AuditModule,
    CryptoModule,
    TenantsModule,
    ProvidersModule,
    IdentityModule,
    ConnectionsModule,
    ConnectModule,
    BrokerModule,
    ConsoleModule,
  ],
  controllers: [
    ProvidersController,
    TenantProvidersController,
    ProviderAppsController,
    ConnectFlowController,
    TenantsController,
    AdminKeysController,
    ConnectionsController,
    ConnectSessionsController,
    PortalSessionsController,
    PortalController,
    AuditController,
    AuditSealController,
    ConnectorsController,
    IdentityProvidersController,
    TokenController,
    KeyBackendController,
  ],
})
export class ApiModule {}
