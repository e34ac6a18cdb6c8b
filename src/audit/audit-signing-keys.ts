/**
 * The checkpoint signing keys of each chain (Ed25519): generated when a chain first needs one, the private
 * seed sealed by the chain's key backend (SigningKeyProtection), replaced when they reach
 * CUSTOS_AUDIT_SIGNING_KEY_ROTATION_DAYS with the next key published CUSTOS_AUDIT_SIGNING_KEY_OVERLAP_HOURS
 * before it signs, and published, all of them with their validity windows, as a JWKS. An old key stays in
 * the JWKS for ever: it still verifies the checkpoints it signed. A key that can no longer be opened at all is
 * replaced at once (audited as audit.signing_key.replaced).
 */
import crypto from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
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
    const kid = crypto.randomUUID();
    const seed = crypto.randomBytes(32);
    let jwk: AuditJwk;
    let sealedKey: Buffer;
    try {
      jwk = publicJwk(ed25519FromSeed(seed), kid, validFrom, null);
      sealedKey = await this.protection.seal(tenantId, kid, seed);
    } finally {
      seed.fill(0);
    }
    const { validFrom: _from, validUntil: _until, ...stored } = jwk;
    await this.db.transaction(async (m) => {
      await this.rows.lockChain(m, chain);
      const keys = await this.rows.forChain(chain, m);
      const newest = keys[keys.length - 1];
      if (previous === null ? keys.length > 0 : newest?.kid !== previous) return;
      await this.rows.insert(m, { kid, chain, tenantId, publicJwk: stored, sealedKey, validFrom });
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
