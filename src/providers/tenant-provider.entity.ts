import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryColumn,
  UpdateDateColumn,
  type Relation,
} from 'typeorm';
import { Tenant } from '../tenants/tenant.entity.js';
import type { ProviderDefinition } from './provider-definition.js';

/**
 * A provider a tenant defined for its own systems, beside the built-in catalog. `definition` is the
 * validated definition with defaults applied; `version` counts saves.
 */
@Entity('tenant_providers')
@Index('uq_tenant_providers_tenant_key', ['tenantId', 'key'], { unique: true })
export class TenantProvider {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @ManyToOne(() => Tenant, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id' })
  tenant?: Relation<Tenant>;

  @Column('text')
  key!: string;

  @Column('jsonb')
  definition!: ProviderDefinition;

  @Column('int')
  version!: number;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;
}
