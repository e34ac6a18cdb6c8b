import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AuditBatcher } from './audit-batcher.js';
import { AuditChainRepository } from './audit-chain.repository.js';
import { AuditCheckpointsRepository } from './audit-checkpoints.repository.js';
import { AuditExport } from './audit-export.js';
import { AuditForwarder } from './audit-forwarder.js';
import { AuditForwardStateRepository } from './audit-forward-state.repository.js';
import { AuditRetention } from './audit-retention.js';
import { AuditRetentionRepository } from './audit-retention.repository.js';
import { AuditSealer } from './audit-sealer.js';
import { AuditSigningKeys } from './audit-signing-keys.js';
import { AuditSigningKeysRepository } from './audit-signing-keys.repository.js';
import { SigningKeyProtection } from './signing-key-protector.js';
import { AuditRepository } from './audit.repository.js';
import { AuditService } from './audit.service.js';
import { DenialThrottle } from './denial-throttle.js';
import { AuditEvent } from './audit-event.entity.js';
import {
  AuditChainHead,
  AuditChainLink,
  AuditForwardState,
  AuditTruncation,
  AuditCheckpoint,
  AuditSealState,
  AuditSigningKey,
} from './sealed-audit.entity.js';

/**
 * The audit trail: its repository (the only writer of audit_events), its group commit, the denial throttle, and
 * the sealed trail (sealer, signing keys, export).
 */
@Module({
  imports: [
    TypeOrmModule.forFeature([
      AuditEvent,
      AuditChainLink,
      AuditChainHead,
      AuditCheckpoint,
      AuditSealState,
      AuditSigningKey,
      AuditForwardState,
      AuditTruncation,
    ]),
  ],
  providers: [
    AuditRepository,
    AuditService,
    AuditBatcher,
    DenialThrottle,
    AuditChainRepository,
    AuditCheckpointsRepository,
    AuditSigningKeysRepository,
    SigningKeyProtection,
    AuditSigningKeys,
    AuditSealer,
    AuditExport,
    AuditForwardStateRepository,
    AuditForwarder,
    AuditRetentionRepository,
    AuditRetention,
  ],
  exports: [
    AuditService,
    AuditBatcher,
    DenialThrottle,
    SigningKeyProtection,
    AuditSealer,
    AuditSigningKeys,
    AuditExport,
    AuditForwardStateRepository,
    AuditForwarder,
    AuditRetention,
  ],
})
export class AuditModule {}
