import { Column, Entity, Index, PrimaryColumn } from 'typeorm';

/**
 * Client assertions (private_key_jwt) already accepted, by connector and SHA-256 of `jti`, kept until the
 * assertion would have expired anyway. The primary key makes single use hold across replicas. No foreign
 * key: rows outlive a deleted connector harmlessly until they are pruned.
 */
@Entity('client_assertions_used')
@Index('ix_client_assertions_used_expires_at', ['expiresAt'])
export class UsedAssertion {
  @PrimaryColumn('uuid', { name: 'connector_id' })
  connectorId!: string;

  @PrimaryColumn('bytea', { name: 'jti_hash' })
  jtiHash!: Buffer;

  @Column('timestamptz', { name: 'expires_at' })
  expiresAt!: Date;
}
