import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AuditModule } from '../audit/audit.module.js';
import { RootKeyring } from '../common/root-keyring.js';
import { AuditSigningKeyProtector } from './audit-signing-key-protector.js';
import { DataKeyService } from './data-key.service.js';
import { DataKeysRepository } from './data-keys.repository.js';
import { KeyBackendService } from './key-backend.service.js';
import { KeyBackends, MANAGED_KEY_BACKEND } from './key-backends.js';
import { KeyBackendsRepository } from './key-backends.repository.js';
import { KeyCacheBus } from './key-cache-bus.js';
import { ManagedKeyBackend } from './managed-key-backend.js';
import { TenantKeyBackend } from './tenant-key-backend.entity.js';
import { DataKey } from './data-key.entity.js';

/** Envelope encryption: tenants' data keys, their key backends (managed, AWS KMS, Vault Transit), rotation. */
@Module({
  imports: [TypeOrmModule.forFeature([DataKey, TenantKeyBackend]), AuditModule],
  providers: [
    {
      provide: MANAGED_KEY_BACKEND,
      useFactory: (k: RootKeyring) => new ManagedKeyBackend(k),
      inject: [RootKeyring],
    },
    DataKeysRepository,
    KeyBackendsRepository,
    KeyBackends,
    DataKeyService,
    KeyCacheBus,
    KeyBackendService,
    AuditSigningKeyProtector,
  ],
  exports: [DataKeyService, KeyBackendService, KeyBackends, KeyCacheBus],
})
export class CryptoModule {}
