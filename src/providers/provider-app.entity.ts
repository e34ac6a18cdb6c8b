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

/**
 * A tenant's own OAuth app at a provider: the client the connect flow authorizes with and that refreshes and
 * revokes tokens. The client secret and private key are sealed envelopes under the tenant's data key.
 */
@Entity('provider_apps')
@Index('uq_provider_apps_tenant_provider', ['tenantId', 'provider'], { unique: true })
export class ProviderApp {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @ManyToOne(() => Tenant, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id' })
  tenant?: Relation<Tenant>;

  @Column('text')
  provider!: string;

  @Column('text', { name: 'client_id' })
  clientId!: string;

  @Column('bytea', { name: 'client_secret', nullable: true })
  clientSecret!: Buffer | null;

  @Column('bytea', { name: 'private_key', nullable: true })
  privateKey!: Buffer | null;

  /** Scopes requested when a connect session names none. Empty: the provider's default scopes. */
  @Column('text', { array: true, default: () => "'{}'" })
  scopes!: string[];

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;
}
