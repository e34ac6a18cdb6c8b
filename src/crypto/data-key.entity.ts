import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  PrimaryColumn,
  JoinColumn,
  ManyToOne,
  type Relation,
} from 'typeorm';
import type { KeyBackendType } from './key-backend.js';
import { TenantKeyBackend } from './tenant-key-backend.entity.js';

/** A tenant's data key for one epoch, stored only wrapped by the tenant's key backend. */
@Entity('data_keys')
@Index('uq_data_keys_tenant_epoch', ['tenantId', 'epoch'], { unique: true })
export class DataKey {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  // Named, not imported: tenants seal with data keys, so crypto/ must not import tenants/ (no folder cycle).
  @ManyToOne('Tenant', { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id' })
  tenant?: unknown;

  @Column('int')
  epoch!: number;

  @Column('text', { name: 'backend_type' })
  backendType!: KeyBackendType;

  /** The tenant key-backend configuration that wrapped it; null for the managed root keyring. */
  @Column('uuid', { name: 'backend_id', nullable: true })
  backendId!: string | null;

  @ManyToOne(() => TenantKeyBackend, { onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'backend_id' })
  backend?: Relation<TenantKeyBackend>;

  @Column('text', { name: 'key_ref' })
  keyRef!: string;

  @Column('bytea')
  wrapped!: Buffer;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column('timestamptz', { name: 'retired_at', nullable: true })
  retiredAt!: Date | null;
}
