/** Every statement on audit_signing_keys: the checkpoint signing keys of each chain. */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';

export interface SigningKeyRow {
  kid: string;
  chain: string;
  /**
   * Whose key backend seals the private part: the chain's tenant, or null for the platform's root keyring (the
   * platform chain's keys, and those of a tenant chain whose tenant is deleted; the chain keeps its id).
   */
  tenant_id: string | null;
  public_jwk: Record<string, unknown>;
  sealed_key: Buffer;
  valid_from: Date;
  valid_until: Date | null;
}

export interface NewSigningKey {
  kid: string;
  chain: string;
  tenantId: string | null;
  publicJwk: Record<string, unknown>;
  sealedKey: Buffer;
  validFrom: Date;
}

@Injectable()
export class AuditSigningKeysRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** A chain's keys, oldest first. */
  forChain(chain: string, m?: EntityManager): Promise<SigningKeyRow[]> {
    return (m ?? this.db.manager).query(
      `SELECT kid, chain, tenant_id, public_jwk, sealed_key, valid_from, valid_until
         FROM audit_signing_keys WHERE chain = $1 ORDER BY valid_from, kid`,
      [chain],
    );
  }

  /** Serialises key creation for one chain within the caller's transaction. */
  async lockChain(m: EntityManager, chain: string): Promise<void> {
    await m.query(`SELECT pg_advisory_xact_lock(hashtextextended('custos-audit-key:' || $1, 0))`, [chain]);
  }

  async insert(m: EntityManager, k: NewSigningKey): Promise<void> {
    await m.query(
      `INSERT INTO audit_signing_keys (kid, chain, tenant_id, public_jwk, sealed_key, valid_from)
       VALUES ($1, $2, $3, $4, $5, $6)`,
      [k.kid, k.chain, k.tenantId, JSON.stringify(k.publicJwk), k.sealedKey, k.validFrom],
    );
  }

  /** Replaces a key's sealed private part with one the platform's root keyring seals (tenant_id NULL). */
  async reprotect(m: EntityManager, kid: string, sealedKey: Buffer): Promise<void> {
    await m.query('UPDATE audit_signing_keys SET sealed_key = $2, tenant_id = NULL WHERE kid = $1', [
      kid,
      sealedKey,
    ]);
  }

  /** Ends a key's signing window (when its successor takes over). */
  async retire(m: EntityManager, kid: string, until: Date): Promise<void> {
    await m.query('UPDATE audit_signing_keys SET valid_until = $2 WHERE kid = $1', [kid, until]);
  }
}
