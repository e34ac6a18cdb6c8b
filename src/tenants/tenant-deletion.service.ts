/**
 * Deleting a tenant, with crypto-shredding, in two steps that each commit whole, so a crash between them
 * resumes:
 *
 * 1. `requestDeletion` (a platform admin, `DELETE /v1/tenants/{id}?confirm=<name>`), one transaction: the tenant
 *    is marked (deletion_requested_at); every credential of it stops working, as if it did not exist (admin keys
 *    and connectors are refused by the statements that authenticate them, and each connector's version moves so
 *    that the token endpoint's cached registrations are read again on their next use); its connections are
 *    revoked, their tokens queued for revocation at the provider; nothing new is sealed under its keys (crypto's
 *    sealing check); `tenant.deletion_requested` in its chain.
 * 2. `shred` (the worker, `tenants.shred-deleted`), once the queued revocations are done or given up, or the
 *    grace period is over, one transaction: the chain's audit signing keys pass to the platform's protection,
 *    then the tenant's row goes and, by ON DELETE CASCADE, its data keys and every other row of it; after the
 *    commit every process drops the tenant's cached data keys; `tenant.deleted` in the platform chain. With the
 *    wrapped data keys gone, no copy of the tenant's ciphertext (WAL, backups, a row read before) can be
 *    opened by Custos. Audit events stay (retention removes them); the chain stays sealable and its JWKS served.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { DataSource } from 'typeorm';
import { chainOf } from '../audit/audit-format.js';
import { AuditService, systemActor, type Actor } from '../audit/audit.service.js';
import { AuditSigningKeys } from '../audit/audit-signing-keys.js';
import { CommonException } from '../common/errors.js';
import { LOGGER } from '../common/logger.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import { KeyCacheBus } from '../crypto/key-cache-bus.js';
import type {
  TenantDeletionParticipant,
  TenantDeletionParticipantName,
} from './tenant-deletion-participant.js';
import { TenantsRepository, type TenantRow } from './tenants.repository.js';

/**
 * How long shredding waits for the tenant's tokens to be revoked at their providers (and for its key backend
 * to open its audit signing keys) before it goes ahead anyway: what is still queued then is dropped and
 * counted (`revocationsAbandoned`). The revocation job gives up on a token after about three hours of
 * retries, so this is only reached when a provider or the tenant's key backend stays unreachable.
 */
export const TENANT_SHRED_GRACE_MS = 24 * 3_600_000;

/** Tenants shredded per run of the job, at most. */
const SHRED_BATCH = 100;

const REQUIRED: readonly TenantDeletionParticipantName[] = ['identity', 'connections'];

export type TenantStatus = 'active' | 'deleting';

/** Where a tenant's deletion stands. A tenant that has been shredded is unknown (404), like one never created. */
export interface TenantDeletionView {
  id: string;
  name: string;
  status: TenantStatus;
  deletionRequestedAt: string | null;
  /** The tenant's tokens still waiting to be revoked at their providers. */
  pendingRevocations: number;
  /** When the tenant is shredded at the latest (the worker's next run after it), revocations done or not. */
  shredBy: string | null;
}

/** What one shredding attempt did. */
export type ShredOutcome =
  | { state: 'shredded'; counts: Record<string, number> }
  | { state: 'waiting'; reason: 'revocations_pending' | 'signing_keys_unopenable'; outstanding: number }
  | { state: 'not_deleting' };

/** Rolls the shredding transaction back: the tenant's key backend could not open its signing keys (yet). */
class ShredPostponed extends Error {
  constructor(readonly keys: number) {
    super('audit signing keys could not be opened');
  }
}

export const statusOf = (row: Pick<TenantRow, 'deletion_requested_at'>): TenantStatus =>
  row.deletion_requested_at ? 'deleting' : 'active';

@Injectable()
export class TenantDeletionService {
  private readonly participants = new Map<TenantDeletionParticipantName, TenantDeletionParticipant>();

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(TenantsRepository) private readonly tenants: TenantsRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(AuditSigningKeys) private readonly signingKeys: AuditSigningKeys,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(KeyCacheBus) private readonly keyCache: KeyCacheBus,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  /** Called by the domains above at start-up: see tenant-deletion-participant.ts. */
  registerParticipant(p: TenantDeletionParticipant): void {
    this.participants.set(p.name, p);
  }

  /** Fails closed: without every participant, a tenant's credentials could outlive its deletion. */
  private registered(): TenantDeletionParticipant[] {
    const missing = REQUIRED.filter((n) => !this.participants.has(n));
    if (missing.length > 0)
      throw new Error(`tenant deletion: no participant registered for ${missing.join(', ')}`);
    return [...this.participants.values()];
  }

  /**
   * Step 1: marks the tenant for deletion and stops its credentials, in one transaction (see the file's
   * comment). `confirmName` must be the tenant's current name, exactly. A tenant already being deleted is left
   * as it is; either way the answer is where its deletion stands.
   */
  async requestDeletion(actor: Actor, tenantId: string, confirmName: string): Promise<TenantDeletionView> {
    const participants = this.registered();
    const first = await this.db.transaction(async (m) => {
      const row = await this.tenants.lockForDeletion(m, tenantId);
      if (!row) throw new CommonException('not_found', 'Tenant not found');
      if (confirmName !== row.name) {
        throw new CommonException('validation_failed', 'confirm must be the tenant’s current name', {
          issues: [{ path: 'confirm', message: 'does not match the tenant’s current name' }],
        });
      }
      if (row.deletion_requested_at) return false;
      await this.tenants.markDeletionRequested(m, tenantId);
      const counts: Record<string, number> = {};
      for (const p of participants) Object.assign(counts, await p.requested(m, tenantId));
      await this.audit.record(
        {
          tenantId,
          action: 'tenant.deletion_requested',
          outcome: 'allowed',
          actor,
          details: { name: row.name, ...counts },
        },
        m,
      );
      return true;
    });
    // Every process forgets the tenant's current epoch, so its next seal reads that the tenant takes none.
    if (first) await this.tell(tenantId, 'epoch');
    return this.status(tenantId);
  }

