import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AuditBatcher } from './audit-batcher.js';
import { AuditRepository } from './audit.repository.js';
import { AuditService } from './audit.service.js';
import { DenialThrottle } from './denial-throttle.js';
import { AuditEvent } from './audit-event.entity.js';

/** The audit trail: its repository (the only writer of audit_events), its group commit, and the denial throttle. */
@Module({
  imports: [TypeOrmModule.forFeature([AuditEvent])],
  providers: [AuditRepository, AuditService, AuditBatcher, DenialThrottle],
  exports: [AuditService, AuditBatcher, DenialThrottle],
})
export class AuditModule {}
