/**
 * The checkpoint signing keys of each chain (Ed25519): generated when a chain first needs one, the private
 * seed sealed by the chain's key backend (SigningKeyProtection), replaced when they reach
 * CUSTOS_AUDIT_SIGNING_KEY_ROTATION_DAYS with the next key published CUSTOS_AUDIT_SIGNING_KEY_OVERLAP_HOURS
 * before it signs, and published, all of them with their validity windows, as a JWKS. An old key stays in
 * the JWKS for ever: it still verifies the checkpoints it signed. A key that can no longer be opened at all is
 * replaced at once (audited as audit.signing_key.replaced). When a tenant is deleted, its chain's keys pass to
 * the platform's protection (transferToPlatform), and so do the chain's later keys (SigningKeyProtector.protectorOf).
 */
import crypto from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { CustosException } from '../common/errors.js';
import { CONFIG, type Config } from '../config/config.js';
import { AuditService, systemActor } from './audit.service.js';
import { ed25519FromSeed, publicJwk, tenantOfChain, type AuditJwk } from './audit-format.js';
import { AuditSigningKeysRepository, type SigningKeyRow } from './audit-signing-keys.repository.js';
import { SigningKeyProtection } from './signing-key-protector.js';

const HOUR_MS = 3_600_000;

/** Errors opening a signing key that no retry will cure. */
const UNRECOVERABLE = new Set(['key_invalid', 'decryption_failed']);

