import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryColumn } from 'typeorm';

/**
 * A tenant's own key backend (BYOK): an AWS KMS key or a Vault Transit key. Rows are never changed: a new
 * configuration is a new row, so a data key always names the exact configuration that wrapped it. Settings
 * are the non-secret part; the credentials (AWS secret key, Vault token or AppRole secret id) are sealed under
 * a data key wrapped by the managed root keyring, and never returned. The managed backend has no row.
 */
@Entity('tenant_key_backends')
@Index('ix_tenant_key_backends_tenant', ['tenantId', 'createdAt'])
export class TenantKeyBackend {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  // Named, not imported: tenants seal with data keys, so crypto/ must not import tenants/ (no folder cycle).
  @ManyToOne('Tenant', { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id' })
  tenant?: unknown;

  @Column('text')
  type!: 'aws-kms' | 'vault-transit';

  @Column('jsonb')
  settings!: Record<string, unknown>;

  /** The managed-backend-wrapped key that seals `secret`; null when the configuration has no credentials. */
  @Column('bytea', { name: 'secret_wrapped_key', nullable: true })
  secretWrappedKey!: Buffer | null;

  @Column('bytea', { name: 'secret', nullable: true })
  secret!: Buffer | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  /** Set once no data key is wrapped by it any more (after a migration away); its credentials are erased. */
  @Column('timestamptz', { name: 'retired_at', nullable: true })
  retiredAt!: Date | null;
}
