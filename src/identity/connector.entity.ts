import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryColumn,
  UpdateDateColumn,
  VersionColumn,
  type Relation,
} from 'typeorm';
import { Tenant } from '../tenants/tenant.entity.js';
import type { PublicJwks } from './jwk.js';

export type ConnectorAuthMethod = 'client_secret_basic' | 'private_key_jwt';
/** `user_token`: the connector presents the user's token; `trusted`: the tenant trusts it to name the user. */
export type ConnectorDelegation = 'user_token' | 'trusted';

/**
 * A registered client of a tenant (an MCP server or workload) that exchanges tokens for users' credentials.
 * A client secret is stored only as its SHA-256; private_key_jwt connectors hold public keys or a JWKS URL.
 */
@Entity('connectors')
@Index('ix_connectors_tenant_id', ['tenantId'])
export class Connector {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @ManyToOne(() => Tenant, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id' })
  tenant?: Relation<Tenant>;

  @Index('uq_connectors_client_id', { unique: true })
  @Column('text', { name: 'client_id' })
  clientId!: string;

  @Column('text')
  name!: string;

  @Column('text', { nullable: true })
  owner!: string | null;

  @Column('text')
  delegation!: ConnectorDelegation;

  @Column('text', { name: 'auth_method' })
  authMethod!: ConnectorAuthMethod;

  /** SHA-256 of the client secret (client_secret_basic only). */
  @Column('bytea', { name: 'secret_hash', nullable: true })
  secretHash!: Buffer | null;

  @Column('jsonb', { nullable: true })
  jwks!: PublicJwks | null;

  @Column('text', { name: 'jwks_uri', nullable: true })
  jwksUri!: string | null;

  @Column('text', { name: 'allowed_providers', array: true })
  allowedProviders!: string[];

  /** Provider key → scopes the connector may ask for; a provider absent here is not narrowed further. */
  @Column('jsonb', { name: 'allowed_scopes', default: () => "'{}'" })
  allowedScopes!: Record<string, string[]>;

  @VersionColumn()
  version!: number;

  @Column('timestamptz', { name: 'disabled_at', nullable: true })
  disabledAt!: Date | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;
}
