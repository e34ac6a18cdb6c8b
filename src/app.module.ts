/**
 * The application, assembled by role: the domain modules every role uses, plus the api role's routes
 * (ApiModule) and the worker role's jobs (WorkerModule); `all` has both. The exception filter and the access
 * guard are global (APP_FILTER here, APP_GUARD in IdentityModule).
 */
import { type DynamicModule, Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import type { Logger } from 'pino';
import type { DataSource } from 'typeorm';
import { DatabaseModule } from './database/database.module.js';
import { ApiModule } from './api.module.js';
import { AuditModule } from './audit/audit.module.js';
import { Background } from './background.js';
import { LOGGER } from './common/logger.js';
import type { RootKeyring } from './common/root-keyring.js';
import type { Config } from './config/config.js';
import { ConnectionsModule } from './connections/connections.module.js';
import { CoreModule } from './core.module.js';
import { HealthModule } from './health/health.module.js';
import { CustosExceptionFilter } from './http/exception.filter.js';
import { IdentityModule } from './identity/identity.module.js';
import { JobsModule } from './jobs/jobs.module.js';
import { WorkerModule } from './worker.module.js';

/** What is built before Nest starts: the validated configuration, the logger and the root keyring. */
export interface Runtime {
  config: Config;
  logger: Logger;
  keyring: RootKeyring;
}

@Module({})
export class AppModule {
  /**
   * `opened`: see DatabaseModule.forRoot. `background: false` (the `custos` CLI) leaves out what runs besides
   * the services: no first admin key, no refresh queue, no jobs, no sealer.
   */
  static register(
    rt: Runtime,
    opened: DataSource[] = [],
    opts: { background?: boolean } = {},
  ): DynamicModule {
    const { role } = rt.config;
    return {
      module: AppModule,
      imports: [
        CoreModule.forRoot(rt),
        DatabaseModule.forRoot(rt.config, rt.logger, opened),
        HealthModule,
        AuditModule,
        IdentityModule,
        ConnectionsModule,
        JobsModule,
        // A worker serves only its probes and metrics; the API is served by the api role.
        ...(role !== 'worker' ? [ApiModule] : []),
        ...(role !== 'api' ? [WorkerModule] : []),
      ],
      providers: [
        {
          provide: APP_FILTER,
          inject: [LOGGER],
          useFactory: (logger: Logger) => new CustosExceptionFilter(logger),
        },
        ...(opts.background === false ? [] : [Background]),
      ],
    };
  }
}
