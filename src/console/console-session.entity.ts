import {
  Check,
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryColumn,
  type Relation,
} from 'typeorm';
import type { AdminRole } from '../common/admin-access.js';
import { AdminKey } from '../identity/admin-key.entity.js';
import { Tenant } from '../tenants/tenant.entity.js';

/**
 * A console sign-in. The cookie holds a random token; only its SHA-256 is stored. The admin key that signed in
 * is checked on every request (revoked: the session is over); deleting the key or its tenant deletes the row.
 */
@Entity('console_sessions')
@Check('ck_console_sessions_role', `"role" IN ('platform_admin', 'admin', 'auditor')`)
export class ConsoleSession {
  @PrimaryColumn('uuid', { primaryKeyConstraintName: 'PK_console_sessions' })
  id!: string;

  @Index('uq_console_sessions_token_hash', { unique: true })
  @Column('bytea', { name: 'token_hash' })
  tokenHash!: Buffer;

  @Index('ix_console_sessions_admin_key')
  @Column('uuid', { name: 'admin_key_id' })
  adminKeyId!: string;

  @ManyToOne(() => AdminKey, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'admin_key_id', foreignKeyConstraintName: 'FK_console_sessions_admin_key' })
  adminKey?: Relation<AdminKey>;

  /** Null for a platform admin's session. */
  @Index('ix_console_sessions_tenant')
  @Column('uuid', { name: 'tenant_id', nullable: true })
  tenantId!: string | null;

  @ManyToOne(() => Tenant, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id', foreignKeyConstraintName: 'FK_console_sessions_tenant' })
  tenant?: Relation<Tenant>;

  @Column('text')
  role!: AdminRole;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  /** Moved on by every request; a session idle for longer than the idle limit is over. */
  @Column('timestamptz', { name: 'last_seen_at', default: () => 'now()' })
  lastSeenAt!: Date;

  /** The absolute limit, from sign-in. */
  @Column('timestamptz', { name: 'expires_at' })
  expiresAt!: Date;
}
