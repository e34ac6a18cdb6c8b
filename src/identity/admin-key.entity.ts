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
import type { AdminRole } from '../common/admin-access.js';
import { Tenant } from '../tenants/tenant.entity.js';

export type { AdminRole };

/** An API key Custos issued to an administrator. Only the SHA-256 of the key is stored. */
@Entity('admin_keys')
export class AdminKey {
  @PrimaryColumn('uuid')
  id!: string;

  /** Null for platform admin keys, which manage tenants but not their credentials. */
  @Column('uuid', { name: 'tenant_id', nullable: true })
  tenantId!: string | null;

  @ManyToOne(() => Tenant, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id' })
  tenant?: Relation<Tenant>;

  @Column('text')
  name!: string;

  @Column('text')
  role!: AdminRole;

  @Index('uq_admin_keys_key_hash', { unique: true })
  @Column('bytea', { name: 'key_hash' })
  keyHash!: Buffer;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column('timestamptz', { name: 'revoked_at', nullable: true })
  revokedAt!: Date | null;
}
