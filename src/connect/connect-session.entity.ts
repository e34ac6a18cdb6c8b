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
import { Tenant } from '../tenants/tenant.entity.js';

/**
 * What the row stores: `pending` while the link can be used (its last attempt may have been declined or have
 * failed: `lastOutcome`), `completed` once connected, `failed` when closed for good (its provider was deleted).
 */
export type ConnectSessionStatus = 'pending' | 'completed' | 'failed';

/** How the last attempt of a session whose link is still usable ended, when it did not connect. */
export type ConnectAttemptOutcome = 'declined' | 'failed';

/** A one-time link for one user to connect one provider. Only the SHA-256 of its token is stored. */
@Entity('connect_sessions')
@Index('ix_connect_sessions_tenant', ['tenantId', 'createdAt'])
@Check('ck_connect_sessions_last_outcome', `"last_outcome" IN ('declined', 'failed')`)
export class ConnectSession {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @ManyToOne(() => Tenant, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id' })
  tenant?: Relation<Tenant>;

  @Index('uq_connect_sessions_token_hash', { unique: true })
  @Column('bytea', { name: 'token_hash' })
  tokenHash!: Buffer;

  @Column('text', { name: 'user_id' })
  userId!: string;

  @Column('text')
  provider!: string;

  @Column('text', { array: true, default: () => "'{}'" })
  scopes!: string[];

  @Column('text', { name: 'return_to', nullable: true })
  returnTo!: string | null;

  @Column('text')
  status!: ConnectSessionStatus;

  @Column('text', { name: 'created_by_type' })
  createdByType!: string;

  @Column('text', { name: 'created_by_id', nullable: true })
  createdById!: string | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Index('ix_connect_sessions_expires_at')
  @Column('timestamptz', { name: 'expires_at' })
  expiresAt!: Date;

  @Column('timestamptz', { name: 'completed_at', nullable: true })
  completedAt!: Date | null;

  /** First time the link was opened. */
  @Column('timestamptz', { name: 'opened_at', nullable: true })
  openedAt!: Date | null;

  /** SHA-256 of the pending authorization request's `state`; cleared when the callback uses it. */
  @Index('uq_connect_sessions_state_hash', { unique: true, where: '"state_hash" IS NOT NULL' })
  @Column('bytea', { name: 'state_hash', nullable: true })
  stateHash!: Buffer | null;

  /** SHA-256 of the browser-binding cookie set when the authorization request started. */
  @Column('bytea', { name: 'browser_hash', nullable: true })
  browserHash!: Buffer | null;

  /** The PKCE verifier and nonce of the pending authorization request, sealed under the tenant's data key. */
  @Column('bytea', { name: 'flow_secrets', nullable: true })
  flowSecrets!: Buffer | null;

  /** The connection the session created. */
  @Column('uuid', { name: 'connection_id', nullable: true })
  connectionId!: string | null;

  /** SHA-256 of the pending sign-in request's `state` at the tenant's identity provider (connectLogin). */
  @Index('uq_connect_sessions_login_state_hash', { unique: true, where: '"login_state_hash" IS NOT NULL' })
  @Column('bytea', { name: 'login_state_hash', nullable: true })
  loginStateHash!: Buffer | null;

  /** The pending sign-in's PKCE verifier, nonce, browser binding and link, sealed under the tenant's data key. */
  @Column('bytea', { name: 'login_secrets', nullable: true })
  loginSecrets!: Buffer | null;

  /** SHA-256 of the cookie of the browser whose person signed in as the session's user. */
  @Column('bytea', { name: 'verified_browser_hash', nullable: true })
  verifiedBrowserHash!: Buffer | null;

  /** Why the last attempt failed (stable code), while the session stays usable until it expires. */
  @Column('text', { name: 'last_error', nullable: true })
  lastError!: string | null;

  /** How the last attempt ended when it did not connect (declined at the provider, or failed); null otherwise. */
  @Column('text', { name: 'last_outcome', nullable: true })
  lastOutcome!: ConnectAttemptOutcome | null;
}
