import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryColumn,
  type Relation,
} from 'typeorm';
import { Tenant } from '../tenants/tenant.entity.js';

/**
 * An end user's "my connections" portal: a one-time link (only the SHA-256 of its token is stored) that, once
 * opened, becomes a browser session held by a `__Host-` cookie (only its SHA-256 is stored), idle-limited and
 * with an absolute end. With the tenant's connectLogin, the session shows nothing until the person has signed
 * in at the tenant's identity provider as the session's user.
 */
@Entity('portal_sessions')
export class PortalSession {
  @PrimaryColumn('uuid', { primaryKeyConstraintName: 'PK_portal_sessions' })
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @ManyToOne(() => Tenant, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id', foreignKeyConstraintName: 'FK_portal_sessions_tenant' })
  tenant?: Relation<Tenant>;

  @Column('text', { name: 'user_id' })
  userId!: string;

  @Index('uq_portal_sessions_token_hash', { unique: true })
  @Column('bytea', { name: 'token_hash' })
  tokenHash!: Buffer;

  /** An address of the tenant's app (on its allow-list) that the pages link back to. */
  @Column('text', { name: 'return_to', nullable: true })
  returnTo!: string | null;

  @Column('text', { name: 'created_by_type' })
  createdByType!: string;

  @Column('text', { name: 'created_by_id', nullable: true })
  createdById!: string | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  /** Until when the link can be opened (once). */
  @Column('timestamptz', { name: 'link_expires_at' })
  linkExpiresAt!: Date;

  @Column('timestamptz', { name: 'opened_at', nullable: true })
  openedAt!: Date | null;

  /** SHA-256 of the browser session's cookie; set when the link is opened, replaced at sign-in, cleared at sign-out. */
  @Index('uq_portal_sessions_browser_hash', { unique: true, where: '"browser_hash" IS NOT NULL' })
  @Column('bytea', { name: 'browser_hash', nullable: true })
  browserHash!: Buffer | null;

  /** The browser session's last request: it ends after a while without one. */
  @Column('timestamptz', { name: 'last_seen_at', nullable: true })
  lastSeenAt!: Date | null;

  /** The end of the link (until opened), then of the browser session whatever its activity; pruned after. */
  @Index('ix_portal_sessions_expires_at')
  @Column('timestamptz', { name: 'expires_at' })
  expiresAt!: Date;

  /** When the person signed in at the tenant's identity provider as the session's user (connectLogin). */
  @Column('timestamptz', { name: 'signed_in_at', nullable: true })
  signedInAt!: Date | null;

  /** SHA-256 of the pending sign-in's `state` at the tenant's identity provider. */
  @Index('uq_portal_sessions_login_state_hash', { unique: true, where: '"login_state_hash" IS NOT NULL' })
  @Column('bytea', { name: 'login_state_hash', nullable: true })
  loginStateHash!: Buffer | null;

  /** The pending sign-in's PKCE verifier and nonce, sealed under the tenant's data key. */
  @Column('bytea', { name: 'login_secrets', nullable: true })
  loginSecrets!: Buffer | null;
}
