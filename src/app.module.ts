import { type DynamicModule, Module } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import type { Logger } from 'pino';
import { DataSource } from 'typeorm';
import { AuditController } from './audit/audit.controller.js';
import { AuditBatcher } from './audit/audit-batcher.js';
import { AuditService } from './audit/audit.service.js';
import { BrokerService } from './broker/broker.service.js';
import { ClientAuthenticator } from './identity/client-auth.js';
import { DecisionBatcher } from './broker/decision-batcher.js';
import { ConnectorOrAdminGuard } from './identity/connector-auth.guard.js';
import { JwksResolver } from './identity/jwks-resolver.js';
import { SubjectTokenVerifier } from './identity/subject-token.js';
import { TokenController } from './broker/token.controller.js';
import { CONFIG, type Config } from './config/config.js';
import { LOGGER } from './common/logger.js';
import { DenialThrottle } from './audit/denial-throttle.js';
import { OutboundHttpClient } from './common/outbound-http.js';
import { ConnectSessionsController } from './connect/connect-sessions.controller.js';
import { ConnectSessionsService } from './connect/connect-sessions.service.js';
import { ConnectionsController } from './connections/connections.controller.js';
import { ConnectionsService } from './connections/connections.service.js';
import { TokenRefresher } from './connections/token-refresher.service.js';
import { DataKeyService } from './crypto/data-key.service.js';
import { KeyBackendController } from './crypto/key-backend.controller.js';
import { KeyBackendService } from './crypto/key-backend.service.js';
import { KeyBackends, MANAGED_KEY_BACKEND } from './crypto/key-backends.js';
import { KeyCacheBus } from './crypto/key-cache-bus.js';
import { ManagedKeyBackend } from './crypto/managed-key-backend.js';
import type { RootKeyring } from './common/root-keyring.js';
import { HealthController } from './health/health.controller.js';
import { MetricsController } from './health/metrics.controller.js';
import { Metrics } from './common/metrics.js';
import { AccessGuard } from './identity/access.guard.js';
import { AdminAuthGuard } from './identity/admin-auth.guard.js';
import { AdminKeysController } from './identity/admin-keys.controller.js';
import { AdminKeysService } from './identity/admin-keys.service.js';
import { ConnectorsController } from './identity/connectors.controller.js';
import { ConnectorsService } from './identity/connectors.service.js';
import { IdentityProvidersController } from './identity/identity-providers.controller.js';
import { IdentityProvidersService } from './identity/identity-providers.service.js';
import { JOB_RUNNER, type JobRunner } from './jobs/job-runner.js';
import { RefreshJobs } from './jobs/refresh-jobs.js';
import { ProviderCatalog } from './providers/provider-catalog.js';
import { ProvidersController } from './providers/providers.controller.js';
import { ProviderAppsController } from './providers/provider-apps.controller.js';
import { ProviderAppsService } from './providers/provider-apps.service.js';
import { ProviderRegistry } from './providers/provider-registry.js';
import { TenantProvidersController } from './providers/tenant-providers.controller.js';
import { TenantProvidersService } from './providers/tenant-providers.service.js';
import { ConnectFlowController } from './connect/connect-flow.controller.js';
import { ConnectFlowService } from './connect/connect-flow.service.js';
import { ConnectLoginService } from './connect/connect-login.service.js';
import { ProviderOAuthClient } from './providers/oauth-client.js';
import { ProviderRevocationService } from './connections/provider-revocation.service.js';
import { TenantsController } from './tenants/tenants.controller.js';
import { TenantsService } from './tenants/tenants.service.js';
import { WebhooksService } from './tenants/webhooks.service.js';

/** What is built before Nest starts: validated config, logger, migrated database, keyring, catalog, jobs. */
export interface Runtime {
  config: Config;
  logger: Logger;
  dataSource: DataSource;
  keyring: RootKeyring;
  catalog: ProviderCatalog;
  jobs: JobRunner;
}

const apiControllers = [
  ProvidersController,
  TenantProvidersController,
  ProviderAppsController,
  ConnectFlowController,
  TenantsController,
  AdminKeysController,
  ConnectionsController,
  ConnectSessionsController,
  AuditController,
  ConnectorsController,
  IdentityProvidersController,
  TokenController,
  KeyBackendController,
];

@Module({})
export class AppModule {
  static register(rt: Runtime): DynamicModule {
    // A worker serves only its probes and metrics; the API is served by the api role.
    const api = rt.config.role !== 'worker';
    return {
      module: AppModule,
      controllers: [HealthController, MetricsController, ...(api ? apiControllers : [])],
      providers: [
        { provide: CONFIG, useValue: rt.config },
        { provide: LOGGER, useValue: rt.logger },
        { provide: DataSource, useValue: rt.dataSource },
        { provide: ProviderCatalog, useValue: rt.catalog },
        ProviderRegistry,
        TenantProvidersService,
        ProviderAppsService,
        ProviderOAuthClient,
        ConnectFlowService,
        ConnectLoginService,
        ProviderRevocationService,
        { provide: JOB_RUNNER, useValue: rt.jobs },
        { provide: Metrics, useValue: new Metrics() },
        // The one SSRF-safe client for every tenant-influenced URL (JWKS, custom providers, key backends, webhooks).
        {
          provide: OutboundHttpClient,
          useValue: new OutboundHttpClient({ allowHosts: rt.config.outboundAllowHosts }),
        },
        { provide: MANAGED_KEY_BACKEND, useValue: new ManagedKeyBackend(rt.keyring) },
        KeyBackends,
        DataKeyService,
        KeyCacheBus,
        KeyBackendService,
        AuditService,
        AdminKeysService,
        DenialThrottle,
        AdminAuthGuard,
        TenantsService,
        WebhooksService,
        ConnectionsService,
        TokenRefresher,
        RefreshJobs,
        ConnectSessionsService,
        ConnectorsService,
        IdentityProvidersService,
        AuditBatcher,
        JwksResolver,
        SubjectTokenVerifier,
        ClientAuthenticator,
        DecisionBatcher,
        BrokerService,
        ConnectorOrAdminGuard,
        // Every route's access rule (@Access), enforced in one place.
        { provide: APP_GUARD, useClass: AccessGuard },
      ],
    };
  }
}
