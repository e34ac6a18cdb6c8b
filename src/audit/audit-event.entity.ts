import { Column, Entity, Index, PrimaryColumn, PrimaryGeneratedColumn } from 'typeorm';

export type AuditOutcome = 'allowed' | 'denied' | 'failed';
export type ActorType = 'admin_key' | 'connector' | 'user' | 'system';

/**
 * Append-only: the database refuses UPDATE, DELETE and TRUNCATE on this table (see the migrations).
 * Partitioned by month of occurred_at (UTC), so retention drops whole months (migration AuditPartitions); the
 * primary key therefore includes occurred_at, while id alone stays unique (one identity sequence).
 */
@Entity('audit_events')
@Index('ix_audit_events_tenant_id', ['tenantId', 'id'])
@Index('ix_audit_events_tx', ['txId', 'id'])
// A connection's latest released credential (the portal's "last used"), one index probe per partition.
@Index('ix_audit_events_connection_release', ['connectionId', 'occurredAt'], {
  where: `"action" = 'token.exchange' AND "outcome" = 'allowed'`,
})
export class AuditEvent {
  @PrimaryGeneratedColumn('identity', {
    type: 'bigint',
    generatedIdentity: 'ALWAYS',
    primaryKeyConstraintName: 'PK_audit_events',
  })
  id!: string;

  @Column('uuid', { name: 'tenant_id', nullable: true })
  tenantId!: string | null;

  @PrimaryColumn('timestamptz', {
    name: 'occurred_at',
    default: () => 'now()',
    primaryKeyConstraintName: 'PK_audit_events',
  })
  occurredAt!: Date;

  @Column('text')
  action!: string;

  @Column('text')
  outcome!: AuditOutcome;

  @Column('text', { name: 'actor_type' })
  actorType!: ActorType;

  @Column('text', { name: 'actor_id', nullable: true })
  actorId!: string | null;

  @Column('text', { name: 'subject_user_id', nullable: true })
  subjectUserId!: string | null;

  @Column('uuid', { name: 'connection_id', nullable: true })
  connectionId!: string | null;

  @Column('text', { nullable: true })
  provider!: string | null;

  @Column('text', { name: 'request_id', nullable: true })
  requestId!: string | null;

  @Column('jsonb', { default: () => "'{}'" })
  details!: Record<string, unknown>;

  /**
   * The inserting transaction's id (pg_current_xact_id()): the sealer takes events in (tx_id, id) order, and
   * only those whose transactions are older than every transaction still running (commit-safe order).
   */
  @Column('bigint', { name: 'tx_id', default: () => 'custos_current_tx()' })
  txId!: string;
}
