import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryColumn,
  type Relation,
} from 'typeorm';
import { Tenant } from '../tenants/tenant.entity.js';

/**
 * A console single sign-on started and not yet answered: the SHA-256 of its `state`, the hash of the browser's
 * cookie that started it, and its nonce and PKCE verifier sealed under the tenant's data key. The callback takes
 * the row (deletes it), so a state is used at most once.
 */
@Entity('console_sign_ins')
export class ConsoleSignIn {
  @PrimaryColumn('bytea', { name: 'state_hash', primaryKeyConstraintName: 'PK_console_sign_ins' })
  stateHash!: Buffer;

  @Index('ix_console_sign_ins_tenant')
  @Column('uuid', { name: 'tenant_id' })
  tenantId!: string;

  @ManyToOne(() => Tenant, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id', foreignKeyConstraintName: 'FK_console_sign_ins_tenant' })
  tenant?: Relation<Tenant>;

  @Column('bytea', { name: 'browser_hash' })
  browserHash!: Buffer;

  @Column('bytea')
  secrets!: Buffer;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column('timestamptz', { name: 'expires_at' })
  expiresAt!: Date;
}
