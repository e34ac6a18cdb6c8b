import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import type { KeyBackendType } from '../crypto/key-backend.js';

@Entity('tenants')
export class Tenant {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('text')
  name!: string;

  @Column('text', { name: 'key_backend_type', default: 'managed' })
  keyBackendType!: KeyBackendType;

  /** The current tenant_key_backends row; null for the managed backend (no foreign key: the two tables refer to each other). */
  @Column('uuid', { name: 'key_backend_id', nullable: true })
  keyBackendId!: string | null;

  /** Where a connect flow may send the browser back to: exact matches only. */
  @Column('text', { name: 'allowed_return_urls', array: true, default: () => "'{}'" })
  allowedReturnUrls!: string[];

  /** Where signed event notifications go (connection.created, …); null for none. */
  @Column('text', { name: 'webhook_url', nullable: true })
  webhookUrl!: string | null;

  /** The HMAC-SHA256 signing secret of those notifications, sealed under the tenant's data key. */
  @Column('bytea', { name: 'webhook_secret', nullable: true })
  webhookSecret!: Buffer | null;

  /** Sign-in at one of the tenant's identity providers before connecting: `{identityProvider, clientId}`. */
  @Column('jsonb', { name: 'connect_login', nullable: true })
  connectLogin!: { identityProvider: string; clientId: string } | null;

  /** That OIDC client's secret, sealed under the tenant's data key. */
  @Column('bytea', { name: 'connect_login_secret', nullable: true })
  connectLoginSecret!: Buffer | null;

  /**
   * When a platform admin asked for the tenant's deletion; null while it is active. From then on its
   * credentials are refused, and the shredding job deletes the row (tenant-deletion.service.ts).
   */
  /** Hand out a stored grant wider than a connector's allowed scopes when the provider cannot narrow it. */
  @Column('boolean', { name: 'scope_pass_through', default: false })
  scopePassThrough!: boolean;

  @Column('timestamptz', { name: 'deletion_requested_at', nullable: true })
  deletionRequestedAt!: Date | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;
}
