import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  PrimaryColumn,
  UpdateDateColumn,
  VersionColumn,
  JoinColumn,
  ManyToOne,
  type Relation,
} from 'typeorm';
import { DataKey } from '../crypto/data-key.entity.js';
import { Tenant } from '../tenants/tenant.entity.js';
import type { ConnectionStatus, ConnectionType } from './connection.types.js';

/** One user's credential for one provider. Secret columns hold sealed envelopes, never plaintext. */
@Entity('connections')
@Index('uq_connections_live', ['tenantId', 'userId', 'provider'], {
  unique: true,
  where: '"revoked_at" IS NULL',
})
@Index('ix_connections_tenant_user', ['tenantId', 'userId'])
export class Connection {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @ManyToOne(() => Tenant, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id' })
  tenant?: Relation<Tenant>;

  @ManyToOne(() => DataKey, { onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'data_key_id' })
  dataKey?: Relation<DataKey>;

  @Column('text', { name: 'user_id' })
  userId!: string;

  @Column('text')
  provider!: string;

  @Column('text')
  type!: ConnectionType;

  @Column('text')
  status!: ConnectionStatus;

  @Column('text', { array: true, default: () => "'{}'" })
  scopes!: string[];

  @Column('timestamptz', { name: 'expires_at', nullable: true })
  expiresAt!: Date | null;

  @Column('uuid', { name: 'data_key_id', nullable: true })
  dataKeyId!: string | null;

  /** The access token (oauth2) or the API key (api_key), sealed. Null once revoked. */
  @Column('bytea', { name: 'secret', nullable: true })
  secret!: Buffer | null;

  @Column('bytea', { name: 'refresh_token', nullable: true })
  refreshToken!: Buffer | null;

  @VersionColumn()
  version!: number;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;

  /** When the access token should be refreshed ahead of its expiry (see refresh-schedule.ts). */
  @Index('ix_connections_refresh_due', { where: '"refresh_due_at" IS NOT NULL' })
  @Column('timestamptz', { name: 'refresh_due_at', nullable: true })
  refreshDueAt!: Date | null;

  /** Consecutive failed refreshes, and when the next attempt may run (backoff or the provider's Retry-After). */
  @Column('int', { name: 'refresh_failures', default: 0 })
  refreshFailures!: number;

  @Column('timestamptz', { name: 'refresh_retry_at', nullable: true })
  refreshRetryAt!: Date | null;

  /** A refresh in progress holds this lease (a crash leaves it to expire). */
  @Column('timestamptz', { name: 'refresh_lease_until', nullable: true })
  refreshLeaseUntil!: Date | null;

  @Column('text', { name: 'refresh_lease_owner', nullable: true })
  refreshLeaseOwner!: string | null;

  /** The provider's id of the connected account (the ID token's `sub`), when the provider says. */
  @Column('text', { name: 'external_account_id', nullable: true })
  externalAccountId!: string | null;

  @Column('timestamptz', { name: 'revoked_at', nullable: true })
  revokedAt!: Date | null;
}