@Injectable()
export class AuditSigningKeys {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AuditSigningKeysRepository) private readonly rows: AuditSigningKeysRepository,
    @Inject(SigningKeyProtection) private readonly protection: SigningKeyProtection,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(CONFIG) private readonly config: Config,
  ) {}

  /**
   * The key that signs the chain's checkpoints now (creating the chain's first key, or publishing the next
   * one when the current one is due for replacement), with its private part opened.
   */
  async signingKey(
    chain: string,
    now = new Date(),
    retried = false,
  ): Promise<{ kid: string; key: crypto.KeyObject }> {
    let keys = await this.rows.forChain(chain);
    let current = this.currentOf(keys, now);
    const rotateAfterMs =
      this.config.auditSigningKeyRotationDays * 24 * HOUR_MS -
      this.config.auditSigningKeyOverlapHours * HOUR_MS;
    if (!current) {
      await this.create(chain, now, null);
      keys = await this.rows.forChain(chain);
      current = this.currentOf(keys, now);
      if (!current) throw new Error('no audit signing key after creating one');
    } else if (
      now.getTime() - current.valid_from.getTime() >= rotateAfterMs &&
      !keys.some((k) => k.valid_from > current!.valid_from)
    ) {
      const next = new Date(now.getTime() + this.config.auditSigningKeyOverlapHours * HOUR_MS);
      await this.create(chain, next, current.kid);
      if (next <= now) return this.signingKey(chain, now);
    }
    let seed: Buffer;
    try {
      seed = await this.protection.open(current.tenant_id, current.kid, current.sealed_key);
    } catch (err) {
      // A key that can never be opened again (its wrapping is corrupt, or the root keyring that wrapped it is
      // gone) would stop the chain for good: it is replaced at once, and that is audited. A key backend that
      // is only unreachable is waited for (the error goes up; the sealer retries).
      if (!(err instanceof CustosException) || !UNRECOVERABLE.has(err.code) || retried) throw err;
      await this.create(chain, now, current.kid, err.code);
      return this.signingKey(chain, now, true);
    }
    try {
      return { kid: current.kid, key: ed25519FromSeed(seed) };
    } finally {
      seed.fill(0);
    }
  }

  /** The newest key whose window has begun and not ended. */
  private currentOf(keys: SigningKeyRow[], now: Date): SigningKeyRow | undefined {
    let current: SigningKeyRow | undefined;
    for (const k of keys) {
      if (k.valid_from <= now && (k.valid_until === null || k.valid_until > now)) current = k;
    }
    return current;
  }

  /**
   * Generates a key valid from `validFrom` and seals it; when it succeeds `previous`, that key's window ends
   * where the new one's begins. Two processes racing each create one; the second to commit sees the first's and
   * discards its own.
   */
  private async create(
    chain: string,
    validFrom: Date,
    previous: string | null,
    replacedBecause?: string,
  ): Promise<void> {
    const tenantId = tenantOfChain(chain);
    // A tenant being deleted, or gone, no longer protects its chain's keys: the platform does.
    const protectedBy = tenantId === null ? null : await this.protection.protectorOf(tenantId);
    const kid = crypto.randomUUID();
    const seed = crypto.randomBytes(32);
    let jwk: AuditJwk;
    let sealedKey: Buffer;
    try {
      jwk = publicJwk(ed25519FromSeed(seed), kid, validFrom, null);
      sealedKey = await this.protection.seal(protectedBy, kid, seed);
    } finally {
      seed.fill(0);
    }
    const { validFrom: _from, validUntil: _until, ...stored } = jwk;
    await this.db.transaction(async (m) => {
      await this.rows.lockChain(m, chain);
      const keys = await this.rows.forChain(chain, m);
      const newest = keys[keys.length - 1];
      if (previous === null ? keys.length > 0 : newest?.kid !== previous) return;
      // The chain passed to the platform's protection meanwhile (its tenant was shredded): this key, sealed by
      // the tenant, is dropped, and the caller's next turn makes one the platform protects.
      if (protectedBy !== null && newest?.tenant_id === null) return;
      await this.rows.insert(m, {
        kid,
        chain,
        tenantId: protectedBy,
        publicJwk: stored,
        sealedKey,
        validFrom,
      });
      if (previous) await this.rows.retire(m, previous, validFrom);
      await this.audit.record(
        {
          tenantId,
          action: replacedBecause ? 'audit.signing_key.replaced' : 'audit.signing_key.created',
          outcome: 'allowed',
          actor: systemActor,
          details: {
            kid,
            validFrom: validFrom.toISOString(),
            ...(previous ? { replaces: previous } : {}),
            ...(replacedBecause ? { reason: replacedBecause } : {}),
          },
        },
        m,
      );
    });
  }

  /**
   * Hands a tenant chain's signing keys to the platform's protection, in the caller's transaction: the tenant is
   * being shredded, and its data keys go in the same transaction. Each key whose window has not ended is opened
   * under the tenant's key backend and wrapped again by the platform's root keyring, keeping its kid and
   * window, so the chain goes on being sealed, and verified, as before (audited in the chain as
   * audit.signing_key.reprotected). A key whose window has ended never signs again: its private part goes with
   * the tenant's data keys. Keys that cannot be opened (the tenant's key backend unreachable or refusing) are
   * listed and left: the caller decides whether to wait; left, such a key is replaced by the sealer the next
   * time it is needed (audit.signing_key.replaced), by a key the platform protects.
   */
  async transferToPlatform(
    m: EntityManager,
    chain: string,
    now = new Date(),
  ): Promise<{ moved: string[]; unopenable: { kid: string; code: string }[] }> {
    const moved: string[] = [];
    const unopenable: { kid: string; code: string }[] = [];
    await this.rows.lockChain(m, chain);
    for (const k of await this.rows.forChain(chain, m)) {
      if (k.tenant_id === null || (k.valid_until !== null && k.valid_until <= now)) continue;
      let seed: Buffer;
      try {
        seed = await this.protection.open(k.tenant_id, k.kid, k.sealed_key);
      } catch (err) {
        if (!(err instanceof CustosException)) throw err;
        unopenable.push({ kid: k.kid, code: err.code });
        continue;
      }
      try {
        await this.rows.reprotect(m, k.kid, await this.protection.seal(null, k.kid, seed));
      } finally {
        seed.fill(0);
      }
      await this.audit.record(
        {
          tenantId: tenantOfChain(chain),
          action: 'audit.signing_key.reprotected',
          outcome: 'allowed',
          actor: systemActor,
          details: { kid: k.kid, protectedBy: 'platform', reason: 'tenant_deleted' },
        },
        m,
      );
      moved.push(k.kid);
    }
    return { moved, unopenable };
  }

  /** The chain's public keys with their windows, oldest first. */
  async jwks(chain: string): Promise<{ keys: AuditJwk[] }> {
    const keys = await this.rows.forChain(chain);
    return {
      keys: keys.map((k) => ({
        ...(k.public_jwk as Omit<AuditJwk, 'validFrom' | 'validUntil'>),
        validFrom: k.valid_from.toISOString(),
        ...(k.valid_until ? { validUntil: k.valid_until.toISOString() } : {}),
      })),
    };
  }
}
