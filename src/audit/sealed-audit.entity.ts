/**
 * The sealed trail's tables (docs/audit-format.md): chain links (append-only), chain heads, signed
 * checkpoints (append-only), the sealer's cursor, the checkpoint signing keys and the forwarding state.
 */
import { Check, Column, Entity, Index, PrimaryColumn } from 'typeorm';

/** An event's place in its chain and the chain head after it. */
@Entity('audit_chain')
@Index('uq_audit_chain_pos', ['chain', 'pos'], { unique: true })
export class AuditChainLink {
  @PrimaryColumn('bigint', { name: 'event_id', primaryKeyConstraintName: 'PK_audit_chain' })
  eventId!: string;

  @Column('text')
  chain!: string;

  @Column('bigint')
  pos!: string;

  @Column('bytea')
  head!: Buffer;
}

/** Where each chain stands: its last link and its last checkpoint. */
@Entity('audit_chain_heads')
export class AuditChainHead {
  @PrimaryColumn('text', { primaryKeyConstraintName: 'PK_audit_chain_heads' })
  chain!: string;

  @Column('uuid', { name: 'tenant_id', nullable: true })
  tenantId!: string | null;

  @Column('bigint')
  pos!: string;

  @Column('bytea')
  head!: Buffer;

  @Column('bigint', { name: 'checkpointed_pos', default: 0 })
  checkpointedPos!: string;

  @Column('bigint', { name: 'checkpoint_seq', default: 0 })
  checkpointSeq!: string;

  @Column('bytea', { name: 'checkpoint_head', nullable: true })
  checkpointHead!: Buffer | null;
}

/** A signed checkpoint: `body` is its canonical JSON without the signature, `sig` the Ed25519 signature. */
@Entity('audit_checkpoints')
@Index('ix_audit_checkpoints_last_at', ['chain', 'lastAt'])
export class AuditCheckpoint {
  @PrimaryColumn('text', { primaryKeyConstraintName: 'PK_audit_checkpoints' })
  chain!: string;

  @PrimaryColumn('bigint', { primaryKeyConstraintName: 'PK_audit_checkpoints' })
  seq!: string;

  @Column('uuid', { name: 'tenant_id', nullable: true })
  tenantId!: string | null;

  @Column('bigint', { name: 'first_pos' })
  firstPos!: string;

  @Column('bigint', { name: 'last_pos' })
  lastPos!: string;

  @Column('timestamptz', { name: 'first_at' })
  firstAt!: Date;

  @Column('timestamptz', { name: 'last_at' })
  lastAt!: Date;

  @Column('timestamptz', { name: 'sealed_at' })
  sealedAt!: Date;

  @Column('text')
  kid!: string;

  @Column('text')
  body!: string;

  @Column('text')
  sig!: string;
}

/** The sealer's cursor: the last event it linked, in (tx_id, id) order. One row. */
@Entity('audit_seal_state')
@Check('ck_audit_seal_state_single', '"id" = 1')
export class AuditSealState {
  @PrimaryColumn('smallint', { primaryKeyConstraintName: 'PK_audit_seal_state' })
  id!: number;

  @Column('bigint', { name: 'last_tx' })
  lastTx!: string;

  @Column('bigint', { name: 'last_id' })
  lastId!: string;
}

/** A checkpoint signing key: the public JWK, and the private seed sealed by the chain's key backend. */
@Entity('audit_signing_keys')
@Index('ix_audit_signing_keys_chain', ['chain', 'validFrom'])
export class AuditSigningKey {
  @PrimaryColumn('text', { primaryKeyConstraintName: 'PK_audit_signing_keys' })
  kid!: string;

  @Column('text')
  chain!: string;

  @Column('uuid', { name: 'tenant_id', nullable: true })
  tenantId!: string | null;

  @Column('jsonb', { name: 'public_jwk' })
  publicJwk!: Record<string, unknown>;

  @Column('bytea', { name: 'sealed_key' })
  sealedKey!: Buffer;

  @Column('timestamptz', { name: 'valid_from' })
  validFrom!: Date;

  @Column('timestamptz', { name: 'valid_until', nullable: true })
  validUntil!: Date | null;

  @Column('timestamptz', { name: 'created_at', default: () => 'now()' })
  createdAt!: Date;
}

/** How far a chain's checkpoints have been forwarded (CUSTOS_AUDIT_FORWARD): the last seq delivered. */
@Entity('audit_forward_state')
export class AuditForwardState {
  @PrimaryColumn('text', { primaryKeyConstraintName: 'PK_audit_forward_state' })
  chain!: string;

  @Column('bigint', { default: 0 })
  seq!: string;
}

/**
 * A signed truncation record (docs/audit-format.md, "Retention"): what a retention run removed from a chain,
 * so that what remains still verifies. `body` is its canonical JSON without the signature. Append-only.
 */
@Entity('audit_truncations')
export class AuditTruncation {
  @PrimaryColumn('text', { primaryKeyConstraintName: 'PK_audit_truncations' })
  chain!: string;

  @PrimaryColumn('bigint', { primaryKeyConstraintName: 'PK_audit_truncations' })
  seq!: string;

  @Column('uuid', { name: 'tenant_id', nullable: true })
  tenantId!: string | null;

  @Column('bigint', { name: 'through_pos' })
  throughPos!: string;

  @Column('bigint', { name: 'next_seq' })
  nextSeq!: string;

  @Column('timestamptz')
  cutoff!: Date;

  @Column('timestamptz', { name: 'truncated_at' })
  truncatedAt!: Date;

  @Column('text')
  kid!: string;

  @Column('text')
  body!: string;

  @Column('text')
  sig!: string;
}
