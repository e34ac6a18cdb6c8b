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
import type { SigningAlgorithm } from '../common/jwt-policy.js';
import type { PublicJwks } from './jwk.js';

/** An identity provider a tenant trusts to prove users: tokens from `issuer`, signed by its keys, for `audiences`. */
@Entity('identity_providers')
@Index('uq_identity_providers_tenant_name', ['tenantId', 'name'], { unique: true })
@Index('uq_identity_providers_tenant_issuer', ['tenantId', 'issuer'], { unique: true })
export class IdentityProvider {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @ManyToOne(() => Tenant, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id' })
  tenant?: Relation<Tenant>;

  @Column('text')
  name!: string;

  @Column('text')
  issuer!: string;

  @Column('jsonb', { nullable: true })
  jwks!: PublicJwks | null;

  @Column('text', { name: 'jwks_uri', nullable: true })
  jwksUri!: string | null;

  @Column('text', { array: true })
  audiences!: string[];

  /** The claim that names the user (usually `sub`). */
  @Column('text', { name: 'user_claim' })
  userClaim!: string;

  @Column('text', { array: true })
  algorithms!: SigningAlgorithm[];

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;
}
