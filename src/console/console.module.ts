import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AuditModule } from '../audit/audit.module.js';
import { CryptoModule } from '../crypto/crypto.module.js';
import { IdentityModule } from '../identity/identity.module.js';
import { ProvidersModule } from '../providers/providers.module.js';
import { TenantsModule } from '../tenants/tenants.module.js';
import { ConsoleAuditService } from './console-audit.service.js';
import { ConsoleConnectionsService } from './console-connections.service.js';
import { ConsoleHttp } from './console-http.js';
import { ConsoleReadsRepository } from './console-reads.repository.js';
import { ConsoleSession } from './console-session.entity.js';
import { ConsoleSignIn } from './console-sign-in.entity.js';
import { ConsoleSsoService } from './console-sso.service.js';
import { ConnectModule } from '../connect/connect.module.js';
import { ConsoleSessionsRepository } from './console-sessions.repository.js';
import { ConsoleSessionsService } from './console-sessions.service.js';
import { ConsoleSignInsRepository } from './console-sign-ins.repository.js';
import { ConsoleTenantController } from './console-tenant.controller.js';
import { ConsoleController } from './console.controller.js';

/**
 * The console at /console (api role): server-rendered pages for tenant admins and auditors and a tenant list
 * for platform admins, its sign-in sessions, and the read views it needs. Every change it makes goes through
 * the owning domain's service.
 */
@Module({
  imports: [
    TypeOrmModule.forFeature([ConsoleSession, ConsoleSignIn]),
    AuditModule,
    CryptoModule,
    TenantsModule,
    ProvidersModule,
    IdentityModule,
    ConnectModule,
  ],
  providers: [
    ConsoleSessionsRepository,
    ConsoleSignInsRepository,
    ConsoleSessionsService,
    ConsoleReadsRepository,
    ConsoleConnectionsService,
    ConsoleAuditService,
    ConsoleHttp,
    ConsoleSsoService,
  ],
  controllers: [ConsoleController, ConsoleTenantController],
})
export class ConsoleModule {}
