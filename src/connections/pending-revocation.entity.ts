import { Column, CreateDateColumn, Entity, Index, PrimaryColumn } from 'typeorm';

/**
 * A token of a revoked connection still to be revoked at the provider (RFC 7009). `token` is the sealed
 * envelope moved from the connection row (same binding), erased when revoked or given up on. `position`
 * orders a connection's tokens: the refresh token first.
 */
@Entity('pending_revocations')
@Index('ix_pending_revocations_due', ['nextAttemptAt'])
export class PendingRevocation {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @Column('uuid', { name: 'connection_id' })
  connectionId!: string;

  @Column('text')
  provider!: string;

  @Column('text', { name: 'token_type' })
  tokenType!: 'refresh_token' | 'access_token';

  @Column('bytea')
  token!: Buffer;

  @Column('int')
  position!: number;

  @Column('int', { default: 0 })
  attempts!: number;

  @Column('timestamptz', { name: 'next_attempt_at', default: () => 'now()' })
  nextAttemptAt!: Date;

  @Column('text', { name: 'last_error', nullable: true })
  lastError!: string | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}
