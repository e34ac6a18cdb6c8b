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
 * A console sign-in. The cookie holds a random token; only its SHA-256 is stored. A session belongs to the admin
 * key that signed in, checked on every request (revoked: the session is over), or to a user who signed in
 * through the tenant's identity provider (single sign-on), checked against the tenant's consoleLogin on every
 * request; deleting the key or its tenant deletes the row.
 */
@Entity('console_sessions')
@Check('ck_console_sessions_role', `"role" IN ('platform_admin', 'admin', 'auditor')`)
@Check(
  'ck_console_sessions_principal',
  `("admin_key_id" IS NOT NULL AND "user_id" IS NULL AND "identity_provider" IS NULL) OR ("admin_key_id" IS NULL AND "user_id" IS NOT NULL AND "identity_provider" IS NOT NULL AND "tenant_id" IS NOT NULL AND "role" IN ('admin', 'auditor'))`,
)
export class ConsoleSession {
  @PrimaryColumn('uuid', { primaryKeyConstraintName: 'PK_console_sessions' })
  id!: string;

  @Index('uq_console_sessions_token_hash', { unique: true })
  @Column('bytea', { name: 'token_hash' })
  tokenHash!: Buffer;

  @Index('ix_console_sessions_admin_key')
  /** Null for a single sign-on session. */
  @Column('uuid', { name: 'admin_key_id', nullable: true })
  adminKeyId!: string | null;

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

  /** A single sign-on session's user (the identity provider's user claim); null for an admin key's. */
  @Column('text', { name: 'user_id', nullable: true })
  userId!: string | null;

  /** The identity provider a single sign-on session's user signed in at. */
  @Column('text', { name: 'identity_provider', nullable: true })
  identityProvider!: string | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  /** Moved on by every request; a session idle for longer than the idle limit is over. */
  @Column('timestamptz', { name: 'last_seen_at', default: () => 'now()' })
  lastSeenAt!: Date;

  /** The absolute limit, from sign-in. */
  @Column('timestamptz', { name: 'expires_at' })
  expiresAt!: Date;
}