  /** Where the tenant's deletion stands (`active` when none was requested); 404 once it has been shredded. */
  async status(tenantId: string): Promise<TenantDeletionView> {
    const row = await this.tenants.get(tenantId);
    if (!row) throw new CommonException('not_found', 'Tenant not found');
    const at = row.deletion_requested_at;
    return {
      id: row.id,
      name: row.name,
      status: statusOf(row),
      deletionRequestedAt: at?.toISOString() ?? null,
      pendingRevocations: at ? await this.outstanding(tenantId) : 0,
      shredBy: at ? new Date(at.getTime() + TENANT_SHRED_GRACE_MS).toISOString() : null,
    };
  }

  /** Step 2 for every tenant due (the worker's job); returns how many were shredded. One failing waits alone. */
  async shredDue(now = new Date()): Promise<number> {
    let shredded = 0;
    for (const t of await this.tenants.deleting(SHRED_BATCH)) {
      try {
        if ((await this.shred(t.id, now)).state === 'shredded') shredded++;
      } catch (err) {
        const e = err as { name?: string; code?: string; message?: string };
        this.log.warn(
          { tenantId: t.id, err: { name: e.name, code: e.code, message: e.message } },
          'could not shred a deleted tenant; will retry',
        );
      }
    }
    return shredded;
  }

  /**
   * Step 2: crypto-shreds a tenant being deleted, once nothing waits on its keys (or the grace period is over),
   * in one transaction (see the file's comment). Safe to run again, and from several workers at once.
   */
  async shred(tenantId: string, now = new Date()): Promise<ShredOutcome> {
    const participants = this.registered();
    const row = await this.tenants.get(tenantId);
    const requestedAt = row?.deletion_requested_at;
    if (!requestedAt) return { state: 'not_deleting' };
    const graceOver = now.getTime() >= requestedAt.getTime() + TENANT_SHRED_GRACE_MS;
    let outstanding = await this.outstanding(tenantId);
    if (outstanding > 0 && !graceOver)
      return { state: 'waiting', reason: 'revocations_pending', outstanding };
    // A write that raced the request (begun before it, committed after) is stopped and queued like the rest.
    await this.db.transaction(async (m) => {
      for (const p of participants) await p.requested(m, tenantId);
    });
    outstanding = await this.outstanding(tenantId);
    if (outstanding > 0 && !graceOver)
      return { state: 'waiting', reason: 'revocations_pending', outstanding };
    let counts: Record<string, number> | null;
    try {
      counts = await this.db.transaction(async (m) => {
        const locked = await this.tenants.lockForDeletion(m, tenantId);
        if (!locked?.deletion_requested_at) return null;
        // First, so the chain stays sealable once the tenant's keys are gone.
        const keys = await this.signingKeys.transferToPlatform(m, chainOf(tenantId), now);
        if (keys.unopenable.length > 0 && !graceOver) throw new ShredPostponed(keys.unopenable.length);
        const c: Record<string, number> = {
          dataKeysDestroyed: await this.dataKeys.countForTenant(m, tenantId),
          signingKeysReprotected: keys.moved.length,
          signingKeysUnopenable: keys.unopenable.length,
        };
        for (const p of participants) Object.assign(c, await p.shredding?.(m, tenantId));
        // The row, and with it every row that names the tenant: data keys, connections, keys, connectors, ….
        await this.tenants.delete(m, tenantId);
        await this.audit.record(
          {
            tenantId: null,
            action: 'tenant.deleted',
            outcome: 'allowed',
            actor: systemActor,
            details: { tenantId, deletionRequestedAt: requestedAt.toISOString(), ...c },
          },
          m,
        );
        return c;
      });
    } catch (err) {
      if (!(err instanceof ShredPostponed)) throw err;
      this.log.warn(
        { tenantId, keys: err.keys },
        'deleted tenant: its key backend does not open its audit signing keys; shredding waits for the grace period',
      );
      return { state: 'waiting', reason: 'signing_keys_unopenable', outstanding: err.keys };
    }
    if (!counts) return { state: 'not_deleting' };
    if (outstanding > 0 || counts.signingKeysUnopenable > 0) {
      this.log.warn({ tenantId, ...counts }, 'deleted tenant shredded after its grace period');
    }
    await this.tell(tenantId, 'keys');
    return { state: 'shredded', counts };
  }

  /** Work waiting on the tenant's keys, over every participant. */
  private async outstanding(tenantId: string): Promise<number> {
    let n = 0;
    for (const p of this.participants.values()) n += (await p.outstanding?.(tenantId)) ?? 0;
    return n;
  }

  /**
   * Tells every process to drop the tenant's cached keys (`keys`) or its current epoch (`epoch`): this process at
   * once, the others through Redis. When Redis does not take it, what they cached ages out
   * (CUSTOS_DATA_KEY_CACHE_TTL_SECONDS; a minute for an epoch); the deletion itself is committed either way.
   */
  private async tell(tenantId: string, scope: 'keys' | 'epoch'): Promise<void> {
    try {
      await this.keyCache.publish(tenantId, scope);
    } catch (err) {
      const e = err as { name?: string; code?: string };
      this.log.warn(
        { tenantId, scope, err: { name: e.name, code: e.code } },
        'deleted tenant: the other processes could not be told to drop its cached keys; they age out',
      );
    }
  }
}
